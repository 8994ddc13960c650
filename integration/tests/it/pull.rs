//! End-to-end tests of `pullauth pull`: the real binary, run as a subprocess
//! against a real Docker engine and real authenticated registries.
//!
//! Every run goes through [`Config::run`], which also checks that nothing the
//! run was configured with (passwords, `user:password` in base64, the
//! `X-Registry-Auth` header in either base64 alphabet) ever reaches stdout or
//! stderr. Each test uses its own repositories, so tests run in parallel;
//! tests that stop a registry start their own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pullauth_integration::Outcome;
use pullauth_integration::{Harness, Registry, Stall, free_port, pullauth_bin};
use serde_json::{Value, json};

/// A run that takes longer than this is a hang, reported as a failure.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A repository name that no other test in any run uses: `prefix-PID-N`.
fn fresh(prefix: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory named as the harness names its own
/// (`pullauth-it-PID-...`), so that the harness sweeps it up after a crash.
fn temp_dir(purpose: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("pullauth-it-{}-{purpose}-", std::process::id()))
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// A password-like token unique to this call (for throwaway credentials).
fn token(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos:09}", fresh(prefix))
}

/// RFC 4648 base64 with padding; `url_safe` selects the `-_` alphabet.
fn base64(data: &[u8], url_safe: bool) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    if url_safe {
        URL_SAFE.encode(data)
    } else {
        STANDARD.encode(data)
    }
}

/// The credential formats of `ECS_ENGINE_AUTH_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `{"KEY": {"username": ..., "password": ...}}`
    Docker,
    /// `{"KEY": {"auth": base64("user:password")}}`
    Dockercfg,
}

const FORMATS: [Format; 2] = [Format::Docker, Format::Dockercfg];

impl Format {
    fn auth_type(self) -> &'static str {
        match self {
            Format::Docker => "docker",
            Format::Dockercfg => "dockercfg",
        }
    }

    fn entry(self, user: &str, password: &str) -> Value {
        match self {
            Format::Docker => json!({ "username": user, "password": password }),
            Format::Dockercfg => {
                json!({ "auth": base64(format!("{user}:{password}").as_bytes(), false) })
            }
        }
    }
}

/// One `ECS_ENGINE_AUTH_DATA` entry: `(key as written, user, password)`.
type Cred<'a> = (&'a str, &'a str, &'a str);

/// Every printable form of one credential that must never be output.
fn secret_forms(key: &str, user: &str, password: &str) -> Vec<String> {
    let mut forms = vec![password.to_string()];
    // As JSON and Rust's Debug would escape it inside a message.
    let json_escaped = serde_json::to_string(password).expect("a string serializes");
    forms.push(json_escaped.trim_matches('"').to_string());
    forms.push(format!("{password:?}").trim_matches('"').to_string());
    // docker-style Basic credentials.
    let basic = format!("{user}:{password}");
    for url_safe in [false, true] {
        forms.push(base64(basic.as_bytes(), url_safe));
    }
    // The X-Registry-Auth JSON in any field order, in both alphabets.
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let fields = [
        format!("\"username\":{}", json!(user)),
        format!("\"password\":{}", json!(password)),
        format!("\"serveraddress\":{}", json!(host)),
    ];
    for order in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        let header = format!(
            "{{{},{},{}}}",
            fields[order[0]], fields[order[1]], fields[order[2]]
        );
        for url_safe in [false, true] {
            forms.push(base64(header.as_bytes(), url_safe));
        }
    }
    // Without padding too.
    let unpadded: Vec<String> = forms
        .iter()
        .map(|f| f.trim_end_matches('=').to_string())
        .collect();
    forms.extend(unpadded);
    forms.retain(|f| f.len() >= 6);
    forms.sort();
    forms.dedup();
    forms
}

/// An ecs.config for one or more `pullauth` runs, plus extra process
/// environment and the secrets the runs must never print.
#[derive(Debug)]
struct Config {
    dir: tempfile::TempDir,
    lines: Vec<String>,
    env: Vec<(String, String)>,
    secrets: Vec<String>,
    docker_host: String,
}

impl Config {
    /// No credentials at all.
    fn anonymous() -> Config {
        Config {
            dir: temp_dir("ecs-config"),
            lines: Vec::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            docker_host: Harness::get().docker_host().to_string(),
        }
    }

    /// `format` credentials for each `(key, user, password)`.
    fn with_auth(format: Format, creds: &[Cred<'_>]) -> Config {
        Config::auth(format, creds, false)
    }

    /// The same, wrapped as `{"auths": {...}}` the way `docker login` writes it.
    fn with_wrapped_auth(format: Format, creds: &[Cred<'_>]) -> Config {
        Config::auth(format, creds, true)
    }

    fn auth(format: Format, creds: &[Cred<'_>], wrapped: bool) -> Config {
        let mut map = serde_json::Map::new();
        let mut config = Config::anonymous();
        for (key, user, password) in creds {
            map.insert((*key).to_string(), format.entry(user, password));
            config.secrets.extend(secret_forms(key, user, password));
        }
        let data = if wrapped {
            json!({ "auths": map })
        } else {
            Value::Object(map)
        };
        config
            .set("ECS_ENGINE_AUTH_TYPE", format.auth_type())
            .set("ECS_ENGINE_AUTH_DATA", &data.to_string())
    }

    /// Adds a `VAR=value` line to the env file.
    fn set(mut self, var: &str, value: &str) -> Config {
        self.lines.push(format!("{var}={value}"));
        self
    }

    /// Sets a variable in pullauth's process environment.
    fn env(mut self, var: &str, value: &str) -> Config {
        self.env.push((var.to_string(), value.to_string()));
        self
    }

    /// Points `DOCKER_HOST` elsewhere than the harness engine.
    fn docker_host(mut self, host: &str) -> Config {
        self.docker_host = host.to_string();
        self
    }

    /// Declares another string that no run may print.
    fn secret(mut self, secret: &str) -> Config {
        self.secrets.push(secret.to_string());
        self
    }

    fn env_file(&self) -> PathBuf {
        let path = self.dir.path().join("ecs.config");
        let mut text = self.lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).expect("cannot write ecs.config");
        path
    }

    /// `pullauth pull --env-file ecs.config ARGS...`.
    fn pull(&self, args: &[&str]) -> Outcome {
        self.run("pull", args)
    }

    /// Runs `pullauth SUBCOMMAND --env-file ecs.config ARGS...` with a clean
    /// environment (PATH, DOCKER_HOST and what the test set), then checks
    /// that no secret was printed.
    fn run(&self, subcommand: &str, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(pullauth_bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DOCKER_HOST", &self.docker_host)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg(subcommand)
            .arg("--env-file")
            .arg(self.env_file())
            .args(args);
        let outcome = Outcome::run_bounded(&mut cmd, b"", RUN_TIMEOUT);
        for secret in &self.secrets {
            for (name, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret form ({} chars) leaked to {name}:\n{}",
                    secret.len(),
                    text.replace(secret.as_str(), "<LEAKED SECRET>")
                );
            }
        }
        outcome
    }
}

/// Asserts that every authenticated request on `repository` since `mark`
/// came from `user`, and that there was at least one.
fn assert_only_user(registry: &Registry, mark: usize, repository: &str, user: &str) {
    let users = registry.users_since_in(mark, repository);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == user),
        "{}/{repository}: expected only {user:?}, the registry saw {users:?}",
        registry.addr()
    );
}

/// Asserts that no authenticated request reached `repository` since `mark`.
fn assert_no_user(registry: &Registry, mark: usize, repository: &str) {
    let users = registry.users_since_in(mark, repository);
    assert!(
        users.is_empty(),
        "{}/{repository}: expected no authenticated request, the registry saw {users:?}",
        registry.addr()
    );
}

/// Asserts that `needles` occur in stderr in this order.
fn assert_stderr_contains_in_order(out: &Outcome, needles: &[&str]) {
    let mut rest = out.stderr.as_str();
    for needle in needles {
        let at = rest
            .find(needle)
            .unwrap_or_else(|| panic!("stderr lacks {needle:?} (in order):\n{}", out.stderr));
        rest = &rest[at + needle.len()..];
    }
}

/// Pushes a fixture `repository:tag` to `registry` as `user`; returns
/// `(image reference, digest)`.
fn push(registry: &Registry, repository: &str, tag: &str, user: &str) -> (String, String) {
    let digest =
        Harness::get().push_fixture(registry, repository, tag, (user, registry.password(user)));
    (registry.image_ref(repository, tag), digest)
}

/// Checks one successful `--json` line.
fn assert_line(
    line: &Value,
    image: &str,
    digest: Option<&str>,
    key: &str,
    user: &str,
    status: &str,
) {
    assert_eq!(line["image"], image, "{line}");
    match digest {
        Some(digest) => assert_eq!(line["digest"], digest, "{line}"),
        None => assert!(line["digest"].is_null(), "{line}"),
    }
    assert_eq!(line["key"], key, "{line}");
    assert_eq!(line["username"], user, "{line}");
    assert_eq!(line["status"], status, "{line}");
    assert!(line["seconds"].as_f64().is_some_and(|s| s >= 0.0), "{line}");
}

/// `(http status, body)` of `POST path` on the engine API, with `headers`
/// written `Name: value`.
fn engine_post(path: &str, headers: &[String]) -> (u16, String) {
    use pullauth_integration::http::{REQUEST_TIMEOUT, Target, request};
    let host = Harness::get().docker_host();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|h| {
            let (name, value) = h.split_once(':').expect("a header is `Name: value`");
            (name.trim(), value.trim())
        })
        .collect();
    let target = if let Some(socket) = host.strip_prefix("unix://") {
        Target::Unix(std::path::Path::new(socket))
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        Target::Tcp(addr)
    } else {
        panic!("cannot reach the engine at {host}");
    };
    let response = request(target, "POST", path, &headers, b"", REQUEST_TIMEOUT * 4)
        .unwrap_or_else(|e| panic!("POST {path} to the engine at {host} failed: {e}"));
    (response.status, response.text())
}

// ---------------------------------------------------------------------------
// Credential formats and key matching
// ---------------------------------------------------------------------------

// Proves the docker format reaches the registry as the configured user and --json reports the pushed digest, the key as written and the user.
#[test]
fn docker_format_pulls_as_the_configured_user() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("docker-format");
    // Pushed by alice, pulled by bob: the registry log tells them apart.
    let (image, digest) = push(alpha, &repo, "v1", "alice");
    let key = alpha.addr();
    let config = Config::with_auth(Format::Docker, &[(&key, "bob", alpha.password("bob"))]);

    let mark = alpha.log_mark();
    let out = config.pull(&["--json", &image]);
    out.assert_code(0);
    assert_line(&out.single(), &image, Some(&digest), &key, "bob", "pulled");
    assert_only_user(alpha, mark, &repo, "bob");
    assert!(h.local_image_id(&image).is_some());
}

// Proves the dockercfg format (base64 "user:password") reaches the registry as the configured user with correct --json fields.
#[test]
fn dockercfg_format_pulls_as_the_configured_user() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("dockercfg-format");
    let (image, digest) = push(alpha, &repo, "v1", "bob");
    let key = alpha.addr();
    let config = Config::with_auth(
        Format::Dockercfg,
        &[(&key, "alice", alpha.password("alice"))],
    );

    let mark = alpha.log_mark();
    let out = config.pull(&["--json", &image]);
    out.assert_code(0);
    assert_line(
        &out.single(),
        &image,
        Some(&digest),
        &key,
        "alice",
        "pulled",
    );
    assert_only_user(alpha, mark, &repo, "alice");
    assert!(h.local_image_id(&image).is_some());
}

// Proves {"auths": {...}} wrapped data works for both types, with scheme-prefixed keys reported exactly as written.
#[test]
fn auths_wrapper_works_for_both_types() {
    let h = Harness::get();
    let alpha = &h.alpha;
    for (format, key) in [
        (Format::Docker, format!("https://{}", alpha.addr())),
        (Format::Dockercfg, format!("http://{}/", alpha.addr())),
    ] {
        let repo = fresh(&format!("wrapped-{}", format.auth_type()));
        let (image, digest) = push(alpha, &repo, "v1", "alice");
        let config = Config::with_wrapped_auth(format, &[(&key, "bob", alpha.password("bob"))]);
        let mark = alpha.log_mark();
        let out = config.pull(&["--json", &image]);
        out.assert_code(0);
        assert_line(&out.single(), &image, Some(&digest), &key, "bob", "pulled");
        assert_only_user(alpha, mark, &repo, "bob");
    }
}

// Proves a namespace key (ADDR/team) wins below team/ only, and the host key covers everything else, including team-lookalikes like teammate/.
#[test]
fn path_scoped_key_applies_only_below_its_namespace() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let host_key = alpha.addr();
    let team_key = format!("{}/team", alpha.addr());
    for format in FORMATS {
        let name = fresh(&format!("scoped-{}", format.auth_type()));
        let cases = [
            (format!("team/{name}"), &team_key, "bob"),
            (format!("other/{name}"), &host_key, "alice"),
            (format!("teammate/{name}"), &host_key, "alice"),
        ];
        let mut images = Vec::new();
        for (repo, _, _) in &cases {
            images.push(push(alpha, repo, "v1", "alice"));
        }
        // Host key first, so that order in the data cannot be what decides.
        let config = Config::with_auth(
            format,
            &[
                (&host_key, "alice", alpha.password("alice")),
                (&team_key, "bob", alpha.password("bob")),
            ],
        );
        let mark = alpha.log_mark();
        let args: Vec<&str> = std::iter::once("--json")
            .chain(images.iter().map(|(image, _)| image.as_str()))
            .collect();
        let out = config.pull(&args);
        out.assert_code(0);
        let lines = out.json();
        assert_eq!(lines.len(), 3, "{}", out.stdout);
        for (((repo, key, user), (image, digest)), line) in cases.iter().zip(&images).zip(&lines) {
            assert_line(line, image, Some(digest), key, user, "pulled");
            assert_only_user(alpha, mark, repo, user);
        }
    }
}

// Proves that with two registries configured, each pull presents that registry's own user.
#[test]
fn two_registries_each_get_their_own_user() {
    let h = Harness::get();
    let (alpha, beta) = (&h.alpha, &h.beta);
    for format in FORMATS {
        let repo = fresh(&format!("two-registries-{}", format.auth_type()));
        let (alpha_image, alpha_digest) = push(alpha, &repo, "v1", "alice");
        let (beta_image, beta_digest) = push(beta, &repo, "v1", "carol");
        let (alpha_key, beta_key) = (alpha.addr(), beta.addr());
        let config = Config::with_auth(
            format,
            &[
                (&alpha_key, "bob", alpha.password("bob")),
                (&beta_key, "carol", beta.password("carol")),
            ],
        );
        let (alpha_mark, beta_mark) = (alpha.log_mark(), beta.log_mark());
        let out = config.pull(&["--json", &beta_image, &alpha_image]);
        out.assert_code(0);
        let lines = out.json();
        assert_eq!(lines.len(), 2, "{}", out.stdout);
        assert_line(
            &lines[0],
            &beta_image,
            Some(&beta_digest),
            &beta_key,
            "carol",
            "pulled",
        );
        assert_line(
            &lines[1],
            &alpha_image,
            Some(&alpha_digest),
            &alpha_key,
            "bob",
            "pulled",
        );
        assert_only_user(beta, beta_mark, &repo, "carol");
        assert_only_user(alpha, alpha_mark, &repo, "bob");
    }
}

// ---------------------------------------------------------------------------
// Awkward passwords and the X-Registry-Auth encoding
// ---------------------------------------------------------------------------

// Proves passwords holding every printable ASCII character, and non-ASCII passwords and user names, reach the registry intact in both formats.
#[test]
fn awkward_passwords_and_user_names_reach_the_registry() {
    let h = Harness::get();
    // bcrypt (htpasswd -B) ignores bytes after the 72nd, so the printable set
    // is split in two: the registry then checks every character.
    let low: String = (' '..='O').collect(); // space ! " # ... + / : = > ? ... O
    let high: String = ('P'..='~').collect(); // P ... \ ... ~
    let users: [(&str, &str); 3] = [
        ("ascii-low", &low),
        ("ascii-high", &high),
        ("jürgen-用户", "pässwörd-密码-🔑 ünïcødé"),
    ];
    for (_, password) in users {
        assert!(password.len() <= 72, "{} bytes", password.len());
    }
    let pusher = token("push");
    let mut all = vec![("pusher", pusher.as_str())];
    all.extend(users);
    let registry = Harness::registry_with(&all);
    for (user, password) in users {
        // The registry checks the whole password: the last character matters.
        let mut wrong: String = password.to_string();
        let last = wrong.pop().expect("non-empty");
        wrong.push(if last == 'x' { 'y' } else { 'x' });
        assert_eq!(registry.v2_status(Some((user, password))), 200, "{user}");
        assert_eq!(registry.v2_status(Some((user, &wrong))), 401, "{user}");
    }
    let repo = fresh("awkward");
    let (image, digest) = push(&registry, &repo, "v1", "pusher");
    let key = registry.addr();
    for format in FORMATS {
        for (user, password) in users {
            h.remove_local(&image);
            let config = Config::with_auth(format, &[(&key, user, password)]);
            let mark = registry.log_mark();
            let out = config.pull(&["--json", &image]);
            out.assert_code(0);
            assert_line(&out.single(), &image, Some(&digest), &key, user, "pulled");
            assert_only_user(&registry, mark, &repo, user);
        }
    }
}

// Pins why pullauth builds X-Registry-Auth itself: bollard's standard-base64 header is silently dropped by the engine (anonymous pull), only URL-safe works.
#[test]
fn bollard_standard_base64_registry_auth_is_dropped_by_the_engine() {
    let h = Harness::get();
    // '?' and '>' encode to '/' and '+' in standard base64.
    let password = "??>>??>>~~??>>~~";
    let registry = Harness::registry_with(&[("slash", password)]);
    let repo = fresh("bollard-base64");
    let (image, digest) = push(&registry, &repo, "v1", "slash");
    let header = json!({
        "username": "slash",
        "password": password,
        "serveraddress": registry.addr(),
    })
    .to_string();
    let standard = base64(header.as_bytes(), false);
    let url_safe = base64(header.as_bytes(), true);
    assert!(
        standard.contains(['+', '/']),
        "the test needs a header whose standard encoding has '+' or '/': {standard}"
    );
    let path = format!(
        "/v1.41/images/create?fromImage={}/{repo}&tag=v1",
        registry.addr()
    );

    // Standard base64 (what bollard sends): the engine pulls anonymously.
    let mark = registry.log_mark();
    let (status, body) = engine_post(&path, &[format!("X-Registry-Auth: {standard}")]);
    assert!(
        body.contains("no basic auth credentials"),
        "expected an anonymous pull to be refused, got HTTP {status}: {body}"
    );
    assert!(!body.contains("Downloaded newer image"), "{body}");
    assert_no_user(&registry, mark, &repo);
    assert_eq!(h.local_image_id(&image), None);

    // URL-safe base64 (what the engine decodes): the same credentials work.
    let mark = registry.log_mark();
    let (status, body) = engine_post(&path, &[format!("X-Registry-Auth: {url_safe}")]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Downloaded newer image") && !body.contains("error"),
        "{body}"
    );
    assert!(body.contains(&digest), "{body}");
    assert_only_user(&registry, mark, &repo, "slash");
    assert!(h.local_image_id(&image).is_some());

    // And pullauth, given that password, succeeds.
    for format in FORMATS {
        h.remove_local(&image);
        let config = Config::with_auth(format, &[(&registry.addr(), "slash", password)]);
        let mark = registry.log_mark();
        let out = config.pull(&["--json", &image]);
        out.assert_code(0);
        assert_line(
            &out.single(),
            &image,
            Some(&digest),
            &registry.addr(),
            "slash",
            "pulled",
        );
        assert_only_user(&registry, mark, &repo, "slash");
    }
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

// Proves a wrong password fails once (no retries) with a message naming the key and user, never the password.
#[test]
fn wrong_password_is_rejected_without_retries() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("wrong-password");
    let (image, _) = push(alpha, &repo, "v1", "alice");
    let key = alpha.addr();
    let wrong = token("wrong");
    for format in FORMATS {
        // The real password must not leak either.
        let config =
            Config::with_auth(format, &[(&key, "alice", &wrong)]).secret(alpha.password("alice"));
        let mark = alpha.log_mark();
        let out = config.pull(&[&image]);
        out.assert_code(1)
            .assert_stderr_has(&[
                "rejected the credentials",
                &format!("key {key:?}"),
                "user \"alice\"",
            ])
            .assert_not_retried();
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert_no_user(alpha, mark, &repo);
        assert_eq!(h.local_image_id(&image), None);
    }
}

// Proves a registry that needs credentials but has none configured fails with "no credentials are configured", with or without other keys.
#[test]
fn missing_credentials_are_reported_as_such() {
    let h = Harness::get();
    let repo = fresh("no-credentials");
    let (image, _) = push(&h.alpha, &repo, "v1", "alice");
    let beta_only = Config::with_auth(
        Format::Docker,
        &[(&h.beta.addr(), "carol", h.beta.password("carol"))],
    );
    for config in [Config::anonymous(), beta_only] {
        let out = config.pull(&[&image]);
        out.assert_code(1)
            .assert_stderr_has(&["no credentials are configured", &h.alpha.addr()])
            .assert_not_retried();
        assert_eq!(h.local_image_id(&image), None);
    }
}

// Proves a missing tag or repository fails with "was not found" after one attempt, with the credentials accepted.
#[test]
fn missing_image_is_not_found_without_retries() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("missing");
    push(alpha, &repo, "v1", "alice");
    let config = Config::with_auth(
        Format::Docker,
        &[(&alpha.addr(), "alice", alpha.password("alice"))],
    );
    let absent_repo = fresh("never-pushed");
    for (repository, tag) in [(repo.as_str(), "nope"), (absent_repo.as_str(), "v1")] {
        let image = alpha.image_ref(repository, tag);
        let mark = alpha.log_mark();
        let out = config.pull(&[&image]);
        out.assert_code(1)
            .assert_stderr_has(&["was not found", &image])
            .assert_not_retried();
        // The registry authenticated alice: this is not an auth problem.
        assert_only_user(alpha, mark, repository, "alice");
    }
}

// Proves an unreachable registry is retried 5 times in all (4 "retrying" lines) before "unreachable or failing".
#[test]
fn unreachable_registry_is_retried_then_reported() {
    let addr = format!("127.0.0.1:{}", free_port());
    let config = Config::with_auth(Format::Docker, &[(&addr, "alice", &token("pw"))]);
    let image = format!("{addr}/app:v1");
    let out = config.pull(&[&image]);
    out.assert_code(1);
    assert_eq!(out.retried_attempts(), [1, 2, 3, 4], "{}", out.stderr);
    assert!(
        out.last_stderr_line().starts_with(&format!(
            "pullauth: registry {addr} is unreachable or failing"
        )),
        "{}",
        out.stderr
    );
}

// Proves an unreachable engine fails at once with a message naming the address and DOCKER_HOST.
#[test]
fn unreachable_engine_names_the_address_and_docker_host() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("no-engine");
    let image = alpha.image_ref(&repo, "v1");
    let tcp = format!("tcp://127.0.0.1:{}", free_port());
    for host in ["unix:///nonexistent.sock", tcp.as_str()] {
        let config = Config::with_auth(
            Format::Docker,
            &[(&alpha.addr(), "alice", alpha.password("alice"))],
        )
        .docker_host(host);
        let out = config.pull(&[&image]);
        out.assert_code(1)
            .assert_stderr_has(&[
                &format!("cannot reach the Docker Engine at {host}"),
                "DOCKER_HOST",
            ])
            .assert_not_retried();
    }
}

// Proves a registry that accepts connections but never answers is cancelled as "stalled" after ECS_IMAGE_PULL_INACTIVITY_TIMEOUT, before the engine's own timeouts.
#[test]
fn stalled_registry_hits_the_inactivity_timeout() {
    let stall = Stall::start();
    let config = Config::with_auth(Format::Docker, &[(&stall.addr(), "alice", &token("pw"))])
        .set("ECS_IMAGE_PULL_INACTIVITY_TIMEOUT", "2s");
    let image = format!("{}/app:v1", stall.addr());
    let out = config.pull(&[&image]);
    out.assert_code(1)
        .assert_stderr_has(&[
            &format!("pull of {image} stalled"),
            "no progress for 2s",
            "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT",
        ])
        .assert_not_retried();
    assert!(
        stall.connections() >= 1,
        "the engine never reached the registry"
    );
}

// ---------------------------------------------------------------------------
// Pull behaviors
// ---------------------------------------------------------------------------

// Proves the default behavior falls back to the cached image (status "cached", exit 0) after retrying a stopped registry, and pulls again once it is back.
#[test]
fn default_behavior_falls_back_to_cache_when_registry_is_down() {
    let h = Harness::get();
    let registry = Harness::registry_with(&[("dora", &token("pw"))]);
    let repo = fresh("default-down");
    let (image, digest) = push(&registry, &repo, "v1", "dora");
    let key = registry.addr();
    let config = Config::with_auth(Format::Docker, &[(&key, "dora", registry.password("dora"))]);
    config.pull(&[&image]).assert_code(0);
    let id = h.local_image_id(&image).expect("pulled");

    registry.stop();
    // No --pull-behavior flag: "default" is the default.
    let out = config.pull(&[&image]);
    out.assert_code(0);
    assert_eq!(out.retried_attempts(), [1, 2, 3, 4], "{}", out.stderr);
    assert_stderr_contains_in_order(&out, &["unreachable or failing", "using the cached image"]);
    assert!(out.stdout.starts_with("cached "), "{}", out.stdout);
    assert_eq!(h.local_image_id(&image).as_ref(), Some(&id));

    registry.restart();
    let mark = registry.log_mark();
    let out = config.pull(&["--json", &image]);
    out.assert_code(0);
    assert_line(
        &out.single(),
        &image,
        Some(&digest),
        &key,
        "dora",
        "up-to-date",
    );
    assert_only_user(&registry, mark, &repo, "dora");
}

// Proves the default behavior's --json output reports "cached" with no digest when a non-transient failure (rejected credentials) forces the fallback.
#[test]
fn default_behavior_falls_back_to_cache_when_credentials_are_rejected() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("default-rejected");
    let (image, _) = push(alpha, &repo, "v1", "alice");
    let key = alpha.addr();
    Config::with_auth(Format::Docker, &[(&key, "alice", alpha.password("alice"))])
        .pull(&[&image])
        .assert_code(0);

    let config = Config::with_auth(Format::Docker, &[(&key, "alice", &token("wrong"))])
        .secret(alpha.password("alice"));
    let out = config.pull(&["--json", "--pull-behavior", "default", &image]);
    out.assert_code(0).assert_not_retried();
    assert_line(&out.single(), &image, None, &key, "alice", "cached");
}

// Proves the always behavior fails (exit 1) instead of using the cached image when the registry is down.
#[test]
fn always_behavior_fails_when_registry_is_down() {
    let h = Harness::get();
    let registry = Harness::registry_with(&[("alex", &token("pw"))]);
    let repo = fresh("always-down");
    let (image, digest) = push(&registry, &repo, "v1", "alex");
    let config = Config::with_auth(
        Format::Dockercfg,
        &[(&registry.addr(), "alex", registry.password("alex"))],
    );
    config
        .pull(&["--pull-behavior", "always", &image])
        .assert_code(0);
    let id = h.local_image_id(&image).expect("pulled");

    registry.stop();
    let out = config.pull(&["--json", "--pull-behavior", "always", &image]);
    out.assert_code(1).assert_stderr_has(&[&format!(
        "registry {} is unreachable or failing",
        registry.addr()
    )]);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        !out.stderr.contains("using the cached image"),
        "{}",
        out.stderr
    );
    // The cached image is still there; it simply was not used.
    assert_eq!(h.local_image_id(&image).as_ref(), Some(&id));

    // Back up: the same command succeeds again.
    registry.restart();
    let mark = registry.log_mark();
    let out = config.pull(&["--json", "--pull-behavior", "always", &image]);
    out.assert_code(0);
    assert_line(
        &out.single(),
        &image,
        Some(&digest),
        &registry.addr(),
        "alex",
        "up-to-date",
    );
    assert_only_user(&registry, mark, &repo, "alex");
}

// Proves once pulls the first time, then uses the local image without contacting the registry, and pulls again when the record or the image is missing.
#[test]
fn once_behavior_pulls_only_the_first_time() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("once");
    let (image, digest) = push(alpha, &repo, "v1", "alice");
    let key = alpha.addr();
    let data_dir = temp_dir("datadir");
    let data_dir = data_dir
        .path()
        .to_str()
        .expect("UTF-8 temp path")
        .to_string();
    let config = Config::with_auth(Format::Docker, &[(&key, "bob", alpha.password("bob"))])
        .set("ECS_DATADIR", &data_dir);
    let once = |config: &Config| config.pull(&["--json", "--pull-behavior", "once", &image]);

    // First time: pulled from the registry.
    let mark = alpha.log_mark();
    let out = once(&config);
    out.assert_code(0);
    assert_line(&out.single(), &image, Some(&digest), &key, "bob", "pulled");
    assert_only_user(alpha, mark, &repo, "bob");

    // Second time: the local image, no registry request at all.
    let mark = alpha.log_mark();
    let out = once(&config);
    out.assert_code(0);
    assert_line(&out.single(), &image, None, &key, "bob", "cached");
    assert_no_user(alpha, mark, &repo);

    // Another host (fresh ECS_DATADIR) with the image present: it pulls.
    let other_dir = temp_dir("datadir");
    let other = Config::with_auth(Format::Docker, &[(&key, "bob", alpha.password("bob"))]).set(
        "ECS_DATADIR",
        other_dir.path().to_str().expect("UTF-8 temp path"),
    );
    let mark = alpha.log_mark();
    let out = once(&other);
    out.assert_code(0);
    assert_line(
        &out.single(),
        &image,
        Some(&digest),
        &key,
        "bob",
        "up-to-date",
    );
    assert_only_user(alpha, mark, &repo, "bob");

    // Recorded as pulled but gone from the engine: it pulls again.
    h.remove_local(&image);
    let mark = alpha.log_mark();
    let out = once(&config);
    out.assert_code(0);
    assert_line(&out.single(), &image, Some(&digest), &key, "bob", "pulled");
    assert_only_user(alpha, mark, &repo, "bob");
}

// Proves prefer-cached pulls an absent image, then uses the local copy without contacting the registry.
#[test]
fn prefer_cached_behavior_uses_local_image_when_present() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("prefer-cached");
    let (image, digest) = push(alpha, &repo, "v1", "bob");
    let key = alpha.addr();
    let config = Config::with_auth(
        Format::Dockercfg,
        &[(&key, "alice", alpha.password("alice"))],
    );
    let prefer = || config.pull(&["--json", "--pull-behavior", "prefer-cached", &image]);

    let mark = alpha.log_mark();
    let out = prefer();
    out.assert_code(0);
    assert_line(
        &out.single(),
        &image,
        Some(&digest),
        &key,
        "alice",
        "pulled",
    );
    assert_only_user(alpha, mark, &repo, "alice");
    let id = h.local_image_id(&image).expect("pulled");

    let mark = alpha.log_mark();
    let out = prefer();
    out.assert_code(0);
    assert_line(&out.single(), &image, None, &key, "alice", "cached");
    assert_no_user(alpha, mark, &repo);
    assert_eq!(h.local_image_id(&image), Some(id));
}

// ---------------------------------------------------------------------------
// Digests and bad input
// ---------------------------------------------------------------------------

// Proves a repo@sha256 reference pulls that manifest and reports its digest, and an unknown digest is "not found".
#[test]
fn digest_references_pull_exactly_that_manifest() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("by-digest");
    let (_, digest) = push(alpha, &repo, "v1", "alice");
    let key = alpha.addr();
    let config = Config::with_auth(Format::Docker, &[(&key, "bob", alpha.password("bob"))]);

    let image = format!("{}/{repo}@{digest}", alpha.addr());
    let mark = alpha.log_mark();
    let out = config.pull(&["--json", &image]);
    out.assert_code(0);
    assert_line(&out.single(), &image, Some(&digest), &key, "bob", "pulled");
    assert_only_user(alpha, mark, &repo, "bob");
    assert!(h.local_image_id(&image).is_some());

    let unknown = format!("{}/{repo}@sha256:{}", alpha.addr(), "0".repeat(64));
    assert_ne!(unknown, image);
    let out = config.pull(&[&unknown]);
    out.assert_code(1)
        .assert_stderr_has(&["was not found", &unknown])
        .assert_not_retried();
}

// Proves (issue #9) an image written with an uppercase host is pulled under exactly that name: the key matches case-insensitively, but the engine is asked for the task's spelling, so `docker image inspect` of the task's string finds it and the lower-cased name does not exist.
#[test]
fn uppercase_host_is_pulled_and_stored_under_the_tasks_spelling() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("upper-host");
    let (_, digest) = push(alpha, &repo, "v1", "alice");
    let port = alpha
        .addr()
        .rsplit_once(':')
        .expect("host:port")
        .1
        .to_owned();
    // dockerd resolves LOCALHOST as localhost and, it being loopback,
    // talks plain HTTP to it as it does to 127.0.0.1.
    let image = format!("LOCALHOST:{port}/{repo}:v1");
    let lowered = format!("localhost:{port}/{repo}:v1");
    let key = format!("localhost:{port}");
    let config = Config::with_auth(Format::Docker, &[(&key, "bob", alpha.password("bob"))]);

    let out = config.run("resolve", &["--json", &image]);
    out.assert_code(0);
    let line = out.single();
    assert_eq!(line["registry"], format!("LOCALHOST:{port}"), "{line}");
    assert_eq!(line["repository"], repo.as_str(), "{line}");
    assert_eq!(line["key"], key.as_str(), "{line}");

    let mark = alpha.log_mark();
    let out = config.pull(&["--json", &image]);
    out.assert_code(0);
    assert_line(&out.single(), &image, Some(&digest), &key, "bob", "pulled");
    assert_only_user(alpha, mark, &repo, "bob");
    assert!(
        h.local_image_id(&image).is_some(),
        "the engine has no image under {image}"
    );
    assert_eq!(
        h.local_image_id(&lowered),
        None,
        "pulled under the lower-cased {lowered}, not the task's {image}"
    );
    h.remove_local(&image);
}

// Proves an invalid image reference exits 2 before anything is pulled, even when valid references come with it.
#[test]
fn invalid_reference_is_bad_input() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("before-invalid");
    let (image, _) = push(alpha, &repo, "v1", "alice");
    let config = Config::with_auth(
        Format::Docker,
        &[(&alpha.addr(), "alice", alpha.password("alice"))],
    );
    let mark = alpha.log_mark();
    for bad in [
        "Not//A:Reference",
        "upper/Case:v1",
        "repo@sha256:short",
        "app:bad tag",
    ] {
        let out = config.pull(&[&image, bad]);
        out.assert_code(2)
            .assert_stderr_has(&["pullauth: invalid image reference", bad]);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    assert_no_user(alpha, mark, &repo);
    assert_eq!(h.local_image_id(&image), None);
}

// Proves a Hub-style reference whose first component has capitals (rejected by the engine with HTTP 400) is bad input: exit 2, no retries.
#[test]
fn uppercase_first_component_is_bad_input_and_not_retried() {
    let out = Config::anonymous().pull(&["UPPER/case:v1"]);
    out.assert_not_retried()
        .assert_code(2)
        .assert_stderr_has(&["must be lowercase"]);
}

// Proves bad configuration (unknown auth type, malformed auth data, bad duration) exits 2 with a message that names the problem but not the secret.
#[test]
fn bad_configuration_is_bad_input() {
    let h = Harness::get();
    let image = h.alpha.image_ref(&fresh("bad-config"), "v1");
    let password = token("config-secret");

    let basic = Config::anonymous()
        .set("ECS_ENGINE_AUTH_TYPE", "basic")
        .set(
            "ECS_ENGINE_AUTH_DATA",
            &json!({ h.alpha.addr(): { "username": "alice", "password": password } }).to_string(),
        )
        .secret(&password);
    basic.pull(&[&image]).assert_code(2).assert_stderr_has(&[
        "ECS_ENGINE_AUTH_TYPE",
        "\"basic\"",
        "is not a supported type",
    ]);

    // Not JSON: the message must not quote the value.
    let malformed = Config::anonymous()
        .set("ECS_ENGINE_AUTH_TYPE", "docker")
        .set(
            "ECS_ENGINE_AUTH_DATA",
            &format!(
                "{{\"{}\": {{\"username\": \"alice\", \"password\": \"{password}\"",
                h.alpha.addr()
            ),
        )
        .secret(&password);
    malformed
        .pull(&[&image])
        .assert_code(2)
        .assert_stderr_has(&["ECS_ENGINE_AUTH_DATA"]);

    // From the process environment instead of the file.
    let timeout = Config::anonymous().env("ECS_IMAGE_PULL_INACTIVITY_TIMEOUT", "soon");
    timeout
        .pull(&[&image])
        .assert_code(2)
        .assert_stderr_has(&["ECS_IMAGE_PULL_INACTIVITY_TIMEOUT"]);
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

// Proves debug logging (logfmt and JSON) never prints a password, base64 "user:password" or the X-Registry-Auth header, on success or failure.
#[test]
fn debug_logging_never_prints_credentials() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = fresh("debug-secrets");
    let (image, _) = push(alpha, &repo, "v1", "alice");
    let key = alpha.addr();
    for (format, log_format) in [(Format::Docker, "logfmt"), (Format::Dockercfg, "json")] {
        // Success (Config::run checks every secret form after each run).
        h.remove_local(&image);
        let good = Config::with_auth(format, &[(&key, "bob", alpha.password("bob"))])
            .set("ECS_LOGLEVEL", "debug")
            .set("ECS_LOG_OUTPUT_FORMAT", log_format);
        good.pull(&[&image]).assert_code(0);

        // Rejected credentials: the engine's error travels through our logs.
        h.remove_local(&image);
        let bad = Config::with_auth(format, &[(&key, "alice", &token("wrong"))])
            .env("ECS_LOGLEVEL", "debug")
            .env("ECS_LOG_OUTPUT_FORMAT", log_format)
            .secret(alpha.password("alice"));
        let out = bad.pull(&["--pull-behavior", "always", &image]);
        out.assert_code(1)
            .assert_stderr_has(&["rejected the credentials"]);
        assert!(
            out.stderr.contains("level=debug") || out.stderr.contains("\"DEBUG\""),
            "debug logging was not on:\n{}",
            out.stderr
        );
    }
}
