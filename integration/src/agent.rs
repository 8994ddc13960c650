//! Running the agent under test (`pullauth serve`) and talking to it.
//!
//! [`AgentSpec`] describes one agent: its environment, `--env-file`,
//! optional `ECS_DATADIR` and extra arguments. Every [`AgentSpec::start`]
//! starts a fresh process from it (so a test can stop an agent and start it
//! again on the same state), appending its stdout and stderr to two files
//! that [`AgentSpec::logs`] returns. Agents are spawned like the harness's
//! own helpers, so they die with the test process; a [`RunningAgent`] that
//! is dropped is stopped with SIGTERM.
//!
//! The clients here are deliberately tiny: HTTP/1.1 with `Connection:
//! close` over TCP (introspection) or the Unix control socket, and a parser
//! for the registry's JSON log that groups lines by request.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use base64::Engine as _;

use crate::{Harness, Registry, Spawned, http, process, sys, util};

/// How long an agent may take to log "pullauth agent ready".
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline for waiting on task states and metrics.
pub const WAIT: Duration = Duration::from_secs(60);
/// How many fresh ports to try when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;
/// What `pullauth serve` logs once it listens.
pub const READY_MESSAGE: &str = "pullauth agent ready";

/// A temporary directory removed when the test process exits (or by the
/// next harness after a crash), for data dirs, env files and task files.
pub fn scratch_dir(purpose: &str) -> TempDir {
    util::temp_dir(purpose)
}

/// A random string of ASCII letters and digits, for unique names.
pub fn random_token(len: usize) -> String {
    util::random_token(len)
}

/// Standard base64 with padding.
pub fn base64_standard(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// URL-safe base64 with padding (what the engine expects in X-Registry-Auth).
pub fn base64_url_safe(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(data)
}

/// Every run of base64 characters that must appear wherever `secret` is
/// embedded in a larger base64 text, whatever its byte offset there: for
/// each of the three alignments, the characters of the groups made only of
/// secret bytes, in both the standard and the URL-safe alphabet.
pub fn base64_fragments(secret: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for shift in 0..3usize {
        let mut padded = vec![b'\0'; shift];
        padded.extend_from_slice(secret);
        let encoded = base64_standard(&padded);
        // Group i covers bytes 3i..3i+3; keep groups inside the secret.
        let first = shift.div_ceil(3);
        let last = (shift + secret.len()) / 3; // exclusive
        if last <= first {
            continue;
        }
        let run = encoded[first * 4..last * 4].to_string();
        out.push(base64_url_safe_text(&run));
        out.push(run);
    }
    out.sort();
    out.dedup();
    out
}

/// `secret` itself and every base64 run that would carry it (see
/// [`base64_fragments`]), for scanning output for leaks.
pub fn secret_needles(secret: &str) -> Vec<String> {
    let mut needles = vec![secret.to_string()];
    needles.extend(base64_fragments(secret.as_bytes()));
    needles
}

/// Writes `text` as `dir/ecs.config` and returns its path.
pub fn ecs_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("ecs.config");
    fs::write(&path, text).expect("cannot write ecs.config");
    path
}

fn base64_url_safe_text(standard: &str) -> String {
    standard.replace('+', "-").replace('/', "_")
}

/// Percent-encodes everything except ASCII letters and digits.
pub fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub use crate::http::Response;

/// `method path` over plain HTTP to `addr` (`127.0.0.1:PORT`).
pub fn http_tcp(addr: &str, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
    http::request(
        http::Target::Tcp(addr),
        method,
        path,
        &[],
        body,
        http::REQUEST_TIMEOUT,
    )
}

/// `method path` over HTTP on the Unix socket `socket`.
pub fn http_unix(socket: &Path, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
    http::request(
        http::Target::Unix(socket),
        method,
        path,
        &[],
        body,
        http::REQUEST_TIMEOUT,
    )
}

/// Reads one sample from Prometheus text: the value of the line whose
/// name-and-labels part is exactly `series` (e.g. `pullauth_pulls_started_total`
/// or `pullauth_pulls_failed_total{class="auth"}`).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series)
                .then(|| value.trim().parse().ok())
                .flatten()
        })
}

/// The `ECS_ENGINE_AUTH_DATA` JSON for `ECS_ENGINE_AUTH_TYPE=docker`:
/// `{"key": {"username": .., "password": ..}}` for each `(key, user, password)`.
pub fn docker_auth_data(entries: &[(&str, &str, &str)]) -> String {
    let mut map = serde_json::Map::new();
    for (key, user, password) in entries {
        map.insert(
            (*key).to_string(),
            serde_json::json!({ "username": user, "password": password }),
        );
    }
    Value::Object(map).to_string()
}

/// An env file (ecs.config) with `ECS_ENGINE_AUTH_TYPE=docker` and the given
/// credentials, plus `extra` lines.
pub fn docker_auth_config(entries: &[(&str, &str, &str)], extra: &[(&str, &str)]) -> String {
    let mut text = format!(
        "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={}\n",
        docker_auth_data(entries)
    );
    for (k, v) in extra {
        text.push_str(&format!("{k}={v}\n"));
    }
    text
}

/// A task definition with one container per `(name, image, essential)`.
pub fn taskdef(family: &str, containers: &[(&str, &str, bool)]) -> Value {
    let defs: Vec<Value> = containers
        .iter()
        .map(|(name, image, essential)| {
            serde_json::json!({ "name": name, "image": image, "essential": essential })
        })
        .collect();
    serde_json::json!({ "family": family, "containerDefinitions": defs })
}

/// What one agent looks like; start it (again) with [`AgentSpec::start`].
#[derive(Debug)]
pub struct AgentSpec {
    dir: TempDir,
    env: Vec<(String, String)>,
    env_file: PathBuf,
    data_dir: Option<PathBuf>,
    /// `ECS_DATADIR` is a line of the env file, not a process variable.
    data_dir_in_env_file: bool,
    args: Vec<String>,
    /// The binary to run; the debug build when `None`.
    binary: Option<PathBuf>,
    /// Whether `--env-file` is passed (see [`AgentSpec::no_env_file`]).
    pass_env_file: bool,
}

impl Default for AgentSpec {
    fn default() -> Self {
        AgentSpec::new()
    }
}

impl AgentSpec {
    /// An agent with an empty env file, no `ECS_DATADIR` and a control
    /// socket in its own temp dir; `DOCKER_HOST` is the harness engine.
    pub fn new() -> AgentSpec {
        let dir = util::temp_dir("agent");
        let env_file = dir.path().join("ecs.config");
        fs::write(&env_file, "").expect("cannot write ecs.config");
        AgentSpec {
            dir,
            env: Vec::new(),
            env_file,
            data_dir: None,
            data_dir_in_env_file: false,
            args: Vec::new(),
            binary: None,
            pass_env_file: true,
        }
    }

    /// Runs `binary` (e.g. [`crate::static_pullauth_bin`]) instead of the
    /// debug build.
    pub fn binary(mut self, binary: &Path) -> AgentSpec {
        self.binary = Some(binary.to_path_buf());
        self
    }

    /// Starts the agent without `--env-file`: its configuration then comes
    /// only from [`AgentSpec::env`] (add other `--env-file` forms with
    /// [`AgentSpec::arg`]).
    pub fn no_env_file(mut self) -> AgentSpec {
        self.pass_env_file = false;
        self
    }

    /// Sets a process environment variable for the agent.
    pub fn env(mut self, key: &str, value: &str) -> AgentSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Replaces the env file's contents (before start, or before SIGHUP).
    pub fn write_env_file(&self, text: &str) {
        fs::write(&self.env_file, text).expect("cannot write ecs.config");
    }

    /// Builder form of [`AgentSpec::write_env_file`].
    pub fn env_file_text(self, text: &str) -> AgentSpec {
        self.write_env_file(text);
        self
    }

    /// Keeps state in `dir` (`ECS_DATADIR`); the control socket is then the
    /// default `$ECS_DATADIR/pullauth.sock`.
    pub fn data_dir(mut self, dir: &Path) -> AgentSpec {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Like [`AgentSpec::data_dir`], but `ECS_DATADIR` is appended to the env
    /// file (as in a real ecs.config) instead of set in the agent's
    /// environment. A later [`AgentSpec::write_env_file`] drops the line.
    pub fn data_dir_in_env_file(mut self, dir: &Path) -> AgentSpec {
        let mut text = fs::read_to_string(&self.env_file).expect("cannot read ecs.config");
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("ECS_DATADIR={}\n", dir.display()));
        self.write_env_file(&text);
        self.data_dir = Some(dir.to_path_buf());
        self.data_dir_in_env_file = true;
        self
    }

    /// An extra `pullauth serve` argument.
    pub fn arg(mut self, arg: &str) -> AgentSpec {
        self.args.push(arg.to_string());
        self
    }

    /// The env file passed with `--env-file`.
    pub fn env_file(&self) -> &Path {
        &self.env_file
    }

    /// This agent's scratch directory (logs, env file, control socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The control socket the agent uses.
    pub fn control_socket(&self) -> PathBuf {
        match &self.data_dir {
            Some(dir) => dir.join("pullauth.sock"),
            None => self.dir.path().join("control.sock"),
        }
    }

    /// The state file when `ECS_DATADIR` is set.
    pub fn state_file(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("pullauth.db"))
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Everything every start of this agent wrote, stdout then stderr.
    pub fn logs(&self) -> String {
        let mut text = fs::read_to_string(self.stdout_path()).unwrap_or_default();
        text.push_str(&fs::read_to_string(self.stderr_path()).unwrap_or_default());
        text
    }

    /// Raw bytes of everything the agent printed (for secret scans).
    pub fn log_bytes(&self) -> Vec<u8> {
        let mut bytes = fs::read(self.stdout_path()).unwrap_or_default();
        bytes.extend(fs::read(self.stderr_path()).unwrap_or_default());
        bytes
    }

    /// The last `lines` lines of stderr, for panic messages.
    pub fn log_tail(&self, lines: usize) -> String {
        util::log_tail(&self.stderr_path(), lines)
    }

    /// A `pullauth task run --control-socket <socket>` command (add the
    /// remaining arguments), with a clean environment.
    pub fn task_run(&self) -> Command {
        let mut cmd = Command::new(crate::pullauth_bin());
        cmd.env_clear()
            .env("PATH", util::daemon_path())
            .args(["task", "run", "--control-socket"])
            .arg(self.control_socket())
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `pullauth serve` and waits until it logs that it is ready and
    /// answers `/healthz`. Panics with the log if it does not.
    pub fn start(&self) -> RunningAgent {
        self.start_with(|_| {})
    }

    /// [`AgentSpec::start`], calling `while_starting` once the process runs,
    /// before waiting for it to be ready (to signal it during its start, say).
    /// Should that process find its port taken, this panics (the next one
    /// would start without `while_starting`).
    pub fn start_with(&self, while_starting: impl FnOnce(&Spawned)) -> RunningAgent {
        let mut while_starting = Some(while_starting);
        // Whether `while_starting` has run (on a process that then failed).
        let mut started_with = false;
        let bin = self.binary.clone().unwrap_or_else(crate::pullauth_bin);
        let docker_host = Harness::get().docker_host().to_string();
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let listen = format!("127.0.0.1:{}", util::free_port());
            let log_start = fs::metadata(self.stderr_path()).map_or(0, |m| m.len());
            let open = |path: PathBuf| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("cannot open agent log")
            };
            let mut cmd = Command::new(&bin);
            cmd.env_clear()
                .env("PATH", util::daemon_path())
                .env("DOCKER_HOST", &docker_host)
                .env("RUST_BACKTRACE", "1");
            if let Some(dir) = &self.data_dir
                && !self.data_dir_in_env_file
            {
                cmd.env("ECS_DATADIR", dir);
            }
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            cmd.arg("serve");
            if self.pass_env_file {
                cmd.arg("--env-file").arg(&self.env_file);
            }
            cmd.args(["--listen", &listen]);
            if self.data_dir.is_none() {
                cmd.arg("--control-socket").arg(self.control_socket());
            }
            cmd.args(&self.args)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(open(self.stdout_path()))
                .stderr(open(self.stderr_path()));
            let pid =
                process::spawn(cmd).unwrap_or_else(|e| panic!("cannot start pullauth serve: {e}"));
            let started = Instant::now();
            if let Some(while_starting) = while_starting.take() {
                started_with = true;
                // A panic in it must not leave the agent running.
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    while_starting(&Spawned { pid });
                })) {
                    process::terminate(pid, Duration::ZERO);
                    std::panic::resume_unwind(panic);
                }
            }
            loop {
                let new_log = self.stderr_since(log_start);
                if let Some(status) = process::exited(pid) {
                    process::terminate(pid, Duration::ZERO);
                    if new_log.contains("cannot listen") {
                        assert!(
                            !started_with,
                            "pullauth serve's port was taken after while_starting ran; the \
                             next try would start without it:\n{new_log}"
                        );
                        last_log = new_log;
                        break;
                    }
                    panic!("pullauth serve exited early ({status}):\n{new_log}");
                }
                if new_log.contains(READY_MESSAGE)
                    && util::http_get_status(&listen, "/healthz", None).is_ok_and(|s| s == 200)
                {
                    return RunningAgent {
                        pid,
                        client: AgentClient::new(&listen, &self.control_socket()),
                        stopped: false,
                    };
                }
                if started.elapsed() > START_TIMEOUT {
                    process::terminate(pid, Duration::from_secs(5));
                    panic!("pullauth serve was not ready within {START_TIMEOUT:?}:\n{new_log}");
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        panic!("pullauth serve found no free port in {PORT_ATTEMPTS} attempts:\n{last_log}");
    }

    fn stderr_since(&self, offset: u64) -> String {
        let bytes = fs::read(self.stderr_path()).unwrap_or_default();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

/// A client for one agent's two APIs: introspection over TCP and control
/// over the Unix socket. It records every response it receives.
#[derive(Debug)]
pub struct AgentClient {
    listen: String,
    control_socket: PathBuf,
    /// Every response (head and body) received, for secret scans.
    transcript: Mutex<Vec<u8>>,
}

impl AgentClient {
    /// A client for an agent listening on `listen` with `control_socket`
    /// (e.g. one running in a container).
    pub fn new(listen: &str, control_socket: &Path) -> AgentClient {
        AgentClient {
            listen: listen.to_string(),
            control_socket: control_socket.to_path_buf(),
            transcript: Mutex::new(Vec::new()),
        }
    }

    /// The introspection address, `127.0.0.1:PORT`.
    pub fn listen(&self) -> &str {
        &self.listen
    }

    /// The control socket.
    pub fn control_socket(&self) -> &Path {
        &self.control_socket
    }

    fn record(&self, response: &Response) {
        for (name, value) in &response.headers {
            self.add_to_transcript(format!("{name}: {value}\n").as_bytes());
        }
        self.add_to_transcript(&response.body);
        self.add_to_transcript(b"\n");
    }

    /// Every response (head and body) received through this client.
    pub fn transcript(&self) -> Vec<u8> {
        self.transcript
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adds bytes obtained elsewhere (e.g. `task run` output) to the transcript.
    pub fn add_to_transcript(&self, bytes: &[u8]) {
        self.transcript
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
    }

    /// `GET path` on the introspection address.
    pub fn get(&self, path: &str) -> Response {
        self.tcp("GET", path, b"")
    }

    /// Any request on the introspection address.
    pub fn tcp(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let response = http_tcp(&self.listen, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path} on {} failed: {e}", self.listen));
        self.record(&response);
        response
    }

    /// `GET path` on the introspection address, asserting 200 and JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let response = self.get(path);
        assert_eq!(
            response.status,
            200,
            "GET {path}: {}\n{}",
            response.status,
            response.text()
        );
        response.json()
    }

    /// A request on the control socket.
    pub fn control(&self, method: &str, path: &str, body: &[u8]) -> Response {
        let response = http_unix(&self.control_socket, method, path, body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} on {} failed: {e}",
                self.control_socket.display()
            )
        });
        self.record(&response);
        response
    }

    /// Submits a task definition on the control socket; asserts 201 and
    /// returns the task.
    pub fn submit(&self, taskdef: &Value) -> Value {
        let response = self.control("POST", "/v1/tasks", taskdef.to_string().as_bytes());
        assert_eq!(
            response.status,
            201,
            "POST /v1/tasks: {}\n{}",
            response.status,
            response.text()
        );
        response.json()
    }

    /// The task `arn` from `/v1/tasks?taskarn=`, `None` on 404.
    pub fn task(&self, arn: &str) -> Option<Value> {
        let response = self.get(&format!("/v1/tasks?taskarn={}", percent_encode(arn)));
        match response.status {
            200 => Some(response.json()),
            404 => None,
            other => panic!("GET task {arn}: {other}\n{}", response.text()),
        }
    }

    /// Every task from `/v1/tasks`.
    pub fn tasks(&self) -> Vec<Value> {
        self.get_json("/v1/tasks")["Tasks"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("/v1/tasks has no Tasks array"))
    }

    /// Polls the task until `done(task)` holds; panics after `WAIT`.
    pub fn wait_task_until(&self, arn: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let task = self.task(arn);
            if let Some(task) = &task
                && done(task)
            {
                return task.clone();
            }
            assert!(
                started.elapsed() < WAIT,
                "task {arn} did not become {what} within {WAIT:?}; last seen: {task:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the task's KnownStatus is `PULLED` or `STOPPED` and
    /// returns it.
    pub fn wait_final(&self, arn: &str) -> Value {
        self.wait_task_until(arn, "PULLED or STOPPED", |t| {
            matches!(t["KnownStatus"].as_str(), Some("PULLED" | "STOPPED"))
        })
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
        response.text()
    }

    /// One sample from `/metrics` (0 when the series is absent, as for a
    /// labelled counter that was never incremented).
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series).unwrap_or(0.0)
    }

    /// Polls `/metrics` until `series` reaches at least `value`.
    pub fn wait_metric(&self, series: &str, value: f64) -> f64 {
        let started = Instant::now();
        loop {
            let now = self.metric(series);
            if now >= value {
                return now;
            }
            assert!(
                started.elapsed() < WAIT,
                "{series} stayed at {now} (< {value}) for {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running `pullauth serve`, with a client for its APIs (through
/// `Deref`). Stopped with SIGTERM when dropped.
#[derive(Debug)]
pub struct RunningAgent {
    pid: u32,
    client: AgentClient,
    stopped: bool,
}

impl std::ops::Deref for RunningAgent {
    type Target = AgentClient;
    fn deref(&self) -> &AgentClient {
        &self.client
    }
}

impl RunningAgent {
    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGHUP (reload).
    pub fn sighup(&self) {
        sys::send_signal(self.pid, libc::SIGHUP).expect("cannot send SIGHUP");
    }

    /// Sends SIGTERM and waits (up to `WAIT`) for the agent to exit; returns
    /// its exit status. Panics if it does not exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.stopped = true;
        sys::send_signal(self.pid, libc::SIGTERM).expect("cannot send SIGTERM");
        let started = Instant::now();
        loop {
            if let Some(status) = process::exited(self.pid) {
                process::terminate(self.pid, Duration::ZERO);
                return status;
            }
            if started.elapsed() > WAIT {
                process::terminate(self.pid, Duration::ZERO);
                panic!("pullauth serve ignored SIGTERM for {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL, as a crash or `kill -9`; waits until the process is gone.
    pub fn kill9(mut self) {
        self.stopped = true;
        sys::send_signal(self.pid, libc::SIGKILL).expect("cannot send SIGKILL");
        // Reaps it (the SIGTERM this also sends goes to a dying process).
        process::terminate(self.pid, Duration::from_secs(10));
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if !self.stopped {
            process::terminate(self.pid, Duration::from_secs(10));
        }
    }
}

/// One HTTP request as the registry logged it (lines grouped by request id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryRequest {
    pub id: String,
    pub method: String,
    pub uri: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
}

/// The requests `registry` logged after `mark` (see [`Registry::log_mark`]),
/// in the order they first appear; requests that started before the mark
/// are left out.
pub fn registry_requests(registry: &Registry, mark: usize) -> Vec<RegistryRequest> {
    // log_mark waits until the log stops growing and tells how far it goes.
    let end = registry.log_mark();
    let text = fs::read(registry.log_path()).unwrap_or_default();
    let end = end.min(text.len());
    let mark = mark.min(end);
    let mut before = std::collections::HashSet::new();
    for line in text[..mark].split(|b| *b == b'\n') {
        if let Ok(Value::Object(entry)) = serde_json::from_slice(line)
            && let Some(id) = entry.get("http.request.id").and_then(Value::as_str)
        {
            before.insert(id.to_string());
        }
    }
    let mut requests: Vec<RegistryRequest> = Vec::new();
    for line in text[mark..end].split(|b| *b == b'\n') {
        let Ok(Value::Object(entry)) = serde_json::from_slice(line) else {
            continue;
        };
        let Some(id) = entry.get("http.request.id").and_then(Value::as_str) else {
            continue;
        };
        if before.contains(id) {
            continue;
        }
        let index = match requests.iter().position(|r| r.id == id) {
            Some(i) => i,
            None => {
                requests.push(RegistryRequest {
                    id: id.to_string(),
                    ..RegistryRequest::default()
                });
                requests.len() - 1
            }
        };
        let request = &mut requests[index];
        let field = |name: &str| entry.get(name).and_then(Value::as_str).map(String::from);
        if let Some(m) = field("http.request.method") {
            request.method = m;
        }
        if let Some(u) = field("http.request.uri") {
            request.uri = u;
        }
        if let Some(u) = field("auth.user.name") {
            request.user = Some(u);
        }
    }
    requests
}

/// The requests after `mark` on repository `repo` (`/v2/<repo>/...`).
pub fn repo_requests(registry: &Registry, mark: usize, repo: &str) -> Vec<RegistryRequest> {
    let prefix = format!("/v2/{repo}/");
    registry_requests(registry, mark)
        .into_iter()
        .filter(|r| r.uri.starts_with(&prefix))
        .collect()
}

/// The container called `name` in `task` (as `/v1/tasks` shows it);
/// panics, showing the task, when it has none.
pub fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["Containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["Name"] == name))
        .unwrap_or_else(|| panic!("task has no container {name}: {task:#}"))
}

/// Panics when `haystack` holds `secret` in any form [`secret_needles`]
/// finds (as written, in any base64 alignment, JSON-escaped).
pub fn assert_no_secret(what: &str, haystack: &[u8], secret: &str) {
    for needle in secret_needles(secret) {
        assert!(
            !haystack
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "{what} holds a secret (as {needle:?})"
        );
    }
}

/// The agent's container image for the container tests: the statically
/// linked binary on an empty base, holding what the repository
/// Dockerfile's final stage copies and configured by its own `ENV`,
/// `ENTRYPOINT` and `CMD` lines. Removed when dropped.
#[derive(Debug)]
pub struct AgentImage {
    pub tag: String,
    /// The image's default arguments (`Config.Cmd`), to which the tests
    /// append `--listen`: arguments after the image replace `CMD`, and with
    /// host networking every agent needs its own port.
    pub cmd: Vec<String>,
}

impl Drop for AgentImage {
    fn drop(&mut self) {
        Harness::get().remove_local(&self.tag);
    }
}

/// The final stage of the repository's Dockerfile (after its last `FROM`).
fn dockerfile_final_stage() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.rsplit_once("\nFROM ")
        .map_or(text.as_str(), |(_, stage)| stage)
        .to_string()
}

/// The instructions of the final stage of the repository's Dockerfile that
/// `docker import --change` can apply (`ENV ECS_DATADIR`, `VOLUME`,
/// `EXPOSE`, `ENTRYPOINT`, `CMD`), so the test image is configured as the
/// real one is.
pub fn dockerfile_image_config() -> Vec<String> {
    let changes: Vec<String> = dockerfile_final_stage()
        .lines()
        .filter(|l| {
            ["ENV ", "VOLUME ", "EXPOSE ", "ENTRYPOINT ", "CMD "]
                .iter()
                .any(|i| l.starts_with(i))
        })
        .map(String::from)
        .collect();
    for required in ["ENTRYPOINT ", "CMD "] {
        assert!(
            changes.iter().any(|c| c.starts_with(required)),
            "the Dockerfile's final stage has no {required}line"
        );
    }
    changes
}

/// The files the Dockerfile's final stage copies from the build stage
/// (`COPY --from=build SOURCE DEST`), as `(SOURCE, DEST)`.
pub fn dockerfile_copies() -> Vec<(String, String)> {
    dockerfile_final_stage()
        .lines()
        .filter_map(|l| l.strip_prefix("COPY --from=build "))
        .map(|rest| {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            match parts.as_slice() {
                [source, dest] => ((*source).to_string(), (*dest).to_string()),
                _ => panic!("Dockerfile: expected `COPY --from=build SOURCE DEST`, got {rest:?}"),
            }
        })
        .collect()
}

/// Builds the agent image: `docker import` of a rootfs holding /tmp and
/// every file the Dockerfile's final stage copies (the build stage's
/// `/pullauth` is [`crate::static_pullauth_bin`]; anything else, such as Debian's
/// CA bundle, is this Debian host's file at the same path), configured by
/// [`dockerfile_image_config`].
pub fn agent_image() -> AgentImage {
    let h = Harness::get();
    let (bin, build_time) = crate::static_pullauth_bin();
    assert!(
        crate::bin::is_static(&bin),
        "{} is not statically linked (ldd), so it cannot run FROM scratch",
        bin.display()
    );

    let work = scratch_dir("image");
    let rootfs = work.path().join("rootfs");
    fs::create_dir_all(rootfs.join("tmp")).expect("mkdir rootfs/tmp");
    let copies = dockerfile_copies();
    assert!(
        copies.iter().any(|(source, _)| source == "/pullauth"),
        "the Dockerfile's final stage does not copy /pullauth: {copies:?}"
    );
    for (source, dest) in &copies {
        let from = if source == "/pullauth" {
            bin.clone()
        } else {
            PathBuf::from(source)
        };
        assert!(
            from.is_file(),
            "the Dockerfile copies {source} from its build stage (Debian); this host has no such \
             file to mirror it (for /etc/ssl/certs/ca-certificates.crt: apt-get install ca-certificates)"
        );
        let to = rootfs.join(dest.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        fs::copy(&from, &to)
            .unwrap_or_else(|e| panic!("copy {} to the rootfs: {e}", from.display()));
    }
    let tarball = work.path().join("rootfs.tar");
    util::tar_dir(&rootfs, &tarball);
    let tag = format!(
        "pullauth-it/agent:{}",
        random_token(10).to_ascii_lowercase()
    );
    let mut import = h.docker();
    import.arg("import");
    for change in dockerfile_image_config() {
        import.arg("--change").arg(change);
    }
    util::run_ok(import.arg(&tarball).arg(&tag), b"");
    let inspected = util::run_ok(
        h.docker().args([
            "image",
            "inspect",
            "--format",
            "{{json .Config.Cmd}}\t{{.Size}}",
            &tag,
        ]),
        b"",
    );
    let (cmd_json, size) = inspected
        .trim()
        .split_once('\t')
        .unwrap_or_else(|| panic!("docker image inspect {tag}: {inspected}"));
    let image = AgentImage {
        tag: tag.clone(),
        cmd: serde_json::from_str(cmd_json)
            .unwrap_or_else(|e| panic!("Config.Cmd of {tag} is not a JSON list ({e}): {cmd_json}")),
    };
    eprintln!(
        "container image {tag}: {size} bytes (binary {} bytes; static build step took \
         {build_time:?}); CMD {:?}; files {:?}",
        fs::metadata(&bin).map_or(0, |m| m.len()),
        image.cmd,
        copies.iter().map(|(_, dest)| dest).collect::<Vec<_>>()
    );
    image
}

/// Removes a container when dropped (`docker rm -f`).
#[derive(Debug)]
pub struct ContainerGuard {
    pub name: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = util::run(
            Harness::get()
                .docker()
                .args(["rm", "--force", "--volumes", &self.name]),
            b"",
        );
    }
}

/// Waits until `probe` returns `Some`, polling every 50 ms; panics with
/// `what` after `WAIT`.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_find_a_secret_inside_any_base64() {
        let secret = b"hunter2-secret";
        let fragments = base64_fragments(secret);
        for prefix in ["", "a", "ab", "abc", "{\"password\":\""] {
            let mut data = prefix.as_bytes().to_vec();
            data.extend_from_slice(secret);
            data.extend_from_slice(b"\"}");
            for encoded in [base64_standard(&data), base64_url_safe(&data)] {
                assert!(
                    fragments.iter().any(|f| encoded.contains(f.as_str())),
                    "{prefix:?}: {encoded} vs {fragments:?}"
                );
            }
        }
    }

    #[test]
    fn metric_lines_are_matched_exactly() {
        let text = "# TYPE a counter\na_total 3\na_total{class=\"x\"} 2\nab_total 9\n";
        assert_eq!(metric_value(text, "a_total"), Some(3.0));
        assert_eq!(metric_value(text, "a_total{class=\"x\"}"), Some(2.0));
        assert_eq!(metric_value(text, "b_total"), None);
    }

    #[test]
    fn percent_encoding_keeps_only_alphanumerics() {
        assert_eq!(percent_encode("arn:a/b c"), "arn%3Aa%2Fb%20c");
    }
}
