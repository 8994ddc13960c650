//! Small helpers shared by the harness pieces: ports, temp dirs, packages,
//! running commands, a minimal HTTP probe.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;

/// Prefix of every temporary directory this crate creates; the pid after it
/// tells which test process owns the directory.
const DIR_PREFIX: &str = "pullauth-it-";

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and releasing it, so another process
/// can still grab it before the caller binds it: callers that start servers
/// on it retry with a new port when the bind fails.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("bound listener has no local address")
        .port()
}

/// Creates a temporary directory named after this process, so that it is
/// removed when the process exits or, after a crash, by the next harness.
pub(crate) fn temp_dir(purpose: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-{purpose}-", std::process::id()))
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// Owner pid encoded in a directory name made by [`temp_dir`].
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(DIR_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn our_dirs(filter: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(owner_pid)
                .is_some_and(&filter)
        })
        .map(|e| e.path())
        .collect()
}

/// Removes `dir`, first lazily unmounting anything still mounted below it
/// (a killed dockerd leaves its data root bind-mounted).
fn remove_dir_with_mounts(dir: &Path) {
    if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
        let prefix = dir.to_string_lossy().into_owned();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
            .collect();
        // Deepest first.
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount")
                .args(["-l", point])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _ = fs::remove_dir_all(dir);
}

/// Deletes the temporary directories of test processes that no longer exist.
pub(crate) fn sweep_stale_dirs() {
    for dir in our_dirs(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
        remove_dir_with_mounts(&dir);
    }
}

/// Deletes this process's temporary directories (called at exit, after the
/// helper processes are gone).
pub(crate) fn remove_own_dirs() {
    let me = std::process::id();
    for dir in our_dirs(|pid| pid == me) {
        remove_dir_with_mounts(&dir);
    }
}

/// Finds an executable by name on PATH and in the sbin directories (dockerd
/// lives in /usr/sbin, which a non-login PATH may lack).
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A PATH that includes the sbin directories, for helper daemons that look up
/// their own helpers (dockerd needs containerd, runc, docker-init).
pub(crate) fn daemon_path() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    for extra in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(PathBuf::from(extra));
        }
    }
    std::env::join_paths(dirs).expect("PATH entries contain ':'")
}

fn is_root() -> bool {
    // Effective uid is the second field of the "Uid:" line.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Makes sure each `(binary, debian_package)` is available, installing the
/// missing packages with apt-get when running as root; panics otherwise.
pub fn ensure_tools(tools: &[(&str, &str)]) {
    crate::require_opt_in();
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if missing.is_empty() {
        return;
    }
    apt_install(&missing);
    for (bin, pkg) in tools {
        assert!(which(bin).is_some(), "{pkg} installed but {bin} is missing");
    }
}

/// Installs Debian `packages` with apt-get (one at a time across threads);
/// panics unless running as root or if apt-get fails.
pub(crate) fn apt_install(packages: &[&str]) {
    static APT: Mutex<()> = Mutex::new(());
    let _guard = APT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        is_root(),
        "integration tests need the Debian packages {packages:?}; install them \
         (apt-get install -y {}) or run as root so the harness can",
        packages.join(" ")
    );
    eprintln!("pullauth-integration: installing {packages:?} with apt-get");
    let apt = |args: &[&str]| {
        let out = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run apt-get");
        assert!(
            out.status.success(),
            "apt-get {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    apt(&["update", "-qq"]);
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(packages);
    apt(&install);
}

/// Runs `cmd` with `stdin` as its input and returns its output; panics only
/// when the command cannot be started at all.
pub(crate) fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin was piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {cmd:?}: {e}"));
    let _ = writer.join();
    out
}

/// Runs `cmd` and returns its stdout, panicking with stderr when it fails.
pub(crate) fn run_ok(cmd: &mut Command, stdin: &[u8]) -> String {
    let out = run(cmd, stdin);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last `lines` lines of a log file, for panic messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `N` random bytes from /dev/urandom.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("cannot read /dev/urandom");
    bytes
}

/// A random string of `len` ASCII letters and digits (from /dev/urandom).
pub(crate) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut bytes = vec![0u8; len];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("cannot read /dev/urandom");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// Sends `GET path` over plain HTTP/1.1 to `addr`, optionally with Basic
/// credentials, and returns the response status code.
pub fn http_get_status(
    addr: &str,
    path: &str,
    basic: Option<(&str, &str)>,
) -> std::io::Result<u16> {
    use base64::Engine as _;
    let authorization = basic.map(|(user, password)| {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}")
    });
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    crate::http::request(
        crate::http::Target::Tcp(addr),
        "GET",
        path,
        &headers,
        b"",
        Duration::from_secs(10),
    )
    .map(|response| response.status)
}

/// Packs the contents of `dir` into the tarball `out`, every file owned by
/// root (as `docker import` wants an image's rootfs).
pub(crate) fn tar_dir(dir: &Path, out: &Path) {
    run_ok(
        Command::new("tar")
            .arg("--create")
            .arg("--file")
            .arg(out)
            .args(["--owner=0", "--group=0", "--numeric-owner", "--directory"])
            .arg(dir)
            .arg("."),
        b"",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("pullauth-it-123-registry-abc"), Some(123));
        assert_eq!(owner_pid("pullauth-it-dockerd-abc"), None);
        assert_eq!(owner_pid("other-123"), None);
    }
}
