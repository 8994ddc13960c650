//! Long-lived Python processes that run the tests' boto3 scripts
//! ([`crate::moto::Moto::boto3`]).
//!
//! Starting the venv's Python and importing boto3 costs about 0.75 s of CPU
//! (`python -c 'import boto3'`, 0.72 s). The suite runs some 90 scripts: one
//! interpreter each made boto3 the largest consumer of CPU in the integration
//! tests (72 of about 190 CPU seconds, counted with process accounting). A
//! runner imports boto3 once and then runs script after script, each in a
//! fresh namespace, so one script's variables never reach the next.
//!
//! Runners are pooled: a call takes an idle one or starts another, so tests
//! running at the same time never wait for each other's scripts. A runner
//! reads one JSON request per line on stdin and answers one JSON line on
//! stdout; when the test process ends, its stdin closes and it exits.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

/// How long one script may run. The tests' scripts create and read a few
/// resources against a loopback moto and take well under a second.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);

/// The runner's loop. Every script sees `boto3`, `json`, `sys` and a
/// `client(name, **kw)` bound to the request's endpoint and keys (region
/// us-east-1), as a separate interpreter with that prelude did.
const RUNNER: &str = r#"
import boto3, contextlib, io, json, sys, traceback

# The requests come on stdin; a script reading stdin reads nothing, as the
# separate interpreter with stdin from /dev/null did.
requests = sys.stdin
sys.stdin = io.StringIO()
answers = sys.stdout
for line in requests:
    request = json.loads(line)

    def client(name, _request=request, **kw):
        return boto3.client(
            name,
            endpoint_url=_request["endpoint"],
            region_name="us-east-1",
            aws_access_key_id=_request["key"],
            aws_secret_access_key=_request["secret"],
            **kw,
        )

    out, err = io.StringIO(), io.StringIO()
    ok = True
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(request["script"], {"__name__": "__main__", "boto3": boto3,
                                     "json": json, "sys": sys, "client": client})
    except SystemExit as e:
        ok = e.code in (None, 0)
        if not ok:
            err.write(f"exit status {e.code}\n")
    except BaseException:
        ok = False
        err.write(traceback.format_exc())
    answers.write(json.dumps({"ok": ok, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
    answers.flush()
"#;

/// One Python process running scripts.
struct Runner {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
}

impl Runner {
    fn start(python: &std::path::Path) -> Runner {
        let mut child = Command::new(python)
            .args(["-c", RUNNER])
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot run the venv's python");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, answers) = mpsc::channel();
        thread::Builder::new()
            .name("pullauth-it-boto3".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("cannot start the boto3 reader thread");
        Runner {
            child,
            stdin,
            answers,
        }
    }

    /// Runs one script: `Ok(Ok(stdout))`, `Ok(Err(stderr))` when the script
    /// failed, `Err(what)` when the runner itself is unusable.
    fn run(&mut self, request: &Value) -> Result<Result<String, String>, String> {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("cannot send the script to the boto3 runner: {e}"))?;
        let answer = match self.answers.recv_timeout(SCRIPT_LIMIT) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "the boto3 script did not finish within {SCRIPT_LIMIT:?}"
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string());
                return Err(format!("the boto3 runner exited ({status:?})"));
            }
        };
        let answer: Value = serde_json::from_str(&answer)
            .map_err(|e| format!("the boto3 runner answered {answer:?}: {e}"))?;
        let text = |field: &str| answer[field].as_str().unwrap_or_default().to_owned();
        Ok(if answer["ok"] == true {
            Ok(text("stdout"))
        } else {
            Err(text("stderr"))
        })
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Idle runners.
static IDLE: Mutex<Vec<Runner>> = Mutex::new(Vec::new());

/// Runs `script` against `endpoint` with the access key `(key, secret)`;
/// returns its stdout, or its stderr (the traceback) as the error.
///
/// # Panics
/// When no runner can be started or a runner stops answering.
pub(crate) fn run(
    endpoint: &str,
    (key, secret): (&str, &str),
    script: &str,
) -> Result<String, String> {
    let request = json!({"endpoint": endpoint, "key": key, "secret": secret, "script": script});
    let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut runner = idle.unwrap_or_else(|| Runner::start(&crate::moto::venv_python()));
    match runner.run(&request) {
        Ok(outcome) => {
            IDLE.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(runner);
            outcome
        }
        // The runner is dropped (killed) here.
        Err(what) => panic!("{what}:\n{script}"),
    }
}
