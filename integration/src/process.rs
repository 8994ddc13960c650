//! Starting and stopping the long-running helper processes (dockerd,
//! registries) so that they never outlive the test process.
//!
//! Two mechanisms work together:
//!
//! 1. **Normal exit.** The first spawn registers an `atexit(3)` handler. When
//!    the test binary exits (libtest calls `exit`), the handler sends SIGTERM
//!    to every child that is still running, waits up to [`EXIT_GRACE`] for
//!    them (dockerd needs about a second to unmount its data root), SIGKILLs
//!    the rest and then deletes this process's temporary directories.
//! 2. **Abnormal death** (SIGKILL, abort, a crash). Every child is forked by
//!    one dedicated thread that never exits, with
//!    `prctl(PR_SET_PDEATHSIG, SIGKILL)`. The kernel delivers the signal when
//!    the forking *thread* dies, which for that thread means only when the
//!    whole test process dies. (Forking from a test thread would kill the
//!    child as soon as that one test finished.) Directories left behind this
//!    way are removed by [`crate::util::sweep_stale_dirs`] the next time a
//!    harness starts.

use std::collections::HashMap;
use std::panic;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::sys;

/// How long the exit handler waits for children after SIGTERM.
const EXIT_GRACE: Duration = Duration::from_secs(15);

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

struct Supervisor {
    requests: mpsc::Sender<SpawnRequest>,
    children: Mutex<HashMap<u32, Child>>,
}

static SUPERVISOR: OnceLock<Supervisor> = OnceLock::new();

fn supervisor() -> &'static Supervisor {
    SUPERVISOR.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("pullauth-it-spawner".into())
            .spawn(move || {
                // The sender lives in a static that is never dropped, so this
                // loop (and with it the thread) only ends with the process.
                for (mut cmd, reply) in rx {
                    sys::kill_child_with_parent(&mut cmd);
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        if let Err(e) = sys::at_exit(on_exit) {
            eprintln!("pullauth-integration: {e}; helpers are only killed by PDEATHSIG");
        }
        Supervisor {
            requests: tx,
            children: Mutex::new(HashMap::new()),
        }
    })
}

fn children() -> MutexGuard<'static, HashMap<u32, Child>> {
    supervisor()
        .children
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Spawns `cmd` from the spawner thread and records it; returns its pid,
/// which is the handle for [`terminate`] and [`exited`].
pub(crate) fn spawn(cmd: Command) -> std::io::Result<u32> {
    let (tx, rx) = mpsc::channel();
    supervisor()
        .requests
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    let child = rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))??;
    let pid = child.id();
    children().insert(pid, child);
    Ok(pid)
}

/// Returns the exit status if the child `pid` has already exited.
pub(crate) fn exited(pid: u32) -> Option<ExitStatus> {
    let mut map = children();
    let child = map.get_mut(&pid)?;
    child.try_wait().ok().flatten()
}

/// The current process of a service the tests stop and start again (a
/// registry, a test-owned dockerd): at most one pid at a time.
#[derive(Debug, Default)]
pub(crate) struct PidSlot(Mutex<Option<u32>>);

impl PidSlot {
    /// A slot holding the running process `pid`.
    pub(crate) fn holding(pid: u32) -> PidSlot {
        PidSlot(Mutex::new(Some(pid)))
    }

    /// Records the service's new process.
    pub(crate) fn set(&self, pid: u32) {
        *self.lock() = Some(pid);
    }

    /// The recorded process, if any.
    pub(crate) fn get(&self) -> Option<u32> {
        *self.lock()
    }

    /// Whether the recorded process is still alive.
    pub(crate) fn is_running(&self) -> bool {
        let pid = *self.lock();
        pid.is_some_and(|pid| exited(pid).is_none())
    }

    /// Terminates the recorded process (see [`terminate`]); a no-op when none is.
    pub(crate) fn stop(&self, grace: Duration) {
        let pid = self.lock().take();
        if let Some(pid) = pid {
            terminate(pid, grace);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<u32>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Stops child `pid`: SIGTERM, wait up to `grace`, then SIGKILL. Reaps it and
/// forgets it. Does nothing for unknown pids.
pub(crate) fn terminate(pid: u32, grace: Duration) {
    let Some(child) = children().remove(&pid) else {
        return;
    };
    stop_all(vec![child], grace);
}

fn stop_all(mut running: Vec<Child>, grace: Duration) {
    running.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    for child in &running {
        let _ = sys::send_signal(child.id(), libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while !running.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        running.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }
    for mut child in running {
        eprintln!(
            "pullauth-integration: pid {} ignored SIGTERM for {grace:?}; killing it",
            child.id()
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

extern "C" fn on_exit() {
    // A panic must not unwind across the C boundary.
    let _ = panic::catch_unwind(|| {
        let all: Vec<Child> = children().drain().map(|(_, c)| c).collect();
        stop_all(all, EXIT_GRACE);
        crate::util::remove_own_dirs();
    });
}
