//! Locating a freshly built `pullauth` binary.
//!
//! Every binary is built with `cargo build --message-format=json` and found
//! where cargo says it put it, so `CARGO_TARGET_DIR`, a target directory set
//! in a cargo config, and `CARGO_BUILD_TARGET` all work.
//!
//! `integration/test` builds the whole suite once, for the host's target
//! triple with `+crt-static` (see [`STATIC_RUSTFLAGS`]), and names the
//! `pullauth` executable of that build in [`TEST_BIN_ENV`]. The tests run
//! that binary, and the agent's container image ([`static_pullauth_bin`])
//! holds it, so the suite compiles pullauth and its dependencies once. (A
//! separate `cargo build -p pullauth` would compile every dependency again:
//! without the workspace's dev-dependencies, cargo unifies their features
//! differently.) Without the variable, the tests build what they need.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The flags the Dockerfile builds the image's binary with that change how
/// it runs: glibc linked statically, relative relocations packed (RELR).
/// integration/test sets the same. (The Dockerfile's third, identical code
/// folding, only makes the release binary smaller.)
pub const STATIC_RUSTFLAGS: &str =
    "-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs";

/// The `pullauth` executable the suite's own build produced
/// (`integration/test` sets it); tests use it instead of building one.
pub const TEST_BIN_ENV: &str = "PULLAUTH_TEST_BIN";

/// The binary named by [`TEST_BIN_ENV`], if set; panics when it names no
/// file (a stale or mistyped path must not silently fall back).
fn suite_binary() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(TEST_BIN_ENV)?);
    assert!(
        path.is_file(),
        "{TEST_BIN_ENV}={} is not a file; unset it to let the tests build pullauth",
        path.display()
    );
    Some(path)
}

/// Whether `bin` is statically linked, as `ldd` reports it.
pub fn is_static(bin: &Path) -> bool {
    Command::new("ldd").arg(bin).output().is_ok_and(|out| {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        text.contains("not a dynamic executable") || text.contains("statically linked")
    })
}

/// The `pullauth` binary, built (once per test process) with
/// `cargo build -p pullauth` so that tests never run a stale one.
///
/// Panics with cargo's output if the crate is missing or does not build.
pub fn pullauth_bin() -> PathBuf {
    crate::require_opt_in();
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(|| suite_binary().map_or_else(|| build(&[], &[]), Ok)) {
        Ok(path) => path.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// A statically linked `pullauth` for the agent's `FROM scratch` container
/// image, and how long building it took (zero when the suite's own build
/// already was static).
///
/// Under `integration/test` this is the suite's own binary, which is
/// static. Otherwise it is built as the Dockerfile builds it (`--target
/// <host triple>`, `+crt-static`) but in the debug profile: one debug build
/// instead of a release one.
pub fn static_pullauth_bin() -> (PathBuf, Duration) {
    crate::require_opt_in();
    static BIN: OnceLock<Result<(PathBuf, Duration), String>> = OnceLock::new();
    let built = BIN.get_or_init(|| {
        if let Some(bin) = suite_binary().filter(|bin| is_static(bin)) {
            return Ok((bin, Duration::ZERO));
        }
        let triple = host_triple()?;
        let var = target_rustflags_var(&triple);
        let started = Instant::now();
        let bin = build(&["--target", &triple], &[(var.as_str(), STATIC_RUSTFLAGS)])?;
        Ok((bin, started.elapsed()))
    });
    match built {
        Ok(found) => found.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// `CARGO_TARGET_<TRIPLE>_RUSTFLAGS`: flags for the target only, so build
/// scripts and proc macros stay dynamically linked.
pub fn target_rustflags_var(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        triple.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// The host's target triple, from `rustc -vV`.
pub fn host_triple() -> Result<String, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run {rustc:?} -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| format!("{rustc:?} -vV printed no host triple"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

/// `cargo build -p pullauth --bin pullauth ARGS` with `env`, returning the
/// executable cargo reports.
fn build(args: &[&str], env: &[(&str, &str)]) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "-q",
        "-p",
        "pullauth",
        "--bin",
        "pullauth",
        "--message-format=json-render-diagnostics",
    ])
    .args(args)
    .envs(env.iter().copied())
    .current_dir(workspace_root());
    if !env.is_empty() {
        // These override CARGO_TARGET_<TRIPLE>_RUSTFLAGS.
        cmd.env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cargo:?} to build pullauth: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo build -p pullauth {}` failed ({}); the pullauth binary crate \
             (crates/pullauth) must exist and build:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = executable_from_messages(&String::from_utf8_lossy(&out.stdout), "pullauth")
        .ok_or_else(|| {
            format!(
                "cargo built pullauth but reported no executable for it:\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo reported {} but it does not exist",
            bin.display()
        ))
    }
}

/// The `executable` of the `compiler-artifact` message for the binary
/// target `name` in cargo's JSON messages (one object per line).
pub fn executable_from_messages(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_binary_among_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"pullauth","kind":["lib"]},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"other","kind":["bin"]},"executable":"/t/other"}"#,
            "\n",
            "not json\n",
            r#"{"reason":"compiler-artifact","target":{"name":"pullauth","kind":["bin"]},"executable":"/t/x86_64-unknown-linux-gnu/debug/pullauth"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable_from_messages(messages, "pullauth"),
            Some(PathBuf::from("/t/x86_64-unknown-linux-gnu/debug/pullauth"))
        );
        assert_eq!(executable_from_messages(messages, "missing"), None);
    }

    #[test]
    fn target_flags_variable_is_cargos_spelling() {
        assert_eq!(
            target_rustflags_var("x86_64-unknown-linux-gnu"),
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS"
        );
    }
}
