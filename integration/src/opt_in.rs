//! The integration tests start dockerd and registries and may install
//! Debian packages, so they run only when asked: `integration/test` (which
//! `.ci/run` calls) asks by exporting `PULLAUTH_INTEGRATION=1`. A plain
//! `cargo test` then runs only unit, property and in-process tests.
//!
//! Every entry of the harness that installs or starts something calls
//! [`require_opt_in`] first; it is the one place that decides.

use std::io::Write;
use std::sync::Mutex;

/// Set to `1` to run the integration tests.
pub const OPT_IN_ENV: &str = "PULLAUTH_INTEGRATION";

/// The line a skipped test binary prints.
pub const SKIPPED: &str = "skipped: set PULLAUTH_INTEGRATION=1 or run integration/test";

/// Returns when `PULLAUTH_INTEGRATION=1`. When it is unset or empty, ends
/// the whole test process with status 0 after one line on stderr: no test
/// of this binary is then reported as passed, because libtest never gets to
/// print its summary (a test that returned early would count as "ok").
/// Any other value is a mistake and fails the test.
pub fn require_opt_in() {
    match std::env::var(OPT_IN_ENV).as_deref() {
        Ok("1") => {}
        Ok("") | Err(std::env::VarError::NotPresent) => skip(),
        Ok(other) => panic!(
            "{OPT_IN_ENV}={other:?}: set it to 1 to run the integration tests, or unset it to skip them"
        ),
        Err(std::env::VarError::NotUnicode(_)) => {
            panic!("{OPT_IN_ENV} is not UTF-8: set it to 1 or unset it")
        }
    }
}

fn skip() -> ! {
    // Held until the process exits: other test threads arriving here wait,
    // so the line is printed once.
    static ONCE: Mutex<()> = Mutex::new(());
    let _held = ONCE.lock();
    let binary = std::env::args().next().unwrap_or_default();
    let binary = binary.rsplit('/').next().unwrap_or_default();
    // Straight to the stderr file descriptor: libtest captures `eprintln!`
    // inside a test and would drop it when the process exits.
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "pullauth-integration: {binary}: {SKIPPED} (these tests start dockerd and registries \
         and may install Debian packages); none of its tests ran"
    );
    let _ = stderr.flush();
    std::process::exit(0)
}
