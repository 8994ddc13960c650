//! Proves the test infrastructure itself works: engine, registries, auth
//! logging, fixtures, stop/restart and the stall listener.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pullauth_integration::agent::random_token;
use pullauth_integration::{Harness, Registry, Stall, ensure_tools, http_get_status};

#[test]
fn engine_answers_docker_info() {
    let h = Harness::get();
    let out = h
        .docker()
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .expect("docker CLI runs");
    assert!(
        out.status.success(),
        "docker info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    assert!(h.docker_host().contains("://"), "{}", h.docker_host());
}

#[test]
fn engine_treats_loopback_registries_as_insecure() {
    let h = Harness::get();
    let out = h
        .docker()
        .args([
            "info",
            "--format",
            "{{json .RegistryConfig.InsecureRegistryCIDRs}}",
        ])
        .output()
        .expect("docker CLI runs");
    let cidrs = String::from_utf8_lossy(&out.stdout);
    assert!(cidrs.contains("127.0.0.0/8"), "insecure CIDRs: {cidrs}");
}

#[test]
fn alpha_requires_credentials() {
    let h = Harness::get();
    let alpha = &h.alpha;
    assert_eq!(alpha.v2_status(None), 401);
    assert_eq!(
        alpha.v2_status(Some(("alice", alpha.password("alice")))),
        200
    );
    assert_eq!(alpha.v2_status(Some(("bob", alpha.password("bob")))), 200);
    assert_eq!(alpha.v2_status(Some(("alice", alpha.password("bob")))), 401);
    assert_ne!(alpha.password("alice"), alpha.password("bob"));
}

#[test]
fn beta_rejects_alices_password() {
    let h = Harness::get();
    let alice_password = h.alpha.password("alice");
    assert_eq!(h.beta.v2_status(Some(("alice", alice_password))), 401);
    assert_eq!(
        h.beta.v2_status(Some(("carol", h.beta.password("carol")))),
        200
    );

    let config = h.docker_config();
    let err = h
        .docker_login(config.path(), &h.beta, "alice", alice_password)
        .expect_err("beta must reject alice");
    assert!(err.to_lowercase().contains("unauthorized"), "{err}");
}

#[test]
fn fixture_pushed_by_alice_is_pulled_by_bob() {
    let h = Harness::get();
    let alpha = &h.alpha;
    // A repository of its own: other tests use the shared registry
    // meanwhile, so only this repository's requests are counted.
    let repo = format!("team/fixture{}", random_token(8).to_ascii_lowercase());
    let mark = alpha.log_mark();
    let digest = h.push_fixture(alpha, &repo, "v1", ("alice", alpha.password("alice")));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let pushers = alpha.users_since_in(mark, &repo);
    assert!(
        !pushers.is_empty() && pushers.iter().all(|u| u == "alice"),
        "{pushers:?}"
    );

    let image = alpha.image_ref(&repo, "v1");
    assert_eq!(
        h.local_image_id(&image),
        None,
        "push_fixture must remove the local tag"
    );

    let config = h.login_config(alpha, "bob", alpha.password("bob"));
    let mark = alpha.log_mark();
    h.docker_pull(config.path(), &image).expect("bob can pull");
    let pullers = alpha.users_since_in(mark, &repo);
    assert!(pullers.contains(&"bob".to_string()), "{pullers:?}");
    assert!(pullers.iter().all(|u| u == "bob"), "{pullers:?}");
    assert!(alpha.users_seen().contains(&"bob".to_string()));

    assert!(h.local_image_id(&image).is_some());
    let out = h
        .docker()
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &image,
        ])
        .output()
        .expect("docker CLI runs");
    let repo_digests = String::from_utf8_lossy(&out.stdout);
    assert!(
        repo_digests.contains(&digest),
        "{repo_digests} lacks {digest}"
    );

    h.remove_local(&image);
    assert_eq!(h.local_image_id(&image), None);
    h.remove_local(&image); // Removing a missing image is fine.
}

#[test]
fn fixtures_get_distinct_digests() {
    let h = Harness::get();
    let carol = ("carol", h.beta.password("carol"));
    let a = h.push_fixture(&h.beta, "distinct/one", "t", carol);
    let b = h.push_fixture(&h.beta, "distinct/two", "t", carol);
    let c = h.push_fixture(&h.beta, "distinct/one", "u", carol);
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
}

/// `docker --config config_dir login` exactly as a user would run it, with
/// no `config.json` prepared; returns the CLI's error output on failure.
fn unprepared_login(
    h: &Harness,
    config_dir: &Path,
    registry: &Registry,
    user: &str,
    password: &str,
) -> Result<(), String> {
    let mut child = h
        .docker()
        .arg("--config")
        .arg(config_dir)
        .args(["login", "--username", user, "--password-stdin"])
        .arg(registry.addr())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker CLI runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(password.as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("wait for docker login");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

// Issue #12: with `pass` and `docker-credential-pass` installed, the docker
// CLI stores the credentials of a config that has none yet in `pass`, and
// `docker login` fails while the pass store is not initialized. The
// harness's configs keep credentials in their config.json instead.
#[test]
fn fixture_push_ignores_an_uninitialized_pass_store() {
    ensure_tools(&[
        ("pass", "pass"),
        ("docker-credential-pass", "golang-docker-credential-helpers"),
    ]);
    let h = Harness::get();
    let beta = &h.beta;
    let carol = ("carol", beta.password("carol"));

    // The trap is set: an unprepared config picks `pass`, and the store
    // under the CLI's HOME is empty.
    let unprepared = tempfile::tempdir().expect("temp dir");
    let err = unprepared_login(h, unprepared.path(), beta, carol.0, carol.1)
        .expect_err("docker login must pick the uninitialized pass store");
    assert!(err.contains("pass not initialized"), "{err}");

    let digest = h.push_fixture(beta, "pinned/app", "v1", carol);
    assert!(digest.starts_with("sha256:"), "{digest}");

    let config = h.login_config(beta, carol.0, carol.1);
    let text = std::fs::read_to_string(config.path().join("config.json")).expect("config.json");
    let file: serde_json::Value = serde_json::from_str(&text).expect("config.json is JSON");
    assert!(file.get("credsStore").is_none(), "credsStore was set");
    assert!(file.get("credHelpers").is_none(), "credHelpers was set");
    let auth = file["auths"][beta.addr()]["auth"].as_str().unwrap_or("");
    assert!(
        !auth.is_empty(),
        "config.json holds no auth for {}",
        beta.addr()
    );

    let image = beta.image_ref("pinned/app", "v1");
    h.docker_pull(config.path(), &image)
        .expect("pull with the credentials in config.json");
    h.remove_local(&image);
}

#[test]
fn pull_without_login_is_rejected() {
    let h = Harness::get();
    let carol = ("carol", h.beta.password("carol"));
    h.push_fixture(&h.beta, "private/app", "latest", carol);
    let empty = h.docker_config();
    let image = h.beta.image_ref("private/app", "latest");
    let err = h
        .docker_pull(empty.path(), &image)
        .expect_err("anonymous pull");
    assert!(
        err.contains("no basic auth credentials") || err.contains("unauthorized"),
        "{err}"
    );
    assert_eq!(h.local_image_id(&image), None);
}

#[test]
fn awkward_passwords_work_and_registry_survives_restart() {
    let h = Harness::get();
    let printable: String = (' '..='~').collect();
    let users = [
        ("dave", r#"sp ace "quote" \back\slash: colon"#),
        ("eve", printable.as_str()),
        ("frank", "pässwörd ünïcødé 密码 🔑"),
    ];
    let registry = Harness::registry_with(&users);
    for (user, password) in users {
        assert_eq!(registry.v2_status(Some((user, password))), 200, "{user}");
        assert_eq!(registry.v2_status(Some((user, "wrong"))), 401, "{user}");
    }
    let digest = h.push_fixture(&registry, "awkward", "v1", users[0]);
    let config = h.login_config(&registry, "frank", users[2].1);

    registry.stop();
    assert!(!registry.is_running());
    assert!(http_get_status(&registry.addr(), "/v2/", None).is_err());
    let image = registry.image_ref("awkward", "v1");
    assert!(h.docker_pull(config.path(), &image).is_err());

    let mark = registry.log_mark();
    registry.restart();
    assert!(registry.is_running());
    assert_eq!(registry.v2_status(None), 401);
    h.docker_pull(config.path(), &image)
        .expect("pull after restart");
    assert_eq!(
        registry.users_since(mark).first().map(String::as_str),
        Some("frank")
    );
    let out = h
        .docker()
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &image,
        ])
        .output()
        .expect("docker CLI runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&digest));
    h.remove_local(&image);
}

#[test]
fn stall_accepts_and_never_answers() {
    let stall = Stall::start();
    let mut stream = TcpStream::connect(stall.addr()).expect("stall accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("set timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let err = stream
        .read(&mut buf)
        .expect_err("stall must not send anything");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let deadline = Instant::now() + Duration::from_secs(2);
    while stall.connections() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(stall.connections(), 1);
}

/// `Moto::boto3` runs its scripts in long-lived interpreters. Each script
/// must still see what a fresh `python -c` with stdin from /dev/null saw:
/// no name another script left behind, an empty stdin; and a failing
/// script must fail its caller with the traceback, without taking the
/// runner (and the next script) down with it.
#[test]
fn boto3_scripts_run_apart_as_in_fresh_interpreters() {
    let moto = pullauth_integration::Moto::shared();
    let name = format!("left_behind_{}", random_token(8));
    moto.boto3(&format!("{name} = 1\n"), None);
    let out = moto.boto3(
        &format!("print('{name}' in globals(), repr(sys.stdin.read()))\n"),
        None,
    );
    assert_eq!(out.trim(), "False ''");

    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        moto.boto3("raise ValueError('canary-failure')\n", None)
    }))
    .expect_err("a failing script fails its caller");
    let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("ValueError: canary-failure"), "{message}");

    let out = moto.boto3(
        "print(type(client('s3').list_buckets()['Buckets']).__name__)\n",
        None,
    );
    assert_eq!(out.trim(), "list");
}
