//! Docker credential helpers, consumed: `docker-credential-<name> get`
//! with the server URL on stdin and `{"Username","Secret"}` on stdout, as
//! the Docker CLI runs them. Bounded in time (the helper is killed when it
//! overruns), and never echoing what the helper printed: its stdout holds
//! the secret, and its stderr may.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pullauth_resolve::Credentials;
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// How long a helper may take to answer.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a helper's answer is reused for the same (helper, server URL).
/// Long enough that a burst of task submissions (10 tasks of 10 containers
/// of one image, and the engine pulls they share) asks the helper once;
/// short enough that a credential rotated in the helper's store is used
/// within half a minute. Answers live in memory only and are wiped when
/// they expire (the secret is a `SecretString`, zeroized on drop).
pub const HELPER_CACHE_TTL: Duration = Duration::from_secs(30);

/// What helpers print on exit 1 when they hold nothing for the server
/// (docker-credential-helpers' `credentials.ErrCredentialsNotFound`).
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// At most this much of a helper's output is read.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Why a helper gave no credentials. Messages name the helper and the
/// registry, never what the helper printed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HelperError {
    #[error("credential helper {program} was not found (needed for {server})")]
    NotInstalled { program: String, server: String },
    #[error("credential helper {program} could not be started for {server}: {reason}")]
    Spawn {
        program: String,
        server: String,
        reason: String,
    },
    #[error("helper {helper} has no credentials for {server}")]
    NotFound { helper: String, server: String },
    #[error(
        "credential helper {program} failed for {server} ({status}); its output is not shown, \
         as it may hold secrets"
    )]
    Failed {
        program: String,
        server: String,
        status: String,
    },
    #[error(
        "credential helper {program} did not answer for {server} within {seconds} s; it was killed"
    )]
    Timeout {
        program: String,
        server: String,
        seconds: u64,
    },
    #[error(
        "credential helper {program} answered for {server} with output that is not \
         {{\"Username\",\"Secret\"}} JSON (not shown)"
    )]
    BadOutput { program: String, server: String },
}

/// What one helper run answered.
pub type HelperAnswer = Result<Credentials, HelperError>;

/// A run shared by every caller that asks while it runs, and its answer,
/// kept for [`HelperCache::ttl`] if it gave credentials.
type Slot = Arc<OnceCell<(Instant, HelperAnswer)>>;

/// Helper answers by (helper, server URL): single flight (concurrent
/// callers share one run) plus a short-lived cache of successful answers.
/// A failure is shared only with the callers that waited for that run; the
/// next caller runs the helper again. Never persisted; expired answers are
/// dropped (and their secrets zeroized) at the next lookup.
#[derive(Debug)]
pub struct HelperCache {
    slots: Mutex<HashMap<(String, String), Slot>>,
    ttl: Duration,
}

impl Default for HelperCache {
    fn default() -> Self {
        HelperCache::new(HELPER_CACHE_TTL)
    }
}

impl HelperCache {
    /// A cache keeping successful answers for `ttl`.
    pub fn new(ttl: Duration) -> HelperCache {
        HelperCache {
            slots: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The answer for (`helper`, `server`): a fresh cached one, the one of
    /// the run in progress, or `run`'s (started now, shared with whoever
    /// asks meanwhile).
    pub async fn get_or_run<F, Fut>(&self, helper: &str, server: &str, run: F) -> HelperAnswer
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = HelperAnswer>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let ttl = self.ttl;
            slots.retain(|_, slot| match slot.get() {
                // A run in progress (or one whose caller went away: the
                // next caller runs it).
                None => true,
                Some((at, Ok(_))) => now.duration_since(*at) < ttl,
                Some((_, Err(_))) => false,
            });
            Arc::clone(
                slots
                    .entry((helper.to_owned(), server.to_owned()))
                    .or_default(),
            )
        };
        let (_, answer) = slot
            .get_or_init(|| async {
                let answer = run().await;
                (Instant::now(), answer)
            })
            .await;
        answer.clone()
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Tries to start a helper that is "busy" (`ETXTBSY`).
const BUSY_ATTEMPTS: u32 = 5;

/// Starts `command get`. A program whose file is still open for writing
/// somewhere (just written by configuration management, or its descriptor
/// held for a moment by another process between `fork` and `exec`) cannot
/// be executed yet: that is transient, so it is tried again a few times,
/// 10 ms, 20 ms, ... apart (at most 100 ms in all).
async fn spawn_helper(command: &Path) -> std::io::Result<tokio::process::Child> {
    let mut attempt = 1;
    loop {
        let spawned = Command::new(command)
            .arg("get")
            // The helper needs no part of pullauth's own configuration, and
            // this variable holds every configured password.
            .env_remove("ECS_ENGINE_AUTH_DATA")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && attempt < BUSY_ATTEMPTS =>
            {
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `docker-credential-<helper> get` for `server` within `timeout`, the
/// program taken from `dir` when given, else found on PATH.
pub async fn get_in(
    dir: Option<&Path>,
    helper: &str,
    server: &str,
    timeout: Duration,
) -> Result<Credentials, HelperError> {
    let program = format!("docker-credential-{helper}");
    let command = match dir {
        Some(dir) => dir.join(&program),
        None => PathBuf::from(&program),
    };
    let mut child = match spawn_helper(&command).await {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HelperError::NotInstalled {
                program,
                server: server.to_owned(),
            });
        }
        Err(e) => {
            return Err(HelperError::Spawn {
                program,
                server: server.to_owned(),
                reason: e.kind().to_string(),
            });
        }
    };
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().map(|s| s.take(MAX_OUTPUT));
    let mut stderr = child.stderr.take().map(|s| s.take(MAX_OUTPUT));
    let run = async {
        if let Some(stdin) = stdin.as_mut() {
            // A helper that exits without reading stdin is judged by its exit.
            let _ = stdin.write_all(server.as_bytes()).await;
            let _ = stdin.shutdown().await;
        }
        drop(stdin.take());
        // The helper's answer holds the secret: wiped when dropped.
        let mut out = Zeroizing::new(Vec::new());
        let mut err = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(timeout, run).await {
        Ok(done) => done,
        Err(_) => {
            // Dropping the future drops the child: kill_on_drop kills it.
            return Err(HelperError::Timeout {
                program,
                server: server.to_owned(),
                seconds: timeout.as_secs(),
            });
        }
    };
    let status = status.map_err(|e| HelperError::Spawn {
        program: program.clone(),
        server: server.to_owned(),
        reason: e.kind().to_string(),
    })?;
    if !status.success() {
        let said = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(NOT_FOUND);
        if said(&out) || said(&err) {
            return Err(HelperError::NotFound {
                helper: helper.to_owned(),
                server: server.to_owned(),
            });
        }
        return Err(HelperError::Failed {
            program,
            server: server.to_owned(),
            status: status.to_string(),
        });
    }
    let bad = || HelperError::BadOutput {
        program: program.clone(),
        server: server.to_owned(),
    };
    let answer: Answer = serde_json::from_slice(&out).map_err(|_| bad())?;
    if answer.secret.is_empty() {
        return Err(HelperError::NotFound {
            helper: helper.to_owned(),
            server: server.to_owned(),
        });
    }
    Ok(if answer.username == "<token>" {
        Credentials {
            identity_token: Some(SecretString::from(answer.secret)),
            ..Credentials::default()
        }
    } else {
        Credentials::basic(answer.username, answer.secret)
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use secrecy::ExposeSecret;

    use super::*;

    /// Writes `docker-credential-<name>` running `script` into `dir`.
    fn fake(dir: &std::path::Path, name: &str, script: &str) {
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write helper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// A run that counts itself and answers `answer` after `delay`.
    async fn counted(
        runs: &std::sync::atomic::AtomicUsize,
        delay: Duration,
        answer: HelperAnswer,
    ) -> HelperAnswer {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        answer
    }

    fn ok() -> HelperAnswer {
        Ok(Credentials::basic("alice", "canary-pw"))
    }

    // Concurrent callers share one run; the answer is reused until the TTL
    // has passed, then the helper runs again.
    #[tokio::test(start_paused = true)]
    async fn cache_shares_a_run_and_expires_after_the_ttl() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache = HelperCache::default();
        let runs = AtomicUsize::new(0);
        let ask = || cache.get_or_run("h", "r.io", || counted(&runs, Duration::from_secs(1), ok()));
        let answers = futures_util::future::join_all((0..50).map(|_| ask())).await;
        assert!(answers.iter().all(|a| {
            a.as_ref()
                .is_ok_and(|c| c.username.as_deref() == Some("alice"))
        }));
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        tokio::time::advance(HELPER_CACHE_TTL - Duration::from_secs(2)).await;
        ask().await.expect("cached");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "reused within the TTL");

        tokio::time::advance(Duration::from_secs(2)).await;
        ask().await.expect("fresh");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "run again after the TTL");

        // Keyed by helper and server URL.
        cache
            .get_or_run("h", "q.io", || counted(&runs, Duration::ZERO, ok()))
            .await
            .expect("answer");
        cache
            .get_or_run("g", "r.io", || counted(&runs, Duration::ZERO, ok()))
            .await
            .expect("answer");
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    // A failure is shared by the callers that waited for that run, but not
    // cached: the next caller runs the helper again.
    #[tokio::test(start_paused = true)]
    async fn cache_does_not_keep_failures() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache = HelperCache::default();
        let runs = AtomicUsize::new(0);
        let failed = || {
            Err(HelperError::NotFound {
                helper: "h".into(),
                server: "r.io".into(),
            })
        };
        let ask = || {
            cache.get_or_run("h", "r.io", || {
                counted(&runs, Duration::from_secs(1), failed())
            })
        };
        let answers = futures_util::future::join_all((0..10).map(|_| ask())).await;
        assert!(answers.iter().all(Result::is_err));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(ask().await.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn helpers_answer_fail_and_time_out_without_echoing_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake(
            dir.path(),
            "ok",
            r#"read s; [ "$s" = "reg.example:5000" ] || exit 3; echo '{"ServerURL":"x","Username":"alice","Secret":"canary-pw"}'"#,
        );
        fake(
            dir.path(),
            "tok",
            r#"echo '{"Username":"<token>","Secret":"canary-tok"}'"#,
        );
        fake(dir.path(), "none", &format!("echo '{NOT_FOUND}'; exit 1"));
        fake(dir.path(), "boom", "echo canary-leak >&2; exit 2");
        fake(dir.path(), "junk", "echo canary-junk");
        fake(dir.path(), "slow", "sleep 30");
        let server = "reg.example:5000";
        let t = Duration::from_secs(5);

        let ok = get_in(Some(dir.path()), "ok", server, t)
            .await
            .expect("answer");
        assert_eq!(ok.username.as_deref(), Some("alice"));
        assert_eq!(
            ok.password.as_ref().map(|p| p.expose_secret()),
            Some("canary-pw")
        );

        let tok = get_in(Some(dir.path()), "tok", server, t)
            .await
            .expect("answer");
        assert!(tok.username.is_none());
        assert_eq!(tok.kind(), "identity token");

        let cases = [
            (
                "none",
                "helper none has no credentials for reg.example:5000",
            ),
            ("boom", "docker-credential-boom failed for reg.example:5000"),
            ("junk", "not {\"Username\",\"Secret\"} JSON"),
            ("absent", "docker-credential-absent was not found"),
        ];
        for (helper, want) in cases {
            let e = get_in(Some(dir.path()), helper, server, t)
                .await
                .expect_err(helper)
                .to_string();
            assert!(e.contains(want), "{helper}: {e}");
            assert!(!e.contains("canary"), "{helper}: {e}");
        }
        let started = std::time::Instant::now();
        let e = get_in(Some(dir.path()), "slow", server, Duration::from_millis(300))
            .await
            .expect_err("slow")
            .to_string();
        assert!(e.contains("did not answer") && e.contains("killed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
