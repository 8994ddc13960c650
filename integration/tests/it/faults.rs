//! Fault injection: a registry or the engine going away in the middle of a
//! pull, a registry that never answers, a data directory that cannot be
//! written, a damaged state file, and a full disk. Each fault must end in a
//! clear error (right exit status, a message naming what failed) or in a
//! recovery with nothing lost; never in a panic, a hang or a leaked secret.
//!
//! Tests that stop something start their own: a dedicated registry, or a
//! dockerd owned by the test ([`PrivateEngine`]). The shared harness engine
//! and registries are never stopped.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pullauth_integration::Outcome;
use pullauth_integration::agent::{
    AgentSpec, container, docker_auth_config, ecs_config as env_file, random_token, repo_requests,
    scratch_dir, secret_needles, taskdef, wait_for,
};
use pullauth_integration::{
    Harness, PrivateEngine, Registry, Stall, free_port, pullauth_command as pullauth,
};
use serde_json::Value;

/// A command that runs longer than this is a hang, reported as a failure.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
/// Size of the random layer of the images that are interrupted mid-pull.
const LARGE_MB: usize = 64;
/// `errno` for "No space left on device" on Linux.
const ENOSPC: i32 = 28;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A repository name nobody else uses, under `prefix`.
fn fresh_repo(prefix: &str) -> String {
    format!("{prefix}/r{}", random_token(10).to_ascii_lowercase())
}

/// A running process whose output is collected while it runs, so that a
/// test can act when a line appears (e.g. layer progress).
struct Live {
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Live {
    fn spawn(mut cmd: Command) -> Live {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let collect = |mut pipe: Box<dyn Read + Send>, sink: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .extend_from_slice(&buf[..n]);
                }
            })
        };
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(
                Box::new(child.stdout.take().expect("stdout is piped")),
                stdout.clone(),
            ),
            collect(
                Box::new(child.stderr.take().expect("stderr is piped")),
                stderr.clone(),
            ),
        ];
        Live {
            child,
            stdout,
            stderr,
            readers,
            started: Instant::now(),
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(
            &self
                .stderr
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }

    /// Waits until stderr contains `needle`; `false` if the process ended
    /// without printing it.
    fn wait_for_stderr(&mut self, needle: &str) -> bool {
        self.wait_for_stderr_that(needle, |stderr| stderr.contains(needle))
    }

    /// Waits until `seen` holds for stderr (`what` describes it); `false` if
    /// the process ended first.
    fn wait_for_stderr_that(&mut self, what: &str, seen: impl Fn(&str) -> bool) -> bool {
        loop {
            if seen(&self.stderr()) {
                return true;
            }
            if self
                .child
                .try_wait()
                .expect("cannot poll the child")
                .is_some()
            {
                // The readers reach EOF now that the process is gone.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return seen(&self.stderr());
            }
            assert!(
                self.started.elapsed() < RUN_TIMEOUT,
                "no {what} on stderr within {RUN_TIMEOUT:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to end (killing it after [`RUN_TIMEOUT`], which
    /// fails the test) and returns what it printed.
    fn finish(mut self) -> Outcome {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("cannot poll the child") {
                break Some(status);
            }
            if self.started.elapsed() > RUN_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let take = |buf: &Arc<Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(
                &buf.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
            .into_owned()
        };
        let outcome = Outcome {
            code: status.and_then(|s| s.code()),
            stdout: take(&self.stdout),
            stderr: take(&self.stderr),
        };
        assert!(
            status.is_some(),
            "pullauth did not finish within {RUN_TIMEOUT:?} (killed):\n{outcome:?}"
        );
        outcome
    }
}

/// Lines of `text` that mention a retry, whoever retried: pullauth
/// ("attempt N failed (...); retrying in Xs") or the engine's own layer
/// download retry ("Retrying in N seconds").
fn retry_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.to_ascii_lowercase().contains("retrying"))
        .collect()
}

/// Runs `pullauth serve` with `ECS_DATADIR=data_dir`, which must refuse to
/// start; returns what it printed (killed and failed if it keeps running).
fn serve_refusing(data_dir: &Path) -> Outcome {
    let h = Harness::get();
    let dir = scratch_dir("serve-refusing");
    let config = env_file(dir.path(), "");
    let listen = format!("127.0.0.1:{}", free_port());
    let data_dir = data_dir.to_str().expect("UTF-8 path");
    let mut serve = Live::spawn(pullauth(
        "serve",
        h.docker_host(),
        &config,
        &[("ECS_DATADIR", data_dir), ("RUST_BACKTRACE", "1")],
        &["--listen", &listen],
    ));
    // A serve that got past its state would log that it is ready: fail fast.
    let deadline = Instant::now() + Duration::from_secs(60);
    while serve.child.try_wait().expect("poll").is_none() {
        if serve.stderr().contains("pullauth agent ready") || Instant::now() > deadline {
            let _ = serve.child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    serve.finish()
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    /// `mount -t tmpfs -o OPTIONS tmpfs PATH` (PATH must exist); needs root.
    fn mount(path: &Path, options: &str) -> TmpfsMount {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs -o {options} failed (these tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TmpfsMount {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Fills the file system holding `path` by writing `path` until ENOSPC
/// (big chunks first, then smaller ones); returns the bytes written.
fn fill_disk(path: &Path) -> u64 {
    let mut file = fs::File::create(path).expect("cannot create the filler file");
    let mut written = 0u64;
    for chunk in [1 << 16, 4096, 512, 1] {
        let data = vec![0xa5u8; chunk];
        loop {
            match file.write(&data) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) => {
                    assert_eq!(
                        e.raw_os_error(),
                        Some(ENOSPC),
                        "filling the disk failed with something else than ENOSPC: {e}"
                    );
                    break;
                }
            }
        }
    }
    let _ = file.sync_all();
    written
}

/// Pushes a small fixture as `user`; returns (repository, image reference).
fn push_small(registry: &Registry, prefix: &str, user: &str) -> (String, String) {
    let repo = fresh_repo(prefix);
    Harness::get().push_fixture(registry, &repo, "1", (user, registry.password(user)));
    let image = registry.image_ref(&repo, "1");
    (repo, image)
}

/// The container named `name` in a task.
// ---------------------------------------------------------------------------
// A registry or the engine going away mid-pull
// ---------------------------------------------------------------------------

// Proves a pull whose registry stops mid-download, and is back once the pull has noticed (a retry line), retries and finishes (exit 0, image local) as the configured user.
#[test]
fn registry_stopping_mid_pull_is_retried_and_the_pull_finishes() {
    let h = Harness::get();
    let password = format!("rita-{}", random_token(20));
    let registry = Harness::registry_with(&[("rita", &password)]);
    let repo = fresh_repo("midpull");
    let digest = h.push_large_fixture(&registry, &repo, "v1", ("rita", &password), LARGE_MB);
    let image = registry.image_ref(&repo, "v1");
    let dir = scratch_dir("faults");
    let config = env_file(
        dir.path(),
        &docker_auth_config(&[(&registry.addr(), "rita", &password)], &[]),
    );

    let mark = registry.log_mark();
    let started = Instant::now();
    let mut pull = Live::spawn(pullauth(
        "pull",
        h.docker_host(),
        &config,
        &[],
        &["--pull-behavior", "always", &image],
    ));
    assert!(
        pull.wait_for_stderr("Downloading"),
        "the pull ended before any layer progress:\n{}",
        pull.stderr()
    );
    let downloading_after = started.elapsed();
    registry.stop();
    // Down until the pull has noticed (a retry line), however long that takes.
    let noticed = pull.wait_for_stderr_that("retry line", |stderr| !retry_lines(stderr).is_empty());
    registry.restart();
    assert!(
        noticed,
        "the pull ended without a retry while the registry was down:\n{}",
        pull.stderr()
    );
    let out = pull.finish();
    eprintln!(
        "registry stop mid-pull: layer progress after {downloading_after:?}, pull ended after \
         {:?} with {:?}; retry lines: {:#?}",
        started.elapsed(),
        out.code,
        retry_lines(&out.stderr)
    );
    out.assert_code(0)
        .assert_no_panic()
        .assert_no_secret(&secret_needles(&password));
    assert!(
        !retry_lines(&out.stderr).is_empty(),
        "the registry went away mid-pull, so something must have retried:\n{}",
        out.stderr
    );
    // "pulled IMAGE (ID) DIGEST [key "KEY", user "rita"] in Xs"
    let line = out.stdout.trim();
    assert!(line.starts_with(&format!("pulled {image} (")), "{line}");
    assert!(line.contains(&digest), "{line}");
    assert!(line.contains("user \"rita\""), "{line}");
    assert!(h.local_image_id(&image).is_some(), "the image is not local");
    let users = registry.users_since_in(mark, &repo);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "rita"),
        "the registry saw {users:?}"
    );
}

// Proves an engine restart mid-pull ends `pullauth pull` with a clear engine error (or a recovery), and an agent task pulling then ends STOPPED with a clear PullError (or PULLED) while the agent keeps serving and pulls again once the engine is back.
#[test]
fn engine_restarting_mid_pull_fails_clearly_and_the_agent_keeps_serving() {
    let h = Harness::get();
    let engine = PrivateEngine::start();
    let password = format!("eddy-{}", random_token(20));
    let registry = Harness::registry_with(&[("eddy", &password)]);
    let repo = fresh_repo("engine-restart");
    h.push_large_fixture(&registry, &repo, "v1", ("eddy", &password), LARGE_MB);
    let image = registry.image_ref(&repo, "v1");
    let small_repo = fresh_repo("after-restart");
    h.push_fixture(&registry, &small_repo, "1", ("eddy", &password));
    let small = registry.image_ref(&small_repo, "1");
    let dir = scratch_dir("faults");
    let auth = docker_auth_config(&[(&registry.addr(), "eddy", &password)], &[]);
    let config = env_file(dir.path(), &auth);
    let needles = secret_needles(&password);
    let engine_has = |reference: &str| {
        engine
            .docker()
            .args(["image", "inspect", reference])
            .output()
            .is_ok_and(|o| o.status.success())
    };

    // The CLI.
    let mut pull = Live::spawn(pullauth(
        "pull",
        engine.docker_host(),
        &config,
        &[("RUST_BACKTRACE", "1")],
        &["--pull-behavior", "always", &image],
    ));
    assert!(
        pull.wait_for_stderr("Downloading"),
        "the pull ended before any layer progress:\n{}",
        pull.stderr()
    );
    engine.restart();
    let out = pull.finish();
    eprintln!(
        "engine restart mid-pull (CLI): exit {:?}, last line: {}",
        out.code,
        out.last_stderr_line()
    );
    out.assert_no_panic().assert_no_secret(&needles);
    match out.code {
        Some(1) => {
            let last = out.last_stderr_line();
            assert!(
                last.starts_with("pullauth: ")
                    && (last.contains(&format!(
                        "cannot reach the Docker Engine at {}",
                        engine.docker_host()
                    )) || last.contains("the Docker Engine failed")),
                "the error must name the engine address or say the engine failed:\n{}",
                out.stderr
            );
        }
        Some(0) => assert!(engine_has(&image), "exit 0 but the image is missing"),
        other => panic!("unexpected exit {other:?}:\n{}", out.stderr),
    }

    // The agent: a task pulling the same image when the engine restarts.
    if engine_has(&image) {
        let rmi = engine.docker().args(["rmi", "--force", &image]).output();
        assert!(rmi.is_ok_and(|o| o.status.success()));
    }
    let spec = AgentSpec::new()
        .env("DOCKER_HOST", engine.docker_host())
        .env_file_text(&auth);
    let agent = spec.start();
    let mark = registry.log_mark();
    let task = agent.submit(&taskdef("restart", &[("app", &image, true)]));
    let arn = task["Arn"].as_str().expect("Arn").to_string();
    // The engine has started fetching the blobs (config and the big layer).
    wait_for("the engine to start downloading the layer", || {
        let blobs: BTreeSet<String> = repo_requests(&registry, mark, &repo)
            .into_iter()
            .filter(|r| r.method == "GET" && r.uri.contains("/blobs/"))
            .map(|r| r.uri)
            .collect();
        (blobs.len() >= 2).then_some(())
    });
    engine.restart();
    let done = agent.wait_final(&arn);
    let app = container(&done, "app");
    eprintln!(
        "engine restart mid-pull (agent): task {} / container {}, PullError: {}",
        done["KnownStatus"], app["KnownStatus"], app["PullError"]
    );
    match done["KnownStatus"].as_str() {
        Some("STOPPED") => {
            let error = app["PullError"]
                .as_str()
                .expect("a STOPPED container has a PullError");
            assert!(
                error.contains(engine.docker_host()) || error.contains("Docker Engine"),
                "the PullError must name the engine: {error}"
            );
        }
        Some("PULLED") => assert!(engine_has(&image), "PULLED but the image is missing"),
        other => panic!("unexpected task status {other:?}: {done:#}"),
    }
    assert_eq!(agent.get("/healthz").status, 200);

    // The engine is back: the agent pulls through it again.
    let task = agent.submit(&taskdef("after", &[("app", &small, true)]));
    let after = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(after["KnownStatus"], "PULLED", "{after:#}");
    assert!(engine_has(&small));
    assert!(agent.terminate().success());
    let logs = spec.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    for needle in &needles {
        assert!(
            !logs.contains(needle.as_str()),
            "the agent log leaks a secret"
        );
    }
}

// Proves an agent task on a registry that accepts connections and never answers ends STOPPED with a "stalled" PullError after ECS_IMAGE_PULL_INACTIVITY_TIMEOUT=2s, and the agent keeps serving.
#[test]
fn stalled_registry_stops_the_agent_task() {
    let stall = Stall::start();
    let password = format!("sam-{}", random_token(16));
    let spec = AgentSpec::new()
        .env("ECS_IMAGE_PULL_INACTIVITY_TIMEOUT", "2s")
        .env_file_text(&docker_auth_config(
            &[(&stall.addr(), "sam", &password)],
            &[],
        ));
    let agent = spec.start();
    let image = format!("{}/team/app:v1", stall.addr());
    let task = agent.submit(&taskdef("stall", &[("app", &image, true)]));
    let done = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(done["KnownStatus"], "STOPPED", "{done:#}");
    let app = container(&done, "app");
    assert_eq!(app["KnownStatus"], "STOPPED", "{app}");
    let error = app["PullError"].as_str().expect("PullError");
    for needle in [
        &format!("pull of {image} stalled") as &str,
        "no progress for 2s",
        "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT",
    ] {
        assert!(
            error.contains(needle),
            "PullError lacks {needle:?}: {error}"
        );
    }
    assert!(
        stall.connections() >= 1,
        "the engine never reached the stall"
    );
    assert_eq!(
        agent.metric("pullauth_pulls_failed_total{class=\"stalled\"}"),
        1.0
    );
    assert_eq!(agent.get("/healthz").status, 200);
    assert!(agent.terminate().success());
    assert!(!spec.logs().contains(&password));
}

// ---------------------------------------------------------------------------
// ECS_DATADIR and the state file
// ---------------------------------------------------------------------------

// Proves `pullauth serve` refuses (exit 2, message naming ECS_DATADIR and the path, no panic) a data dir under a regular file, a data dir that is a regular file, and a read-only tmpfs.
#[test]
fn unwritable_data_dir_is_a_clear_startup_error() {
    let work = scratch_dir("datadir");
    let file = work.path().join("regular-file");
    fs::write(&file, "not a directory\n").expect("write");

    // (a) Below a regular file: ENOTDIR.
    let below = file.join("state");
    let out = serve_refusing(&below);
    eprintln!("data dir below a file: {}", out.last_stderr_line());
    out.assert_code(2).assert_no_panic().assert_stderr_has(&[
        &format!("ECS_DATADIR {}", below.display()),
        "Not a directory",
    ]);
    assert!(!file.join("state").exists());
    assert_eq!(fs::read(&file).expect("read"), b"not a directory\n");

    // The data dir is itself a regular file.
    let out = serve_refusing(&file);
    eprintln!("data dir is a file: {}", out.last_stderr_line());
    out.assert_code(2)
        .assert_no_panic()
        .assert_stderr_has(&[&format!("ECS_DATADIR {}", file.display())]);
    assert_eq!(fs::read(&file).expect("read"), b"not a directory\n");

    // (b) A read-only tmpfs: EROFS.
    let ro = work.path().join("ro");
    fs::create_dir(&ro).expect("mkdir");
    let mount = TmpfsMount::mount(&ro, "ro,size=1m");
    let out = serve_refusing(&ro);
    eprintln!("read-only data dir: {}", out.last_stderr_line());
    out.assert_code(2).assert_no_panic().assert_stderr_has(&[
        &format!("ECS_DATADIR {}", ro.display()),
        "Read-only file system",
    ]);
    assert_eq!(fs::read_dir(&ro).expect("list").count(), 0);
    drop(mount);
}

/// A state file with one finished task: the agent that wrote it, the
/// task's ARN and final state, and the file's bytes.
struct RecordedState {
    spec: AgentSpec,
    _data: tempfile::TempDir,
    arn: String,
    task: Value,
    bytes: Vec<u8>,
}

impl RecordedState {
    /// Runs an agent with a data dir, lets one task finish, stops it.
    fn create() -> RecordedState {
        let h = Harness::get();
        let alpha = &h.alpha;
        let (_, image) = push_small(alpha, "damaged", "alice");
        let data = scratch_dir("data");
        let spec = AgentSpec::new()
            .data_dir(data.path())
            .env_file_text(&docker_auth_config(
                &[(&alpha.addr(), "alice", alpha.password("alice"))],
                &[],
            ));
        let agent = spec.start();
        let task = agent.submit(&taskdef("keep", &[("app", &image, true)]));
        let arn = task["Arn"].as_str().expect("Arn").to_string();
        let task = agent.wait_final(&arn);
        assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");
        assert!(agent.terminate().success());
        let bytes = fs::read(spec.state_file().expect("data dir")).expect("read state");
        RecordedState {
            spec,
            _data: data,
            arn,
            task,
            bytes,
        }
    }

    fn path(&self) -> PathBuf {
        self.spec.state_file().expect("data dir")
    }

    /// Replaces the state file with `damaged`; `pullauth serve` must exit 2
    /// naming the file, say it was left untouched, and leave it so.
    fn assert_refused(&self, what: &str, damaged: &[u8]) {
        let path = self.path();
        fs::write(&path, damaged).expect("damage the state file");
        let out = serve_refusing(path.parent().expect("data dir"));
        eprintln!(
            "state file {what}: exit {:?}: {}",
            out.code,
            out.last_stderr_line()
        );
        out.assert_code(2)
            .assert_no_panic()
            .assert_stderr_has(&[&format!("state file {}", path.display()), "left untouched"]);
        assert!(
            fs::read(&path).expect("read") == damaged,
            "{what}: the state file changed"
        );
    }

    /// Puts the original bytes back: the agent starts with the task intact.
    fn assert_original_still_opens(&self) {
        fs::write(self.path(), &self.bytes).expect("restore");
        let agent = self.spec.start();
        assert_eq!(agent.task(&self.arn).as_ref(), Some(&self.task));
        assert!(agent.terminate().success());
    }
}

/// `len` bytes from /dev/urandom.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("cannot read /dev/urandom");
    bytes
}

// Proves a state file truncated to a third, or with its header page intact and everything after it garbage, makes `pullauth serve` exit 2 naming the file and saying it was left untouched, bytes unchanged; the intact file still opens with its task.
#[test]
fn truncated_state_file_is_refused_and_left_untouched() {
    let state = RecordedState::create();
    eprintln!("state file with one task: {} bytes", state.bytes.len());
    state.assert_refused(
        "truncated to a third",
        &state.bytes[..state.bytes.len() / 3],
    );
    // A fixed pattern, so that redb always meets the same damage.
    let mut header_kept = state.bytes.clone();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for byte in &mut header_kept[4096..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x.to_le_bytes()[0];
    }
    state.assert_refused("with garbage after its header page", &header_kept);
    state.assert_original_still_opens();
}

// Proves a state file overwritten with random bytes of the same length makes `pullauth serve` exit 2 naming the file and saying it was left untouched, bytes unchanged; the intact file still opens.
#[test]
fn garbage_state_file_is_refused_and_left_untouched() {
    let state = RecordedState::create();
    state.assert_refused(
        "overwritten with random bytes",
        &random_bytes(state.bytes.len()),
    );
    state.assert_original_still_opens();
}

/// An agent whose `ECS_DATADIR` is a 2 MiB tmpfs, with credentials for
/// `registry` (user `dina`).
struct SmallDisk {
    // Field order matters: the agent spec (and the agent the test runs
    // from it) must be gone before the tmpfs is unmounted.
    spec: AgentSpec,
    data: PathBuf,
    _mount: TmpfsMount,
    _work: tempfile::TempDir,
}

impl SmallDisk {
    fn new(registry: &Registry) -> SmallDisk {
        let work = scratch_dir("diskfull");
        let data = work.path().join("data");
        fs::create_dir(&data).expect("mkdir");
        let mount = TmpfsMount::mount(&data, "size=2m");
        let spec = AgentSpec::new()
            .data_dir(&data)
            .env_file_text(&docker_auth_config(
                &[(&registry.addr(), "dina", registry.password("dina"))],
                &[],
            ));
        SmallDisk {
            spec,
            data,
            _mount: mount,
            _work: work,
        }
    }

    fn state_size(&self) -> u64 {
        fs::metadata(self.spec.state_file().expect("data dir")).map_or(0, |m| m.len())
    }

    /// Fills the tmpfs; returns the filler file.
    fn fill(&self) -> PathBuf {
        let filler = self.data.join("filler");
        let written = fill_disk(&filler);
        eprintln!(
            "disk full: filler {written} bytes, state file {} bytes",
            self.state_size()
        );
        filler
    }
}

/// A task definition of 60 containers with long names, all of `image`:
/// a big record, but a single pull.
fn big_taskdef(image: &str) -> String {
    // At most 10 containers per task; long names make each task ~7 KB.
    let names: Vec<String> = (0..10)
        .map(|i| format!("container-{i:03}-{}", "x".repeat(690)))
        .collect();
    let defs: Vec<(&str, &str, bool)> = names.iter().map(|n| (n.as_str(), image, false)).collect();
    taskdef("big", &defs).to_string()
}

/// Submits big tasks until one is refused; returns (accepted, refusal).
fn submit_until_refused(
    agent: &pullauth_integration::agent::AgentClient,
    image: &str,
    disk: &SmallDisk,
) -> (usize, pullauth_integration::agent::Response) {
    let body = big_taskdef(image);
    let mut accepted = 0;
    loop {
        let response = agent.control("POST", "/v1/tasks", body.as_bytes());
        if response.status != 201 {
            return (accepted, response);
        }
        accepted += 1;
        assert!(
            accepted < 50,
            "50 big tasks were recorded on a full disk; state file {} bytes",
            disk.state_size()
        );
    }
}

// Proves a full disk under ECS_DATADIR is survived: the agent keeps serving, answers a submission it cannot record with a 5xx JSON error, logs errors naming the state file (ENOSPC; also for a pull that finishes meanwhile), and after freeing space and a restart the earlier task is intact and the interrupted one is pulled.
#[test]
fn full_disk_refuses_submissions_and_loses_nothing_after_restart() {
    let password = format!("dina-{}", random_token(20));
    let registry = Harness::registry_with(&[("dina", &password)]);
    let (_, first_image) = push_small(&registry, "diskfull", "dina");
    let (_, inflight_image) = push_small(&registry, "diskfull", "dina");
    let (_, later_image) = push_small(&registry, "diskfull", "dina");
    let disk = SmallDisk::new(&registry);
    let spec = &disk.spec;
    let agent = spec.start();
    eprintln!(
        "disk full: state file {} bytes at startup on a 2 MiB tmpfs",
        disk.state_size()
    );

    let task = agent.submit(&taskdef("first", &[("app", &first_image, true)]));
    let first_arn = task["Arn"].as_str().expect("Arn").to_string();
    let first = agent.wait_final(&first_arn);
    assert_eq!(first["KnownStatus"], "PULLED", "{first:#}");

    // A task whose pull is in flight (registry down, retrying) while the
    // disk fills up, and that finishes on the full disk.
    registry.stop();
    let task = agent.submit(&taskdef("inflight", &[("app", &inflight_image, true)]));
    let inflight_arn = task["Arn"].as_str().expect("Arn").to_string();
    agent.wait_metric("pullauth_pull_retries_total", 1.0);
    let filler = disk.fill();

    // Big task definitions until one cannot be recorded (redb has some
    // room inside its file, so small ones may still fit).
    let (accepted, refused) = submit_until_refused(&agent, &later_image, &disk);
    eprintln!(
        "disk full: {accepted} big task(s) accepted, then {} {}",
        refused.status,
        refused.text()
    );
    assert!(
        (500..600).contains(&refused.status),
        "a submission that cannot be recorded must get a 5xx: {} {}",
        refused.status,
        refused.text()
    );
    assert!(
        refused.json()["error"].is_string(),
        "the 5xx has no JSON error: {}",
        refused.text()
    );

    // The in-flight pull now finishes; its result cannot be recorded.
    registry.restart();
    agent.wait_metric("pullauth_pulls_succeeded_total", 2.0);
    wait_for("the agent to log that it could not record the pull", || {
        spec.logs()
            .contains("could not record container state")
            .then_some(())
    });
    let seen = agent.task(&inflight_arn).map(|t| t["KnownStatus"].clone());
    eprintln!("disk full: the in-flight task now reads as {seen:?}");

    // Still serving, reporting itself degraded; the log says why.
    let health = agent.get("/healthz");
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "degraded", "{}", health.text());
    let listing = agent.get("/v1/tasks");
    eprintln!("disk full: GET /v1/tasks -> {}", listing.status);
    wait_for("the agent to log the refused submission", || {
        spec.logs().contains("recording a task").then_some(())
    });
    let logs = spec.logs();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("level=error")).collect();
    eprintln!("disk full: error lines: {errors:#?}");
    let state = spec.state_file().expect("data dir").display().to_string();
    assert!(
        errors.iter().any(|l| l.contains("recording a task")
            && l.contains(&state)
            && l.contains("No space left on device")),
        "no error line for the refused task naming the state file and ENOSPC:\n{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|l| l.contains("could not record container state") && l.contains(&state)),
        "no error line for the unrecorded pull naming the state file:\n{errors:#?}"
    );

    // Space again: the running agent reopens its state file and records
    // again, then a restart.
    fs::remove_file(&filler).expect("remove the filler");
    let again = agent.control("POST", "/v1/tasks", big_taskdef(&later_image).as_bytes());
    assert_eq!(again.status, 201, "after freeing space: {}", again.text());
    assert_eq!(agent.get("/healthz").status, 200);
    let status = agent.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(!spec.logs().contains("panicked"), "{}", spec.log_tail(30));

    let agent = spec.start();
    assert_eq!(
        agent.task(&first_arn),
        Some(first),
        "the first task changed"
    );
    let inflight = agent.wait_final(&inflight_arn);
    assert_eq!(inflight["KnownStatus"], "PULLED", "{inflight:#}");
    assert_eq!(container(&inflight, "app")["Username"], "dina");
    let task = agent.submit(&taskdef("later", &[("app", &later_image, true)]));
    let later = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(later["KnownStatus"], "PULLED", "{later:#}");
    assert!(agent.terminate().success());
    let logs = spec.logs();
    assert!(
        !logs.contains(&password),
        "the agent log leaks the password"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

// Proves that once a full disk has space again, the running agent accepts a submission (201) and pulls that task to PULLED.
#[test]
fn full_disk_agent_recovers_once_space_is_freed() {
    let password = format!("dina-{}", random_token(20));
    let registry = Harness::registry_with(&[("dina", &password)]);
    let (_, image) = push_small(&registry, "diskfree", "dina");
    let disk = SmallDisk::new(&registry);
    let agent = disk.spec.start();
    let task = agent.submit(&taskdef("first", &[("app", &image, true)]));
    agent.wait_final(task["Arn"].as_str().expect("Arn"));
    let filler = disk.fill();
    let (_, refused) = submit_until_refused(&agent, &image, &disk);
    assert_eq!(refused.status, 500, "{}", refused.text());
    fs::remove_file(&filler).expect("remove the filler");

    // Recovering means accepting tasks again: a degraded /healthz alone is
    // not enough, and neither is a 201 whose task then never finishes.
    let body = taskdef("again", &[("app", &image, true)]).to_string();
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let accepted = loop {
        let response = agent.control("POST", "/v1/tasks", body.as_bytes());
        if response.status == 201 {
            break response.json();
        }
        last = format!("{} {}", response.status, response.text());
        assert!(
            Instant::now() < deadline,
            "20 s after space was freed the agent still refuses every task (last: {last}; \
             /healthz {}); log:\n{}",
            agent.get("/healthz").status,
            disk.spec.log_tail(5)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("disk freed: accepted again (last refusal: {last:?})");
    let task = agent.wait_final(accepted["Arn"].as_str().expect("Arn"));
    assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");
    assert_eq!(agent.get("/healthz").status, 200, "healthy again");
}
