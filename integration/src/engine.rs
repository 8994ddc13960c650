//! The Docker engine the tests pull into: an existing one, or a private
//! dockerd started for this test process.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{process, util};

/// Environment variable naming an engine to use instead of starting one.
pub const DOCKER_HOST_ENV: &str = "PULLAUTH_TEST_DOCKER_HOST";

/// How long a private dockerd may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A Docker engine that the tests can talk to with the docker CLI.
#[derive(Debug)]
pub struct Engine {
    host: String,
    /// Set when this process started the daemon.
    private: Option<PrivateDaemon>,
    /// Docker client config without credentials, so the CLI never reads
    /// ~/.docker (see [`client_config`]).
    client_config: TempDir,
}

#[derive(Debug)]
struct PrivateDaemon {
    pid: u32,
    dir: TempDir,
}

impl Engine {
    /// Finds or starts an engine: `PULLAUTH_TEST_DOCKER_HOST` if set (never
    /// starts one then), else `DOCKER_HOST` or the default socket if `docker
    /// info` works there, else a private dockerd under a temp dir.
    pub fn start_or_reuse() -> Engine {
        crate::require_opt_in();
        util::ensure_tools(&[("docker", "docker.io")]);
        let client_config = client_config("client");
        let probe = |host: &str| docker_info_ok(host, client_config.path());
        if let Some(host) = std::env::var(DOCKER_HOST_ENV)
            .ok()
            .filter(|h| !h.is_empty())
        {
            assert!(
                probe(&host),
                "{DOCKER_HOST_ENV}={host} is set but `docker -H {host} info` fails"
            );
            return Engine {
                host,
                private: None,
                client_config,
            };
        }
        let candidates = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .into_iter()
            .chain(["unix:///var/run/docker.sock".to_string()]);
        for host in candidates {
            if probe(&host) {
                return Engine {
                    host,
                    private: None,
                    client_config,
                };
            }
        }
        let (host, daemon) = start_private_daemon();
        Engine {
            host,
            private: Some(daemon),
            client_config,
        }
    }

    /// The engine address for `docker -H` / `DOCKER_HOST`, e.g.
    /// `unix:///tmp/.../docker.sock`.
    pub fn docker_host(&self) -> &str {
        &self.host
    }

    /// Whether this process started the daemon (and will stop it at exit).
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// The private daemon's log file, if this process started the daemon.
    pub fn daemon_log(&self) -> Option<PathBuf> {
        self.private
            .as_ref()
            .map(|d| d.dir.path().join("dockerd.log"))
    }

    /// A `docker` CLI command aimed at this engine, with an empty client
    /// config (pass `--config DIR` first to use credentials).
    pub fn docker(&self) -> Command {
        docker_command(&self.host, self.client_config.path())
    }

    /// Stops a private daemon now (SIGTERM, then wait); a no-op for a reused
    /// engine. Normally the exit handler does this.
    pub fn shutdown(&self) {
        if let Some(d) = &self.private {
            process::terminate(d.pid, Duration::from_secs(15));
        }
    }
}

/// The `auths` entry [`pin_credential_storage`] writes: a name no registry
/// can have (`.invalid` is reserved, RFC 2606) that says why it is there.
const FILE_STORE_PIN: &str = "credentials-stay-in-this-file.invalid";

/// Makes the docker CLI keep the credentials of the client config in
/// `config_dir` in its `config.json`, never in a credential store, by
/// writing a `config.json` whose `auths` is not empty. An existing
/// `config.json` is left as it is.
///
/// When it loads a config without credentials (no `credsStore`, no
/// `credHelpers`, no `auths` entry), the CLI picks a default store: `pass`
/// when `pass` and `docker-credential-pass` are installed, else
/// `secretservice` when its helper is. `docker login` then fails on an
/// uninitialized `pass` store, or writes into someone's keyring. Neither
/// `{"auths": {}}` nor `"credsStore": ""` prevents that; one `auths` entry
/// does. `pin_docker_config` in integration/lib.sh does the same for the
/// scripts.
pub(crate) fn pin_credential_storage(config_dir: &Path) {
    let path = config_dir.join("config.json");
    if path.exists() {
        return;
    }
    let pinned = serde_json::json!({ "auths": { FILE_STORE_PIN: {} } });
    std::fs::write(&path, format!("{pinned}\n"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A fresh docker client config dir (a temp dir named after `purpose`)
/// without credentials, whose storage is pinned to its `config.json`.
pub(crate) fn client_config(purpose: &str) -> TempDir {
    let dir = util::temp_dir(purpose);
    pin_credential_storage(dir.path());
    dir
}

/// The HOME of every docker CLI the harness runs: an empty directory, so
/// that a credential helper the CLI might still call (`pass` reads
/// ~/.password-store) finds no store, and the user's is never touched.
fn cli_home() -> &'static Path {
    static HOME: OnceLock<TempDir> = OnceLock::new();
    HOME.get_or_init(|| util::temp_dir("cli-home")).path()
}

fn docker_command(host: &str, config: &Path) -> Command {
    let mut cmd = Command::new(util::which("docker").unwrap_or_else(|| PathBuf::from("docker")));
    cmd.env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("DOCKER_CONFIG", config)
        .env("HOME", cli_home())
        .env_remove("PASSWORD_STORE_DIR")
        // docker-credential-secretservice talks to the session keyring.
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .args(["-H", host])
        .stdin(Stdio::null());
    cmd
}

fn docker_info_ok(host: &str, config: &Path) -> bool {
    docker_command(host, config)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `GET /_ping` over the unix socket; cheaper than spawning the CLI.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

fn start_private_daemon() -> (String, PrivateDaemon) {
    util::ensure_tools(&[("dockerd", "docker.io"), ("containerd", "docker.io")]);
    let started = Instant::now();
    let dir = util::temp_dir("dockerd");
    let (host, pid) = launch_daemon(dir.path(), false, &[], None);
    eprintln!(
        "pullauth-integration: private dockerd ready at {host} in {:?}",
        started.elapsed()
    );
    (host, PrivateDaemon { pid, dir })
}

/// Starts dockerd with its socket, data, exec root, pid file and log under
/// `root`, plus `extra` arguments, and waits until it answers on the socket;
/// returns `(host, pid)`. `append_log` keeps the log of earlier runs (for
/// restarts). With `hosts`, dockerd runs in its own mount namespace in which
/// that file is bind-mounted over `/etc/hosts` (see
/// [`PrivateEngine::start_with_hosts`]).
fn launch_daemon(
    root: &Path,
    append_log: bool,
    extra: &[String],
    hosts: Option<&Path>,
) -> (String, u32) {
    let started = Instant::now();
    let socket = root.join("docker.sock");
    let log_path = root.join("dockerd.log");
    let log = if append_log {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
    } else {
        File::create(&log_path)
    }
    .expect("cannot create dockerd.log");
    let dockerd = util::which("dockerd").expect("dockerd was just ensured");
    let mut cmd = match hosts {
        None => Command::new(dockerd),
        Some(hosts) => {
            // unshare(1) without --fork execs, so the pid stays dockerd's;
            // its default propagation is private, so the bind mount is seen
            // by this dockerd (and its containerd) only.
            let mut cmd = Command::new(util::which("unshare").expect("util-linux is essential"));
            cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
                .arg(hosts)
                .arg(dockerd);
            cmd
        }
    };
    cmd.arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .arg("--data-root")
        .arg(root.join("data"))
        .arg("--exec-root")
        .arg(root.join("exec"))
        .arg("--pidfile")
        .arg(root.join("docker.pid"))
        .args([
            "--storage-driver",
            "vfs",
            "--iptables=false",
            "--bridge=none",
        ])
        .args(extra)
        .env("PATH", util::daemon_path())
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cannot dup log fd"))
        .stderr(log);
    let pid = process::spawn(cmd).unwrap_or_else(|e| panic!("cannot start dockerd: {e}"));
    let host = format!("unix://{}", socket.display());
    loop {
        if let Some(status) = process::exited(pid) {
            panic!(
                "private dockerd exited early ({status}); last lines of {}:\n{}",
                log_path.display(),
                util::log_tail(&log_path, 30)
            );
        }
        if ping(&socket) {
            break;
        }
        if started.elapsed() > START_TIMEOUT {
            process::terminate(pid, Duration::from_secs(5));
            panic!(
                "private dockerd did not answer on {host} within {START_TIMEOUT:?}; \
                 last lines of {}:\n{}",
                log_path.display(),
                util::log_tail(&log_path, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let config = client_config("client");
    assert!(
        docker_info_ok(&host, config.path()),
        "dockerd answers /_ping but `docker -H {host} info` fails; last lines of {}:\n{}",
        log_path.display(),
        util::log_tail(&log_path, 30)
    );
    (host, pid)
}

/// A dockerd owned by one test, which may stop, kill and restart it (the
/// shared [`Engine`] must never be restarted: tests run in parallel).
///
/// It has its own data root, so it starts with no images. Stopped when
/// dropped, like every helper process, and at the latest at exit.
#[derive(Debug)]
pub struct PrivateEngine {
    host: String,
    dir: TempDir,
    client_config: TempDir,
    /// Pid of the running dockerd, `None` while stopped.
    pid: process::PidSlot,
    /// Daemon arguments beyond the harness's own, kept for restarts.
    extra_args: Vec<String>,
    /// The hosts file bind-mounted over the daemon's `/etc/hosts`, if any.
    hosts_file: Option<PathBuf>,
}

impl PrivateEngine {
    /// Starts a new dockerd under a fresh temp dir and waits until it answers.
    pub fn start() -> PrivateEngine {
        PrivateEngine::start_with(&[])
    }

    /// Like [`PrivateEngine::start`], with extra dockerd arguments (e.g. a
    /// second `--host tcp://...` with `--tlsverify`). The unix socket the
    /// harness's docker CLI uses stays, so [`PrivateEngine::docker`] works
    /// whatever the extra listeners require.
    pub fn start_with(extra_args: &[&str]) -> PrivateEngine {
        PrivateEngine::launch(extra_args, &[])
    }

    /// Like [`PrivateEngine::start_with`], but the daemon resolves each
    /// `(name, address)` of `hosts` to that address: it runs in its own
    /// mount namespace (`unshare --mount`) with a hosts file holding them
    /// (and localhost) bind-mounted over `/etc/hosts`. Nothing outside the
    /// daemon sees the change. With `--insecure-registry NAME` in
    /// `extra_args`, a registry on `address:80` then poses as `NAME`, e.g.
    /// an ECR host.
    pub fn start_with_hosts(hosts: &[(&str, &str)], extra_args: &[&str]) -> PrivateEngine {
        PrivateEngine::launch(extra_args, hosts)
    }

    fn launch(extra_args: &[&str], hosts: &[(&str, &str)]) -> PrivateEngine {
        crate::require_opt_in();
        util::ensure_tools(&[
            ("docker", "docker.io"),
            ("dockerd", "docker.io"),
            ("containerd", "docker.io"),
        ]);
        let started = Instant::now();
        let dir = util::temp_dir("own-dockerd");
        let extra_args: Vec<String> = extra_args.iter().map(|a| (*a).to_string()).collect();
        let hosts_file = (!hosts.is_empty()).then(|| {
            let path = dir.path().join("hosts");
            let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
            for (name, address) in hosts {
                text.push_str(&format!("{address}\t{name}\n"));
            }
            std::fs::write(&path, text).expect("cannot write the daemon's hosts file");
            path
        });
        let (host, pid) = launch_daemon(dir.path(), false, &extra_args, hosts_file.as_deref());
        eprintln!(
            "pullauth-integration: test-owned dockerd ready at {host} in {:?}",
            started.elapsed()
        );
        PrivateEngine {
            host,
            dir,
            client_config: client_config("client"),
            pid: process::PidSlot::holding(pid),
            extra_args,
            hosts_file,
        }
    }

    /// The engine address for `DOCKER_HOST`, `unix:///tmp/.../docker.sock`.
    pub fn docker_host(&self) -> &str {
        &self.host
    }

    /// A `docker` CLI command aimed at this engine, with an empty client config.
    pub fn docker(&self) -> Command {
        docker_command(&self.host, self.client_config.path())
    }

    /// The daemon's log (every run appends to it).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("dockerd.log")
    }

    /// Whether the daemon process is running.
    pub fn is_running(&self) -> bool {
        self.pid.is_running()
    }

    /// The pid of the running dockerd, `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.pid.get()
    }

    /// Stops the daemon with SIGSTOP until the returned guard is dropped
    /// (SIGCONT): the kernel still accepts connections on its sockets, but
    /// nothing answers them, as with a wedged engine. Thawing in `Drop`
    /// means a failed assertion never leaves dockerd frozen (a frozen
    /// process would also ignore the SIGTERM that stops it).
    pub fn freeze(&self) -> Frozen<'_> {
        let pid = self.pid().expect("the test-owned dockerd is not running");
        crate::sys::send_signal(pid, libc::SIGSTOP).expect("cannot SIGSTOP dockerd");
        Frozen { engine: self, pid }
    }

    /// Stops the daemon gracefully (SIGTERM, then up to 30 s), as
    /// `systemctl stop docker` does; a no-op when it is not running.
    pub fn stop(&self) {
        self.pid.stop(Duration::from_secs(30));
    }

    /// Starts the daemon again on the same socket and data root (stopping
    /// it first if it runs) and waits until it answers.
    pub fn restart(&self) {
        self.stop();
        let (_, pid) = launch_daemon(
            self.dir.path(),
            true,
            &self.extra_args,
            self.hosts_file.as_deref(),
        );
        self.pid.set(pid);
    }
}

/// A [`PrivateEngine`] stopped with SIGSTOP; dropping it (or
/// [`Frozen::thaw`]) sends SIGCONT.
#[derive(Debug)]
pub struct Frozen<'a> {
    engine: &'a PrivateEngine,
    pid: u32,
}

impl Frozen<'_> {
    /// Lets dockerd run again and waits until it answers on its socket.
    pub fn thaw(self) {
        drop(self);
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = crate::sys::send_signal(self.pid, libc::SIGCONT);
        let socket = self.engine.dir.path().join("docker.sock");
        let deadline = Instant::now() + START_TIMEOUT;
        while !ping(&socket) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        self.stop();
    }
}
