//! Records the git commit for `--version` and `/v1/metadata`.

use std::process::Command;

fn main() {
    let hash = std::env::var("PULLAUTH_GIT_HASH")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=8", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        });
    println!(
        "cargo:rustc-env=PULLAUTH_GIT_HASH={}",
        hash.unwrap_or_else(|| "unknown".to_owned())
    );
    println!("cargo:rerun-if-env-changed=PULLAUTH_GIT_HASH");
    println!("cargo:rerun-if-changed=build.rs");
    // Ask git where HEAD and the branch refs live: in a worktree `.git` is
    // a file, and naming a path that does not exist would rebuild every time.
    let paths = Command::new("git")
        .args(["rev-parse", "--path-format=absolute"])
        .args(["--git-path", "HEAD", "--git-path", "refs/heads"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    for path in paths.lines().filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}
