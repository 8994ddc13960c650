//! End-to-end tests of `pullauth verify`: the real binary against the
//! harness engine and authenticated registries. Every run checks that no
//! form of the configured password reaches stdout or stderr, and that
//! `verify` never leaves the image on the host.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pullauth_integration::{Harness, Outcome, free_port, pullauth_bin};
use serde_json::{Value, json};

/// A run that takes longer than this is a hang, reported as a failure.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A repository name that no other test in any run uses.
fn fresh(prefix: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    format!(
        "verify-{prefix}-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An ecs.config with `docker`-format credentials and the secrets that no
/// run may print.
struct Config {
    dir: tempfile::TempDir,
    docker_host: String,
    secrets: Vec<String>,
}

impl Config {
    fn with_auth(creds: &[(&str, &str, &str)]) -> Config {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let dir = tempfile::Builder::new()
            .prefix(&format!("pullauth-it-{}-verify-", std::process::id()))
            .tempdir()
            .expect("cannot create a temporary directory");
        let mut map = serde_json::Map::new();
        let mut secrets = Vec::new();
        for (key, user, password) in creds {
            map.insert(
                (*key).to_string(),
                json!({ "username": user, "password": password }),
            );
            secrets.push((*password).to_string());
            let basic = format!("{user}:{password}");
            for encoded in [STANDARD.encode(&basic), URL_SAFE.encode(&basic)] {
                secrets.push(encoded.trim_end_matches('=').to_string());
            }
        }
        let text = format!(
            "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={}\n",
            Value::Object(map)
        );
        std::fs::write(dir.path().join("ecs.config"), text).expect("cannot write ecs.config");
        Config {
            dir,
            docker_host: Harness::get().docker_host().to_string(),
            secrets,
        }
    }

    fn docker_host(mut self, host: &str) -> Config {
        self.docker_host = host.to_string();
        self
    }

    fn env_file(&self) -> PathBuf {
        self.dir.path().join("ecs.config")
    }

    /// `pullauth verify --env-file ecs.config ARGS...` in a clean
    /// environment; fails the test if a secret was printed.
    fn verify(&self, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(pullauth_bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DOCKER_HOST", &self.docker_host)
            .arg("verify")
            .arg("--env-file")
            .arg(self.env_file())
            .args(args);
        let out = Outcome::run_bounded(&mut cmd, b"", RUN_TIMEOUT);
        for secret in &self.secrets {
            for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret form leaked to {name}:\n{}",
                    text.replace(secret.as_str(), "<LEAKED SECRET>")
                );
            }
        }
        out
    }
}

/// The one `--json` line of a run.
fn single(out: &Outcome) -> Value {
    let lines = out.json();
    assert_eq!(
        lines.len(),
        1,
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    lines.into_iter().next().expect("one line")
}

/// Pushes a fixture as alice and removes any local copy, so that a later
/// `local_image_id` shows whether `verify` pulled it.
fn pushed(repo: &str, tag: &str) -> (String, String) {
    let h = Harness::get();
    let digest = h.push_fixture(&h.alpha, repo, tag, ("alice", h.alpha.password("alice")));
    let image = h.alpha.image_ref(repo, tag);
    h.remove_local(&image);
    (image, digest)
}

// Proves the configured user's credentials are accepted, the digest is the
// one pushed, and nothing is pulled (JSON and text forms).
#[test]
fn accepted_credentials_report_the_digest_without_pulling() {
    let h = Harness::get();
    let (image, digest) = pushed(&fresh("ok"), "v1");
    let key = h.alpha.addr();
    let config = Config::with_auth(&[(&key, "bob", h.alpha.password("bob"))]);

    let mark = h.alpha.log_mark();
    let out = config.verify(&["--json", &image]);
    out.assert_code(0);
    let line = single(&out);
    assert_eq!(line["image"], image.as_str(), "{line}");
    assert_eq!(line["registry"], key.as_str(), "{line}");
    assert_eq!(line["key"], key.as_str(), "{line}");
    assert_eq!(line["username"], "bob", "{line}");
    assert_eq!(line["result"], "accepted", "{line}");
    assert_eq!(line["digest"], digest.as_str(), "{line}");
    assert!(
        line["platforms"].as_array().is_some_and(|p| !p.is_empty()
            && p.iter()
                .all(|p| p.as_str().is_some_and(|p| p.contains('/')))),
        "{line}"
    );
    assert!(line["detail"].is_null(), "{line}");
    assert!(
        h.alpha.users_since(mark).iter().any(|u| u == "bob"),
        "the registry never saw bob"
    );
    assert_eq!(h.local_image_id(&image), None, "verify pulled {image}");

    let text = config.verify(&[&image]);
    text.expect("text verify", 0, &["accepted", &image, &digest, "\"bob\""]);
    assert_eq!(h.local_image_id(&image), None, "verify pulled {image}");
}

// Proves a wrong password is reported as rejected, naming key and user,
// exit 1, with the password in no output.
#[test]
fn wrong_password_is_rejected_and_names_key_and_user() {
    let h = Harness::get();
    let (image, _) = pushed(&fresh("badpw"), "v1");
    let key = h.alpha.addr();
    let config = Config::with_auth(&[(&key, "alice", "wrong-Pa55word-xyz")]);

    let out = config.verify(&["--json", &image]);
    out.assert_code(1);
    let line = single(&out);
    assert_eq!(line["result"], "rejected", "{line}");
    assert_eq!(line["key"], key.as_str(), "{line}");
    assert_eq!(line["username"], "alice", "{line}");
    assert!(line["digest"].is_null(), "{line}");
    let detail = line["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("alice") && detail.contains(&key), "{line}");

    config
        .verify(&[&image])
        .expect("text verify", 1, &["rejected", &image, "\"alice\""]);
    assert_eq!(h.local_image_id(&image), None);
}

// Proves a tag that was never pushed is not_found (exit 1).
#[test]
fn missing_image_is_not_found() {
    let h = Harness::get();
    let (image, _) = pushed(&fresh("missing"), "v1");
    let missing = image.replace(":v1", ":never-pushed");
    let config = Config::with_auth(&[(&h.alpha.addr(), "alice", h.alpha.password("alice"))]);
    let out = config.verify(&["--json", &missing]);
    out.assert_code(1);
    assert_eq!(single(&out)["result"], "not_found", "{}", out.stdout);
}

// Proves a registry nobody listens on is registry_unreachable (exit 1),
// and that with several images every one gets a line.
#[test]
fn unreachable_registry_is_reported_per_image() {
    let h = Harness::get();
    let (good, _) = pushed(&fresh("beside-dead"), "v1");
    let dead = format!("127.0.0.1:{}", free_port());
    let config = Config::with_auth(&[
        (&dead, "alice", "dead-registry-pw"),
        (&h.alpha.addr(), "alice", h.alpha.password("alice")),
    ]);
    let image = format!("{dead}/app:v1");
    let out = config.verify(&["--json", &image, &good]);
    out.assert_code(1);
    let lines = out.json();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert_eq!(lines[0]["result"], "registry_unreachable", "{}", lines[0]);
    assert_eq!(lines[0]["registry"], dead.as_str(), "{}", lines[0]);
    assert_eq!(lines[1]["result"], "accepted", "{}", lines[1]);
}

// Proves an engine that is not there is engine_unreachable for each image
// (exit 1, not a configuration error).
#[test]
fn unreachable_engine_is_reported_per_image() {
    let h = Harness::get();
    let image = h.alpha.image_ref(&fresh("no-engine"), "v1");
    let config = Config::with_auth(&[(&h.alpha.addr(), "alice", h.alpha.password("alice"))])
        .docker_host("unix:///nonexistent.sock");
    let out = config.verify(&["--json", &image]);
    out.assert_code(1);
    let line = single(&out);
    assert_eq!(line["result"], "engine_unreachable", "{line}");
    assert!(
        line["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unix:///nonexistent.sock")),
        "{line}"
    );
}

// Proves a malformed reference is bad input: exit 2 and nothing verified.
#[test]
fn invalid_reference_is_a_usage_error() {
    let h = Harness::get();
    let config = Config::with_auth(&[(&h.alpha.addr(), "alice", h.alpha.password("alice"))]);
    let out = config.verify(&["--json", "Bad//Ref"]);
    out.assert_code(2);
    assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
}

// Proves the agent's POST /v1/verify answers the same objects as the CLI,
// for the images asked for and for its known tasks (none here: `[]`),
// refuses a malformed body with 400, pulls nothing and prints no secret.
#[test]
fn agent_verify_answers_one_object_per_image() {
    use pullauth_integration::agent::{AgentSpec, docker_auth_config};
    let h = Harness::get();
    let (image, digest) = pushed(&fresh("agent"), "v1");
    let missing = image.replace(":v1", ":never-pushed");
    let password = h.alpha.password("alice");
    let spec = AgentSpec::new().env_file_text(&docker_auth_config(
        &[(&h.alpha.addr(), "alice", password)],
        &[],
    ));
    let agent = spec.start();

    let body = json!({ "images": [image, missing] }).to_string();
    let response = agent.control("POST", "/v1/verify", body.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    let lines = answer.as_array().expect("an array");
    assert_eq!(lines.len(), 2, "{answer}");
    assert_eq!(lines[0]["result"], "accepted", "{answer}");
    assert_eq!(lines[0]["digest"], digest.as_str(), "{answer}");
    assert_eq!(lines[0]["username"], "alice", "{answer}");
    assert_eq!(lines[1]["result"], "not_found", "{answer}");
    assert!(!response.text().contains(password));

    let none = agent.control("POST", "/v1/verify", b"");
    assert_eq!(none.status, 200, "{}", none.text());
    assert_eq!(none.json(), json!([]));

    let bad = agent.control("POST", "/v1/verify", br#"{"images": ["Bad//Ref"]}"#);
    assert_eq!(bad.status, 400, "{}", bad.text());
    let garbled = agent.control("POST", "/v1/verify", b"{not json");
    assert_eq!(garbled.status, 400, "{}", garbled.text());

    assert_eq!(h.local_image_id(&image), None, "verify pulled {image}");
    assert!(
        !spec.logs().contains(password),
        "the agent logged the password"
    );
}
