//! A real Docker registry (distribution v2, Debian's `docker-registry`) with
//! htpasswd authentication on a loopback port.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{process, sys, util};

/// How long a registry may take to answer `GET /v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports to try when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 8;
/// The port of [`Registry::start_on_own_loopback`].
const OWN_LOOPBACK_PORT: u16 = 80;

/// One running registry that requires HTTP Basic credentials.
///
/// Stopped when dropped; registries owned by [`crate::Harness`] live until
/// the test process exits. Do not [`stop`](Registry::stop) a shared harness
/// registry: tests run in parallel. Start your own with
/// [`Registry::start`] for fault injection.
#[derive(Debug)]
pub struct Registry {
    name: String,
    users: Vec<(String, String)>,
    /// The loopback address it listens on: 127.0.0.1, or an address of its
    /// own in 127.0.0.0/8 (see [`Registry::start_on_own_loopback`]).
    ip: Ipv4Addr,
    port: u16,
    dir: TempDir,
    /// Pid of the running registry process, `None` while stopped.
    pid: process::PidSlot,
}

impl Registry {
    /// Starts a registry called `name` (used in the realm and temp dir name)
    /// that accepts exactly the given `(user, password)` pairs.
    ///
    /// Passwords may contain any characters except NUL (they are passed to
    /// htpasswd as one argv entry); user names must not contain ':' or
    /// control characters, which the htpasswd format cannot hold.
    pub fn start(name: &str, users: &[(&str, &str)]) -> Registry {
        Registry::start_on(name, users, None)
    }

    /// Like [`Registry::start`], on port 80 (where an engine looks for an
    /// insecure registry named without a port) of a loopback address of its
    /// own, picked at random in 127.0.0.0/8: port 80 of 127.0.0.1 may be
    /// taken (a web server on a workstation, another test run), an unused
    /// alias is not. Map a host name to [`Registry::ip`] (a hosts file) to
    /// make the registry pose as that host.
    pub fn start_on_own_loopback(name: &str, users: &[(&str, &str)]) -> Registry {
        for _ in 0..PORT_ATTEMPTS {
            // 127.1.0.0 and up: clear of 127.0.0.x, which hosts use.
            let [b, c, d] = util::random_bytes::<3>();
            let ip = Ipv4Addr::new(127, b.max(1), c, d.clamp(2, 254));
            // Another run may have picked the same address: try the next.
            if std::net::TcpListener::bind((ip, OWN_LOOPBACK_PORT)).is_ok() {
                return Registry::start_on(name, users, Some((ip, OWN_LOOPBACK_PORT)));
            }
        }
        panic!(
            "registry {name}: no free port {OWN_LOOPBACK_PORT} on {PORT_ATTEMPTS} loopback addresses"
        );
    }

    fn start_on(name: &str, users: &[(&str, &str)], fixed: Option<(Ipv4Addr, u16)>) -> Registry {
        crate::require_opt_in();
        util::ensure_tools(&[
            ("docker-registry", "docker-registry"),
            ("htpasswd", "apache2-utils"),
        ]);
        let started = Instant::now();
        let dir = util::temp_dir(&format!("registry-{}", sanitize(name)));
        write_htpasswd(&dir.path().join("htpasswd"), users);
        fs::create_dir(dir.path().join("storage")).expect("cannot create registry storage");
        let mut registry = Registry {
            name: name.to_string(),
            users: users
                .iter()
                .map(|(u, p)| ((*u).to_string(), (*p).to_string()))
                .collect(),
            ip: fixed.map_or(Ipv4Addr::LOCALHOST, |(ip, _)| ip),
            port: 0,
            dir,
            pid: process::PidSlot::default(),
        };
        let mut last_error = String::new();
        if let Some((ip, port)) = fixed {
            // Another server answering on the port would pass the readiness
            // check below before our registry fails to bind: look first.
            if let Err(e) = std::net::TcpListener::bind((ip, port)) {
                panic!(
                    "registry {name}: {ip}:{port} is taken ({e}); \
                     (`ss -ltnp 'sport = :{port}'` shows who holds it)"
                );
            }
        }
        let fixed_port = fixed.map(|(_, port)| port);
        let attempts = if fixed_port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        for _ in 0..attempts {
            registry.port = fixed_port.unwrap_or_else(util::free_port);
            match registry.launch() {
                Ok(pid) => {
                    registry.pid.set(pid);
                    eprintln!(
                        "pullauth-integration: registry {name} ready at {} in {:?}",
                        registry.addr(),
                        started.elapsed()
                    );
                    return registry;
                }
                Err(LaunchError::PortTaken(log)) => last_error = log,
                Err(LaunchError::Failed(msg)) => panic!("registry {name}: {msg}"),
            }
        }
        if let Some(port) = fixed_port {
            panic!("registry {name}: port {port} is taken:\n{last_error}");
        }
        panic!("registry {name}: no free port after {PORT_ATTEMPTS} attempts:\n{last_error}");
    }

    /// The name given to [`Registry::start`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `IP:PORT` (`127.0.0.1:PORT` unless started on a loopback address of
    /// its own), the registry host part of image references.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// The loopback address the registry listens on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `127.0.0.1:PORT/repository:tag`, a full image reference on this registry.
    pub fn image_ref(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.addr())
    }

    /// The `(user, password)` pairs this registry accepts.
    pub fn users(&self) -> &[(String, String)] {
        &self.users
    }

    /// The password of `user`; panics for an unknown user (a test bug).
    pub fn password(&self, user: &str) -> &str {
        self.users.iter().find(|(u, _)| u == user).map_or_else(
            || panic!("registry {} has no user {user:?}", self.name),
            |(_, p)| p.as_str(),
        )
    }

    /// Where the registry writes its log (JSON lines plus access-log lines).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Every authenticated user name the registry logged, one entry per HTTP
    /// request, in order (the registry logs `auth.user.name` on several lines
    /// of one request; entries are deduplicated by `http.request.id`).
    ///
    /// distribution v2.8 logs `auth.user.name` for requests on repositories
    /// (manifests, blobs, tags), not for the bare `GET /v2/` ping, so a
    /// `docker login` alone leaves no entry but every pull does.
    pub fn users_seen(&self) -> Vec<String> {
        self.users_since(0)
    }

    /// A position in the log; pass it to [`Registry::users_since`] to see
    /// who authenticated after this point (e.g. during one pull).
    pub fn log_mark(&self) -> usize {
        settle(&self.log_path());
        fs::read(self.log_path()).map_or(0, |b| b.len())
    }

    /// Users of the requests that started after `mark` (see
    /// [`Registry::users_seen`]). A request already logged before the mark
    /// is not counted again even if its later lines fall after the mark.
    pub fn users_since(&self, mark: usize) -> Vec<String> {
        settle(&self.log_path());
        let text = fs::read(self.log_path()).unwrap_or_default();
        let mark = mark.min(text.len());
        let mut before = HashSet::new();
        for_each_entry(&text[..mark], |id, _| {
            before.insert(id.to_string());
        });
        let mut counted = HashSet::new();
        let mut users = Vec::new();
        for_each_entry(&text[mark..], |id, user| {
            if let Some(user) = user
                && !before.contains(id)
                && counted.insert(id.to_string())
            {
                users.push(user.to_string());
            }
        });
        users
    }

    /// Like [`Registry::users_since`], but only requests on `repository`
    /// (the registry's `vars.name`, e.g. `team/app`), so that tests sharing
    /// a registry in parallel do not see each other's pulls.
    pub fn users_since_in(&self, mark: usize, repository: &str) -> Vec<String> {
        settle(&self.log_path());
        let text = fs::read(self.log_path()).unwrap_or_default();
        let mark = mark.min(text.len());
        let mut before = HashSet::new();
        for_each_entry(&text[..mark], |id, _| {
            before.insert(id.to_string());
        });
        // A request's first lines may lack the user; its repository is on
        // every line, so match on the lines that carry both.
        let mut counted = HashSet::new();
        let mut users = Vec::new();
        for_each_request_line(&text[mark..], |id, user, name| {
            if let (Some(user), Some(name)) = (user, name)
                && name == repository
                && !before.contains(id)
                && counted.insert(id.to_string())
            {
                users.push(user.to_string());
            }
        });
        users
    }

    /// The status of `GET /v2/` with optional Basic credentials: 200 for
    /// valid ones, 401 otherwise.
    pub fn v2_status(&self, credentials: Option<(&str, &str)>) -> u16 {
        util::http_get_status(&self.addr(), "/v2/", credentials)
            .unwrap_or_else(|e| panic!("registry {}: GET /v2/ failed: {e}", self.name))
    }

    /// Whether the registry process is running.
    pub fn is_running(&self) -> bool {
        self.pid.is_running()
    }

    /// Stops the registry (SIGTERM, then wait); its port then refuses
    /// connections. Storage and log are kept for [`Registry::restart`].
    pub fn stop(&self) {
        self.pid.stop(Duration::from_secs(10));
    }

    /// Freezes the registry process (SIGSTOP) until the returned guard is
    /// dropped (SIGCONT). The kernel still accepts connections, but nothing
    /// answers, so a pull in progress waits without failing or retrying: a
    /// test can keep it in flight for as long as it needs.
    pub fn hold(&self) -> Held<'_> {
        let pid = self
            .pid
            .get()
            .unwrap_or_else(|| panic!("registry {} is not running", self.name));
        sys::send_signal(pid, libc::SIGSTOP)
            .unwrap_or_else(|e| panic!("registry {}: SIGSTOP failed: {e}", self.name));
        Held {
            registry: self,
            pid,
        }
    }

    /// Starts the registry again on the same port with the same storage,
    /// users and log (stopping it first if it is running).
    pub fn restart(&self) {
        self.stop();
        let started = Instant::now();
        // The port was ours a moment ago, but a parallel test may have taken
        // it in between; retry for a little while before giving up.
        loop {
            match self.launch() {
                Ok(pid) => {
                    self.pid.set(pid);
                    return;
                }
                Err(LaunchError::PortTaken(_)) if started.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(LaunchError::PortTaken(log)) => {
                    panic!(
                        "registry {}: port {} stays taken:\n{log}",
                        self.name, self.port
                    )
                }
                Err(LaunchError::Failed(msg)) => panic!("registry {}: {msg}", self.name),
            }
        }
    }

    /// Writes the config for the current port and starts the process.
    fn launch(&self) -> Result<u32, LaunchError> {
        let root = self.dir.path();
        let config_path = root.join("config.yml");
        fs::write(&config_path, self.config_yaml())
            .map_err(|e| LaunchError::Failed(format!("cannot write config: {e}")))?;
        let log_path = self.log_path();
        let log_start =
            fs::metadata(&log_path).map_or(0, |m| usize::try_from(m.len()).unwrap_or(usize::MAX));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LaunchError::Failed(format!("cannot open log: {e}")))?;
        let mut cmd = Command::new(util::which("docker-registry").expect("ensured above"));
        cmd.arg("serve")
            .arg(&config_path)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| LaunchError::Failed(format!("cannot dup log fd: {e}")))?,
            )
            .stderr(log);
        let pid = process::spawn(cmd)
            .map_err(|e| LaunchError::Failed(format!("cannot start docker-registry: {e}")))?;
        let started = Instant::now();
        loop {
            if process::exited(pid).is_some() {
                process::terminate(pid, Duration::ZERO);
                let text = fs::read(&log_path).unwrap_or_default();
                let new = String::from_utf8_lossy(&text[log_start.min(text.len())..]).into_owned();
                return Err(if new.contains("address already in use") {
                    LaunchError::PortTaken(new)
                } else {
                    LaunchError::Failed(format!("docker-registry exited early:\n{new}"))
                });
            }
            if let Ok(401) = util::http_get_status(&self.addr(), "/v2/", None) {
                return Ok(pid);
            }
            if started.elapsed() > START_TIMEOUT {
                process::terminate(pid, Duration::from_secs(2));
                return Err(LaunchError::Failed(format!(
                    "no 401 from http://{}/v2/ within {START_TIMEOUT:?}; log tail:\n{}",
                    self.addr(),
                    util::log_tail(&log_path, 20)
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn config_yaml(&self) -> String {
        let root = self.dir.path().display();
        format!(
            r#"version: 0.1
log:
  level: debug
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "{root}/storage"
  delete:
    enabled: true
auth:
  htpasswd:
    realm: "pullauth-test-{name}"
    path: "{root}/htpasswd"
http:
  addr: "{ip}:{port}"
  draintimeout: 0s
"#,
            name = sanitize(&self.name),
            ip = self.ip,
            port = self.port,
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `name` reduced to characters safe in file names and YAML strings.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

enum LaunchError {
    /// The port was taken by someone else; the new log text says so.
    PortTaken(String),
    Failed(String),
}

/// Writes an htpasswd file with bcrypt entries made by `htpasswd -Bbn`.
fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let mut file = String::new();
    for (user, password) in users {
        assert!(
            !user.is_empty() && !user.contains(':') && !user.chars().any(char::is_control),
            "registry user name {user:?} cannot be stored in htpasswd"
        );
        assert!(!password.contains('\0'), "passwords cannot contain NUL");
        // Arguments go straight to execve: no shell, no quoting issues.
        let line = util::run_ok(
            Command::new(util::which("htpasswd").expect("ensured above"))
                .args(["-B", "-b", "-n", "-C", "5"])
                .arg(user)
                .arg(password),
            b"",
        );
        let line = line.trim_end();
        assert!(
            line.starts_with(&format!("{user}:$2")),
            "unexpected htpasswd output for {user:?}: {line:?}"
        );
        file.push_str(line);
        file.push('\n');
    }
    fs::write(path, file).expect("cannot write htpasswd");
}

/// Calls `f(request_id, user)` for every JSON log line that has a request id.
fn for_each_entry(text: &[u8], mut f: impl FnMut(&str, Option<&str>)) {
    for_each_request_line(text, |id, user, _| f(id, user));
}

/// Calls `f(request_id, user, repository)` for every JSON log line that has
/// a request id; the repository is the route's `vars.name`, if any.
fn for_each_request_line(text: &[u8], mut f: impl FnMut(&str, Option<&str>, Option<&str>)) {
    // Only complete lines: the last one may still be being written.
    let complete = match text.iter().rposition(|b| *b == b'\n') {
        Some(end) => &text[..=end],
        None => return,
    };
    for line in complete.split(|b| *b == b'\n') {
        let Ok(serde_json::Value::Object(entry)) = serde_json::from_slice(line) else {
            continue;
        };
        let Some(id) = entry.get("http.request.id").and_then(|v| v.as_str()) else {
            continue;
        };
        f(
            id,
            entry.get("auth.user.name").and_then(|v| v.as_str()),
            entry.get("vars.name").and_then(|v| v.as_str()),
        );
    }
}

/// Waits (briefly) until the log file stops growing, so lines of requests
/// that just finished are on disk before we read it.
fn settle(path: &Path) {
    let size = || fs::metadata(path).map_or(0, |m| m.len());
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = size();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(40));
        let now = size();
        if now == last {
            return;
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_are_grouped_by_request() {
        let log = concat!(
            r#"{"http.request.id":"a","msg":"authorizing request"}"#,
            "\n",
            r#"{"auth.user.name":"bob","http.request.id":"a"}"#,
            "\n",
            r#"{"auth.user.name":"bob","http.request.id":"a"}"#,
            "\n",
            "127.0.0.1 - - [x] \"GET /v2/ HTTP/1.1\" 401\n",
            r#"{"auth.user.name":"alice","http.request.id":"b"}"#,
            "\n",
            r#"{"auth.user.name":"carol","http.request.id":"c"}"#,
        );
        let mut seen = Vec::new();
        for_each_entry(log.as_bytes(), |id, user| {
            seen.push((id.to_string(), user.map(String::from)));
        });
        let users: Vec<_> = seen.iter().filter_map(|(_, u)| u.clone()).collect();
        // The unterminated "carol" line is still being written: skipped.
        assert_eq!(users, ["bob", "bob", "alice"]);
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn log_lines_carry_the_repository() {
        let log = concat!(
            r#"{"http.request.id":"a","vars.name":"team/app","msg":"authorizing request"}"#,
            "\n",
            r#"{"auth.user.name":"bob","http.request.id":"a","vars.name":"team/app"}"#,
            "\n",
            r#"{"auth.user.name":"alice","http.request.id":"b"}"#,
            "\n",
        );
        let mut seen = Vec::new();
        for_each_request_line(log.as_bytes(), |id, user, name| {
            seen.push((
                id.to_string(),
                user.map(String::from),
                name.map(String::from),
            ));
        });
        assert_eq!(
            seen,
            [
                ("a".into(), None, Some("team/app".into())),
                ("a".into(), Some("bob".into()), Some("team/app".into())),
                ("b".into(), Some("alice".into()), None),
            ]
        );
    }
}

/// A registry frozen by [`Registry::hold`]; dropping it lets it answer again.
#[derive(Debug)]
#[must_use = "the registry answers again as soon as this is dropped"]
pub struct Held<'a> {
    registry: &'a Registry,
    pid: u32,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Err(e) = sys::send_signal(self.pid, libc::SIGCONT) {
            eprintln!(
                "pullauth-integration: registry {}: SIGCONT failed: {e}",
                self.registry.name
            );
        }
    }
}
