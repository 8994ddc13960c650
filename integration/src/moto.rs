//! moto (Python's AWS server emulation) on a loopback port, and a minimal
//! EC2 instance metadata service (IMDSv2) for the credential chain.
//!
//! moto is installed with pip into a venv under the temp dir, keyed by
//! [`MOTO_VERSION`], once per machine: later runs reuse it. The venv is
//! built under a private name and renamed into place, so parallel test
//! processes never see a half-installed one; scripts are run as
//! `<venv>/bin/python -m ...` because a renamed venv's entry-point
//! shebangs point at the old name. If `python3 -m venv` is missing (Debian
//! without `python3-venv`), the packages are installed with apt-get when
//! running as root.
//!
//! The venv also has boto3 (a moto dependency): [`Moto::boto3`] runs a
//! Python snippet against the server, so tests set up secrets, buckets and
//! roles without the Rust SDK (which stays inside `pullauth-aws`).

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::loopback::Loopback;
use crate::{process, util};

/// The moto release the tests run against.
pub const MOTO_VERSION: &str = "5.2.5";
/// How long moto may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How many fresh ports to try when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;
/// The fake credentials every client of a moto without IAM enforcement uses.
pub const MOTO_ACCESS_KEY: (&str, &str) = ("AKIAMOTOTESTKEY00001", "moto-test-secret-key");

/// One running moto server.
#[derive(Debug)]
pub struct Moto {
    port: u16,
    dir: TempDir,
    pid: process::PidSlot,
}

impl Moto {
    /// Starts moto on a free loopback port. `env` is added to the server's
    /// environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT` to enforce IAM).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        Moto::launch(env, None)
    }

    /// Starts moto with its defaults (any access key accepted).
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// One moto with its defaults for the whole test process, started on
    /// first use; tests keep apart by naming their resources uniquely.
    pub fn shared() -> &'static Moto {
        static MOTO: OnceLock<Moto> = OnceLock::new();
        MOTO.get_or_init(Moto::start)
    }

    /// Starts moto serving HTTPS with `cert` (PEM, the server certificate
    /// and any intermediates) and its private `key`, on a free loopback
    /// port, with moto's defaults. Reach it with [`Moto::https_endpoint`]
    /// under a name the certificate holds; [`Moto::endpoint`],
    /// [`Moto::boto3`] and the plain-HTTP helpers do not apply.
    pub fn start_tls(cert: &Path, key: &Path) -> Moto {
        Moto::launch(&[], Some((cert, key)))
    }

    /// Starts the server with `env`, over TLS with `tls` = (cert, key) when
    /// given, retrying on another port when the chosen one was taken.
    fn launch(env: &[(&str, &str)], tls: Option<(&Path, &Path)>) -> Moto {
        crate::require_opt_in();
        let python = venv_python();
        let started = Instant::now();
        let what = if tls.is_some() { "moto (TLS)" } else { "moto" };
        let dir = util::temp_dir(if tls.is_some() { "moto-tls" } else { "moto" });
        let log_path = dir.path().join("moto.log");
        let read_log =
            || String::from_utf8_lossy(&fs::read(&log_path).unwrap_or_default()).into_owned();
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = util::free_port();
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("cannot open the moto log");
            let mut cmd = Command::new(&python);
            cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(port.to_string());
            if let Some((cert, key)) = tls {
                cmd.arg("--ssl-cert").arg(cert).arg("--ssl-key").arg(key);
            }
            cmd.current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("cannot dup the moto log"))
                .stderr(log)
                .envs(env.iter().copied());
            let pid = process::spawn(cmd).expect("cannot start moto");
            let addr = format!("127.0.0.1:{port}");
            let ready = || match tls {
                None => util::http_get_status(&addr, "/moto-api/", None).is_ok(),
                // Werkzeug prints the line once it listens; a plain HTTP
                // probe cannot tell (the server wants a TLS handshake).
                Some(_) => {
                    read_log().contains(&format!("Running on https://{addr}"))
                        && TcpStream::connect(&addr).is_ok()
                }
            };
            loop {
                if process::exited(pid).is_some() {
                    // Most likely the port was taken meanwhile: try another.
                    process::terminate(pid, Duration::ZERO);
                    last_error = read_log();
                    break;
                }
                if ready() {
                    eprintln!(
                        "pullauth-integration: {what} {MOTO_VERSION} ready at {addr} in {:?}",
                        started.elapsed()
                    );
                    return Moto {
                        port,
                        dir,
                        pid: process::PidSlot::holding(pid),
                    };
                }
                if started.elapsed() > START_TIMEOUT {
                    process::terminate(pid, Duration::ZERO);
                    panic!(
                        "{what} did not answer within {START_TIMEOUT:?}:\n{}",
                        read_log()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("{what}: no working port after {PORT_ATTEMPTS} attempts:\n{last_error}");
    }

    /// The loopback port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://HOST:PORT`, for `AWS_ENDPOINT_URL` of a [`Moto::start_tls`]
    /// server, where `host` resolves to 127.0.0.1 (e.g. `--add-host`).
    pub fn https_endpoint(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// What moto printed so far (one line per request it served).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.path().join("moto.log")).unwrap_or_default())
            .into_owned()
    }

    /// Runs `script` with the venv's Python, `boto3`, `json` and `sys`
    /// imported and a `client(name)` helper bound to this server (region
    /// us-east-1, [`MOTO_ACCESS_KEY`] unless `keys` are given). Returns
    /// stdout; panics with the traceback if the script fails. The scripts
    /// run in long-lived interpreters, each in a namespace of its own
    /// (`crate::boto3`).
    pub fn boto3(&self, script: &str, keys: Option<(&str, &str)>) -> String {
        let keys = keys.unwrap_or(MOTO_ACCESS_KEY);
        match crate::boto3::run(&self.endpoint(), keys, script) {
            Ok(stdout) => stdout,
            Err(stderr) => panic!("boto3 script failed:\n{script}\n{stderr}"),
        }
    }

    /// Stops the server; its port then refuses connections.
    pub fn stop(&self) {
        self.pid.stop(Duration::from_secs(5));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The venv's python, creating the venv on first use (see the module docs).
pub fn venv_python() -> PathBuf {
    crate::require_opt_in();
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(ensure_venv) {
        Ok(path) => path.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

fn ensure_venv() -> Result<PathBuf, String> {
    let venv = std::env::temp_dir().join(format!("pullauth-moto-{MOTO_VERSION}"));
    let python = venv.join("bin").join("python");
    if python.is_file() {
        return Ok(python);
    }
    util::ensure_tools(&[("python3", "python3")]);
    let build = std::env::temp_dir().join(format!(
        "pullauth-moto-{MOTO_VERSION}.build-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&build);
    let make_venv = |build: &Path| {
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(build)
            .stdin(Stdio::null())
            .output()
    };
    let out = make_venv(&build).map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        // Debian ships venv (ensurepip) separately.
        let _ = fs::remove_dir_all(&build);
        util::apt_install(&["python3-venv"]);
        let out = make_venv(&build).map_err(|e| format!("cannot run python3: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "python3 -m venv failed even with python3-venv installed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    eprintln!("pullauth-integration: installing moto[server]=={MOTO_VERSION} with pip");
    let out = Command::new(build.join("bin").join("python"))
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg(format!("moto[server]=={MOTO_VERSION}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&build);
        return Err(format!(
            "pip install moto[server]=={MOTO_VERSION} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Another process may have won the race; either venv is complete.
    if fs::rename(&build, &venv).is_err() {
        let _ = fs::remove_dir_all(&build);
    }
    if python.is_file() {
        Ok(python)
    } else {
        Err(format!("{} is missing after the install", python.display()))
    }
}

/// Credentials an [`Imds`] hands out.
#[derive(Debug, Clone)]
pub struct ImdsCredentials {
    pub role: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
}

/// A minimal EC2 instance metadata service with IMDSv2 sessions: `PUT
/// /latest/api/token` (answered with the TTL header the Rust SDK
/// requires, which moto's own IMDS omits), the role list and the role's
/// credentials. Everything else is 404. Stops when dropped.
#[derive(Debug)]
pub struct Imds {
    credential_requests: Arc<AtomicUsize>,
    server: Loopback,
}

/// The session token this IMDS issues and requires.
const IMDS_SESSION: &str = "pullauth-test-imds-session";

impl Imds {
    /// Starts the service on a free loopback port, serving `creds`.
    pub fn start(creds: ImdsCredentials) -> Imds {
        let credential_requests = Arc::new(AtomicUsize::new(0));
        let count = credential_requests.clone();
        let server = Loopback::start("pullauth-it-imds", move |stream| {
            let _ = serve_imds(stream, &creds, &count);
        });
        Imds {
            credential_requests,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// How many times the role's credentials were requested.
    pub fn credential_requests(&self) -> usize {
        self.credential_requests.load(Ordering::SeqCst)
    }
}

fn serve_imds(
    stream: TcpStream,
    creds: &ImdsCredentials,
    count: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        headers.push(lower);
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let has_session = headers
        .iter()
        .any(|h| h.trim_end() == format!("x-aws-ec2-metadata-token: {IMDS_SESSION}"));
    let prefix = "/latest/meta-data/iam/security-credentials/";
    let (status, extra, body) = match (method, path) {
        ("PUT", "/latest/api/token") => (
            "200 OK",
            "x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
            IMDS_SESSION.to_string(),
        ),
        (_, _) if !has_session => ("401 Unauthorized", "", String::new()),
        ("GET", p) if p == prefix => ("200 OK", "", creds.role.clone()),
        ("GET", p) if p.strip_prefix(prefix) == Some(creds.role.as_str()) => {
            count.fetch_add(1, Ordering::SeqCst);
            let expiration = "2999-01-01T00:00:00Z";
            let json = serde_json::json!({
                "Code": "Success",
                "LastUpdated": "2024-01-01T00:00:00Z",
                "Type": "AWS-HMAC",
                "AccessKeyId": creds.access_key_id,
                "SecretAccessKey": creds.secret_access_key,
                "Token": creds.token,
                "Expiration": expiration,
            });
            ("200 OK", "", json.to_string())
        }
        _ => ("404 Not Found", "", String::new()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The environment that points pullauth's AWS SDK at `endpoint` (moto, or
/// a dead port) with moto's static keys, never at the instance metadata
/// service: the keys are the credentials.
pub fn pullauth_aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", MOTO_ACCESS_KEY.0.into()),
        ("AWS_SECRET_ACCESS_KEY", MOTO_ACCESS_KEY.1.into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL", endpoint.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}
