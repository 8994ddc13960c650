//! What one `pullauth` run printed and how it ended, with the assertions
//! the test files share.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The exit code and output of a finished `pullauth` process.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A pullauth process that runs and has not been waited for (so its pid is
/// still its own): what [`Outcome::run_bounded_with`] and
/// [`crate::agent::AgentSpec::start_with`] hand to the caller meanwhile.
#[derive(Debug)]
pub struct Spawned {
    pub(crate) pid: u32,
}

impl Spawned {
    /// Sends SIGHUP.
    pub fn hangup(&self) {
        crate::sys::send_signal(self.pid, libc::SIGHUP).expect("cannot send SIGHUP");
    }
}

impl Outcome {
    /// Runs `cmd` to the end with `stdin`, killing it after `timeout`
    /// (which fails the test): a hung pullauth must not hang the suite.
    pub fn run_bounded(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Outcome {
        Outcome::run_bounded_with(cmd, stdin, timeout, |_| {})
    }

    /// [`Outcome::run_bounded`], calling `meanwhile` once the process runs
    /// (to signal it, say); the time limit counts from the start,
    /// `meanwhile` included.
    pub fn run_bounded_with(
        cmd: &mut Command,
        stdin: &[u8],
        timeout: Duration,
        meanwhile: impl FnOnce(&Spawned),
    ) -> Outcome {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let mut input = child.stdin.take().expect("stdin is piped");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout is piped")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr is piped")));
        let deadline = Instant::now() + timeout;
        // A panic meanwhile must not leave the process running.
        let pid = child.id();
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            meanwhile(&Spawned { pid });
        })) {
            let _ = child.kill();
            let _ = child.wait();
            std::panic::resume_unwind(panic);
        }
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("cannot wait for pullauth") {
                break status;
            }
            if Instant::now() > deadline {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("cannot reap pullauth");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = writer.join();
        let outcome = Outcome {
            code: status.code(),
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        };
        assert!(
            !timed_out,
            "pullauth did not finish within {timeout:?}: {cmd:?}\n{outcome:?}"
        );
        outcome
    }

    /// From a finished `Command::output()`.
    pub fn from_output(output: std::process::Output) -> Outcome {
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn assert_code(&self, code: i32) -> &Outcome {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// No Rust panic message or backtrace anywhere in the output.
    pub fn assert_no_panic(&self) -> &Outcome {
        for text in [&self.stdout, &self.stderr] {
            assert!(
                !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
                "pullauth panicked:\n{text}"
            );
        }
        self
    }

    /// None of `needles` appears in stdout or stderr.
    pub fn assert_no_secret(&self, needles: &[String]) -> &Outcome {
        for needle in needles {
            for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
                assert!(
                    !text.contains(needle.as_str()),
                    "a secret form leaked to {name}:\n{}",
                    text.replace(needle.as_str(), "<LEAKED>")
                );
            }
        }
        self
    }

    pub fn assert_not_retried(&self) -> &Outcome {
        assert!(
            !self.stderr.contains("retrying"),
            "the failure must not be retried:\n{}",
            self.stderr
        );
        self
    }

    pub fn assert_stderr_has(&self, needles: &[&str]) -> &Outcome {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}:\n{}",
                self.stderr
            );
        }
        self
    }

    pub fn expect(&self, what: &str, code: i32, needles: &[&str]) -> &Outcome {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: expected exit {code}\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        let all = format!("{}{}", self.stdout, self.stderr);
        for needle in needles {
            assert!(
                all.contains(needle),
                "{what}: output lacks {needle:?}\n--- stdout\n{}--- stderr\n{}",
                self.stdout,
                self.stderr
            );
        }
        self
    }

    /// The `--json` lines on stdout.
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l:?}"))
            })
            .collect()
    }

    /// The last non-empty line of stderr.
    pub fn last_stderr_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
    }

    /// The attempt numbers of the "attempt N failed (...); retrying in Xs"
    /// progress lines, in order.
    pub fn retried_attempts(&self) -> Vec<u32> {
        self.stderr
            .lines()
            .filter(|l| l.contains("retrying in"))
            .filter_map(|l| {
                let rest = &l[l.find("attempt ")? + "attempt ".len()..];
                let (n, after) = rest.split_once(' ')?;
                after.starts_with("failed").then(|| n.parse().ok())?
            })
            .collect()
    }

    /// The only `--json` line.
    pub fn single(&self) -> Value {
        let mut lines = self.json();
        assert_eq!(lines.len(), 1, "expected one JSON line:\n{}", self.stdout);
        lines.remove(0)
    }
}
