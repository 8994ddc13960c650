//! pullauth as a Docker credential helper: a Docker CLI config with
//! `"credsStore": "pullauth"` (or `credHelpers`) and `docker-credential-pullauth`
//! (a symlink to the freshly built pullauth) on PATH makes a real `docker
//! pull` from an htpasswd registry authenticate as the ecs.config user (the
//! registry's log says who). Also the protocol run by hand: `get`, `list`,
//! `store`, `erase`, a namespace-only key, and a client that never closes
//! stdin.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pullauth_integration::agent::{random_token, repo_requests, scratch_dir, secret_needles};
use pullauth_integration::{Harness, Outcome, Registry, pullauth_bin};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// What Docker's helpers print, with exit 1, when they hold nothing.
const NOT_FOUND: &str = "credentials not found in native keychain";

/// A directory holding `docker-credential-pullauth` -> the pullauth binary.
fn helper_dir() -> tempfile::TempDir {
    let dir = scratch_dir("credential-helper-bin");
    std::os::unix::fs::symlink(
        pullauth_bin(),
        dir.path().join("docker-credential-pullauth"),
    )
    .expect("symlink docker-credential-pullauth");
    dir
}

/// PATH with `dir` first.
fn path_with(dir: &Path) -> String {
    let rest = std::env::var("PATH").unwrap_or_default();
    format!("{}:{rest}", dir.display())
}

/// Writes `dir/name` as an ecs.config holding `data` (docker type).
fn ecs_config(dir: &Path, name: &str, data: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={data}\n"),
    )
    .expect("write ecs.config");
    path
}

/// A Docker CLI config dir whose config.json is `config`.
fn cli_config(config: &Value) -> tempfile::TempDir {
    let dir = scratch_dir("credential-helper-cli");
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config.json");
    dir
}

/// `docker --config CLI pull IMAGE`, with the helper on PATH and
/// `PULLAUTH_ENV_FILE` naming `env_file` (Docker passes its environment to
/// the helper).
fn docker_pull(h: &Harness, cli: &Path, bin: &Path, env_file: &Path, image: &str) -> Outcome {
    Outcome::run_bounded(
        h.docker()
            .arg("--config")
            .arg(cli)
            .env("PATH", path_with(bin))
            .env("PULLAUTH_ENV_FILE", env_file)
            .args(["pull", "--quiet", image]),
        b"",
        RUN_TIMEOUT,
    )
}

/// `docker-credential-pullauth ACTION` run as Docker runs it: no other
/// arguments, the configuration from `PULLAUTH_ENV_FILE`.
fn helper(bin: &Path, env_file: &Path, action: &str) -> Command {
    let mut cmd = Command::new(bin.join("docker-credential-pullauth"));
    cmd.env_clear()
        .env("PATH", path_with(bin))
        .env("PULLAUTH_ENV_FILE", env_file)
        .arg(action);
    cmd
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Outcome {
    Outcome::run_bounded(cmd, stdin, Duration::from_secs(30))
}

/// Asserts that no form of `secret` is on stderr.
fn assert_no_secret_on_stderr(outcome: &Outcome, secret: &str) {
    for needle in secret_needles(secret) {
        assert!(
            !outcome.stderr.contains(&needle),
            "stderr holds a secret:\n{}",
            outcome.stderr.replace(&needle, "<LEAKED>")
        );
    }
}

/// Asserts the registry saw requests on `repo` after `mark`, every
/// authenticated one as `user`.
fn assert_pulled_as(registry: &Registry, mark: usize, repo: &str, user: &str) {
    let requests = repo_requests(registry, mark, repo);
    let users: Vec<&str> = requests.iter().filter_map(|r| r.user.as_deref()).collect();
    assert!(
        !users.is_empty() && users.iter().all(|u| *u == user),
        "the registry saw {requests:?}"
    );
}

// Proves `docker pull` with {"credsStore":"pullauth"} (and with credHelpers) authenticates as the ecs.config user (registry log), that a wrong password or no key for the host makes the pull fail (the registry refuses anonymous pulls), and that no form of the password reaches the CLI's or the helper's stderr.
#[test]
fn docker_pull_with_creds_store_pullauth_uses_the_ecs_config_user() {
    let h = Harness::get();
    let password = format!("dora-{}", random_token(20));
    let registry = Harness::registry_with(&[("dora", &password)]);
    let repo = format!("credential-helper-{}", std::process::id());
    h.push_fixture(&registry, &repo, "1", ("dora", &password));
    let image = registry.image_ref(&repo, "1");
    h.remove_local(&image);

    let bin = helper_dir();
    let dir = scratch_dir("credential-helper");
    let good = ecs_config(
        dir.path(),
        "good.config",
        &serde_json::json!({ registry.addr(): { "username": "dora", "password": password } }),
    );
    let store = cli_config(&serde_json::json!({ "auths": {}, "credsStore": "pullauth" }));

    let mark = registry.log_mark();
    let pulled = docker_pull(h, store.path(), bin.path(), &good, &image);
    pulled
        .assert_code(0)
        .assert_no_panic()
        .assert_no_secret(&secret_needles(&password));
    assert_pulled_as(&registry, mark, &repo, "dora");
    h.remove_local(&image);

    // credHelpers naming the registry works the same way.
    let helpers = cli_config(&serde_json::json!({
        "auths": {},
        "credHelpers": { registry.addr(): "pullauth" },
    }));
    let mark = registry.log_mark();
    docker_pull(h, helpers.path(), bin.path(), &good, &image)
        .assert_code(0)
        .assert_no_secret(&secret_needles(&password));
    assert_pulled_as(&registry, mark, &repo, "dora");
    h.remove_local(&image);

    // A wrong password: the registry rejects it, and the pull fails.
    let wrong_password = format!("wrong-{}", random_token(20));
    let wrong = ecs_config(
        dir.path(),
        "wrong.config",
        &serde_json::json!({ registry.addr(): { "username": "dora", "password": wrong_password } }),
    );
    let failed = docker_pull(h, store.path(), bin.path(), &wrong, &image);
    assert_ne!(failed.code, Some(0), "{failed:?}");
    // The helper answered; the registry said no.
    assert!(
        !failed.stderr.contains("error getting credentials"),
        "{}",
        failed.stderr
    );
    failed
        .assert_no_secret(&secret_needles(&password))
        .assert_no_secret(&secret_needles(&wrong_password));
    assert!(h.local_image_id(&image).is_none());

    // No key for this host: the helper says "not found", Docker pulls
    // anonymously, and the registry refuses.
    let other = ecs_config(
        dir.path(),
        "other.config",
        &serde_json::json!({ "other.example.com": { "username": "dora", "password": password } }),
    );
    let mark = registry.log_mark();
    let failed = docker_pull(h, store.path(), bin.path(), &other, &image);
    assert_ne!(failed.code, Some(0), "{failed:?}");
    assert!(
        !failed.stderr.contains("error getting credentials")
            && failed.stderr.contains("no basic auth credentials"),
        "{}",
        failed.stderr
    );
    failed.assert_no_secret(&secret_needles(&password));
    let requests = repo_requests(&registry, mark, &repo);
    assert!(
        requests.iter().all(|r| r.user.is_none()),
        "no request may authenticate: {requests:?}"
    );
    assert!(h.local_image_id(&image).is_none());
}

// Proves the protocol run by hand as Docker runs it: `get` answers {"ServerURL","Username","Secret"} with exit 0 for a host key (bare host and https:// forms), prints exactly the not-found line with exit 1 for an unknown host and for a namespace-only key (with a stderr note saying why), `list` maps server URLs to usernames without secrets, `store`/`erase` exit 1 saying to edit ecs.config, a bad config exits 2, and no secret is ever on stderr.
#[test]
fn helper_protocol_by_hand() {
    pullauth_integration::require_opt_in();
    let password = format!("Canary-{}", random_token(20));
    let bin = helper_dir();
    let dir = scratch_dir("credential-helper-protocol");
    let config = ecs_config(
        dir.path(),
        "ecs.config",
        &serde_json::json!({
            "registry.example.com:5000": { "username": "ops", "password": password },
            "https://index.docker.io/v1/": { "username": "hubuser", "password": password },
            "scoped.example.com/team": { "username": "team", "password": password },
        }),
    );

    for server in [
        "registry.example.com:5000",
        "https://registry.example.com:5000",
        "https://registry.example.com:5000/v2/\n",
    ] {
        let got = run(&mut helper(bin.path(), &config, "get"), server.as_bytes());
        got.assert_code(0).assert_no_panic();
        assert_no_secret_on_stderr(&got, &password);
        let answer: Value = serde_json::from_str(&got.stdout).expect("get prints JSON");
        assert_eq!(answer["ServerURL"], server.trim());
        assert_eq!(answer["Username"], "ops");
        assert_eq!(answer["Secret"], password.as_str());
    }
    let hub = run(
        &mut helper(bin.path(), &config, "get"),
        b"https://index.docker.io/v1/",
    );
    hub.assert_code(0);
    let answer: Value = serde_json::from_str(&hub.stdout).expect("get prints JSON");
    assert_eq!(answer["Username"], "hubuser");

    let unknown = run(
        &mut helper(bin.path(), &config, "get"),
        b"unknown.example.com",
    );
    unknown.assert_code(1).assert_no_panic();
    assert_eq!(unknown.stdout, format!("{NOT_FOUND}\n"));
    assert_no_secret_on_stderr(&unknown, &password);

    let scoped = run(
        &mut helper(bin.path(), &config, "get"),
        b"scoped.example.com",
    );
    scoped.assert_code(1).assert_no_panic();
    assert_eq!(scoped.stdout, format!("{NOT_FOUND}\n"));
    scoped.assert_stderr_has(&[
        "scoped.example.com has keys limited to a namespace (\"scoped.example.com/team\")",
        "the protocol passes only the server URL",
    ]);
    assert_no_secret_on_stderr(&scoped, &password);

    let listed = run(&mut helper(bin.path(), &config, "list"), b"");
    listed
        .assert_code(0)
        .assert_no_panic()
        .assert_no_secret(&secret_needles(&password));
    let listed: Value = serde_json::from_str(&listed.stdout).expect("list prints JSON");
    assert_eq!(
        listed,
        serde_json::json!({
            "registry.example.com:5000": "ops",
            "https://index.docker.io/v1/": "hubuser",
        })
    );

    let stored = serde_json::json!({
        "ServerURL": "registry.example.com:5000",
        "Username": "ops",
        "Secret": password,
    });
    for (action, input) in [
        ("store", stored.to_string()),
        ("erase", "registry.example.com:5000".to_owned()),
    ] {
        let refused = run(&mut helper(bin.path(), &config, action), input.as_bytes());
        refused
            .assert_code(1)
            .assert_no_panic()
            .assert_no_secret(&secret_needles(&password))
            .assert_stderr_has(&["edit ECS_ENGINE_AUTH_DATA in", "ecs.config"]);
        assert!(
            refused.stdout.contains("edit ECS_ENGINE_AUTH_DATA in"),
            "Docker quotes stdout: {}",
            refused.stdout
        );
    }

    // A broken configuration is exit 2, whichever command.
    let broken = dir.path().join("broken.config");
    std::fs::write(
        &broken,
        format!("ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={{\"r.example.com\":{{\"password\":\"{password}\"}}}}\n"),
    )
    .expect("write broken config");
    let bad = run(&mut helper(bin.path(), &broken, "get"), b"r.example.com");
    bad.assert_code(2)
        .assert_no_panic()
        .assert_no_secret(&secret_needles(&password));
    bad.assert_stderr_has(&["ECS_ENGINE_AUTH_DATA"]);

    // At debug level too, nothing secret on stderr.
    let debug = run(
        helper(bin.path(), &config, "get").env("ECS_LOGLEVEL", "debug"),
        b"registry.example.com:5000",
    );
    debug.assert_code(0);
    assert_no_secret_on_stderr(&debug, &password);
    assert!(
        debug.stderr.contains("answering with the host-level key"),
        "{}",
        debug.stderr
    );

    // `pullauth credential-helper` is the same command under its own name.
    let direct = run(
        Command::new(pullauth_bin())
            .env_clear()
            .args(["credential-helper", "--env-file"])
            .arg(&config)
            .arg("list"),
        b"",
    );
    direct.assert_code(0);
    assert!(direct.stdout.contains("\"ops\""), "{}", direct.stdout);
}

// Proves `get` from a client that writes nothing and never closes stdin gives up within its 10 s limit with exit 2 instead of hanging.
#[test]
fn get_gives_up_on_a_stdin_that_never_closes() {
    pullauth_integration::require_opt_in();
    let bin = helper_dir();
    let dir = scratch_dir("credential-helper-stdin");
    let config = ecs_config(
        dir.path(),
        "ecs.config",
        &serde_json::json!({ "registry.example.com": { "username": "u", "password": "p" } }),
    );
    let started = Instant::now();
    let mut child = helper(bin.path(), &config, "get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helper starts");
    let _held_open = child.stdin.take();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("get still waits for stdin after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no server URL arrived on stdin within 10 s"),
        "{stderr}"
    );
}
