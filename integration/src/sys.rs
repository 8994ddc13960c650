//! The only place in this crate that calls into libc directly.
//!
//! Each function is a thin wrapper around one system call that std does not
//! expose, so `unsafe` is allowed on exactly these four functions.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child started by `cmd` receive SIGKILL when the *thread* that
/// forked it exits (`PR_SET_PDEATHSIG`), and refuse to start if that thread's
/// process is already gone by the time the child runs.
#[allow(unsafe_code)]
pub(crate) fn kill_child_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // two async-signal-safe system calls (prctl, getppid). It allocates
    // nothing, takes no locks and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nobody
            // would ever send the death signal, so give up now.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
}

/// Registers `f` to run when the process exits normally (`exit(3)`), which is
/// how a test binary ends; Rust never drops statics, so this is the only hook.
#[allow(unsafe_code)]
pub(crate) fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `f` is a plain `extern "C" fn()` with static lifetime, which is
    // exactly what atexit(3) expects; the callers catch every panic inside it.
    let rc = unsafe { libc::atexit(f) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::other("atexit registration failed"))
    }
}

/// Sends `signal` to the process `pid` (used for a graceful SIGTERM, and
/// SIGSTOP/SIGCONT to hold a registry; std only offers SIGKILL through
/// `Child::kill`).
#[allow(unsafe_code)]
pub(crate) fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and has no memory-safety
    // preconditions. Callers only pass pids of children they have not reaped
    // yet, so the pid cannot have been reused by an unrelated process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises this process's soft limit on open file descriptors to its hard
/// limit, for tests that open thousands of connections; returns the soft
/// limit in effect afterwards.
#[allow(unsafe_code)]
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one `rlimit` into the valid, exclusively
    // borrowed struct it is given, and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // An unlimited hard limit still stops at fs.nr_open (2^20 by default).
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur >= target {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit(2) only reads the valid struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(raised.rlim_cur)
}
