//! Locating a freshly built `pullauth` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `pullauth` binary, built (once per test process) with
/// `cargo build -q -p pullauth` so that tests never run a stale one.
///
/// Respects `CARGO_TARGET_DIR`. Panics with cargo's output if the crate is
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
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // --target-dir makes the output location independent of cargo config.
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-q"]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .args(["-p", "pullauth", "--bin", "pullauth", "--target-dir"])
        .arg(&target)
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
    let profile = if release { "release" } else { "debug" };
    let bin = target.join(profile).join("pullauth");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built pullauth but {} does not exist",
            bin.display()
        ))
    }
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
