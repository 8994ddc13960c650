//! Locating a freshly built `pullauth` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `pullauth` binary, built (once per test process) with
/// `cargo build -q -p pullauth` so that tests never run a stale one.
///
/// Found where cargo reports it put it (`CARGO_TARGET_DIR`, a configured
/// target directory and `CARGO_BUILD_TARGET` all work). Panics with cargo's output if the crate is
/// missing or does not build.
pub fn pullauth_bin() -> PathBuf {
    crate::require_opt_in();
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(|| build(false)) {
        Ok(path) => path.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// The release `pullauth` binary (`cargo build -q --release -p pullauth`),
/// built once per test process, for tests whose load a debug build cannot
/// keep up with (thousands of connections within the agent's 10 s header
/// timeout). Costs a release build on the first call.
pub fn pullauth_release_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(|| build(true)) {
        Ok(path) => path.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

fn build(release: bool) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // Cargo says where it put the binary: wherever CARGO_TARGET_DIR,
    // build.target-dir or CARGO_BUILD_TARGET send it.
    cmd.args(["build", "-q", "--message-format=json-render-diagnostics"]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .args(["-p", "pullauth", "--bin", "pullauth"])
        .current_dir(&root)
        .output()
        .map_err(|e| format!("cannot run {cargo:?} to build pullauth: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo build -p pullauth` failed ({}); the pullauth binary crate \
             (crates/pullauth) must exist and build:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = executable_from_cargo_messages(&String::from_utf8_lossy(&out.stdout), "pullauth")
        .ok_or_else(|| "cargo built pullauth but reported no executable for it".to_string())?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built pullauth but {} does not exist",
            bin.display()
        ))
    }
}

/// The executable cargo reported for the binary target `name` in the JSON
/// messages of `cargo build --message-format=json` (its `executable`
/// field, set only for binaries).
pub fn executable_from_cargo_messages(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
}

/// `pullauth SUBCOMMAND --env-file ENV_FILE ARGS...` with a clean
/// environment: only PATH, `DOCKER_HOST` and `env`.
pub fn pullauth_command(
    subcommand: &str,
    docker_host: &str,
    env_file: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(pullauth_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DOCKER_HOST", docker_host)
        .envs(env.iter().copied())
        .arg(subcommand)
        .arg("--env-file")
        .arg(env_file)
        .args(args);
    cmd
}
