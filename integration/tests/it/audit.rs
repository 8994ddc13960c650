//! The secret-leak audit: every command and every error path, at
//! `ECS_LOGLEVEL=debug`, in both log formats, with canary credentials (a
//! password, a dockercfg `auth`, an identity token, a rejected password, a
//! secret only ever found in invalid configuration, and a secret in a task
//! definition's environment). Everything pullauth produces is searched for
//! every form a canary could take: stdout, stderr, the agent's log, every
//! introspection and control API response (`/metrics` included), `task
//! run` output, and the raw bytes of every file in every `ECS_DATADIR`.
//!
//! The forms searched for: each canary itself, every 12-character piece of
//! it, every base64 run that carries it at any byte offset (standard and
//! URL-safe alphabets; padding does not matter for inner runs), the base64
//! of `user:canary` (padded and unpadded), and the `X-Registry-Auth` JSON
//! in both alphabets. The audit also asserts that each path really ran
//! (exit statuses, messages, debug lines), so that it cannot pass by
//! exercising nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pullauth_integration::Outcome;
use pullauth_integration::agent::{
    AgentSpec, base64_fragments, base64_standard, base64_url_safe, random_token, scratch_dir,
    taskdef, wait_for,
};
use pullauth_integration::{Harness, Registry, Stall, free_port, pullauth_bin};
use serde_json::json;

/// A command that runs longer than this is a hang, reported as a failure.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Canaries and the needles made from them
// ---------------------------------------------------------------------------

/// A canary: letters and digits unique to this run, then `?>~`, which turn
/// into `/` and `+` in standard base64 (so both alphabets matter).
fn canary(kind: &str) -> String {
    format!("canary{kind}{}?>~", random_token(24))
}

/// Every secret the audit uses.
#[derive(Debug, Clone)]
struct Secrets {
    /// Password of user `canary` (docker-type `password`).
    password: String,
    /// Password of user `cfg`, only ever given inside `auth`.
    cfg_password: String,
    /// The dockercfg `auth`: base64 of `cfg:<cfg_password>`.
    auth: String,
    /// An identity token.
    token: String,
    /// A password the registry rejects.
    wrong: String,
    /// Only ever written into invalid configuration.
    bad: String,
    /// A secret in a task definition's `environment`.
    task_env: String,
}

impl Secrets {
    fn new() -> Secrets {
        let cfg_password = canary("CFG");
        Secrets {
            password: canary("PW"),
            auth: base64_standard(format!("cfg:{cfg_password}").as_bytes()),
            cfg_password,
            token: canary("TOK"),
            wrong: canary("WRONG"),
            bad: canary("BAD"),
            task_env: canary("ENV"),
        }
    }

    /// Every `(what, needle)` pair that must never appear in any output,
    /// with the `X-Registry-Auth` JSON for each of `hosts`.
    fn needles(&self, hosts: &[String]) -> Vec<(String, String)> {
        let mut needles = Vec::new();
        let secrets = [
            ("the password", &self.password),
            ("the dockercfg password", &self.cfg_password),
            ("the dockercfg auth", &self.auth),
            ("the identity token", &self.token),
            ("the rejected password", &self.wrong),
            ("the secret in invalid configuration", &self.bad),
            ("the secret in a task environment", &self.task_env),
        ];
        for (what, secret) in secrets {
            needles.push((what.to_string(), secret.to_string()));
            let chars: Vec<char> = secret.chars().collect();
            for window in chars.windows(12) {
                needles.push((format!("a piece of {what}"), window.iter().collect()));
            }
            for fragment in base64_fragments(secret.as_bytes()) {
                needles.push((format!("{what} inside base64"), fragment));
            }
        }
        for (user, secret) in [
            ("canary", &self.password),
            ("cfg", &self.cfg_password),
            ("canary", &self.wrong),
            ("canary", &self.bad),
        ] {
            let basic = format!("{user}:{secret}");
            for encoded in [
                base64_standard(basic.as_bytes()),
                base64_url_safe(basic.as_bytes()),
            ] {
                needles.push((format!("base64 of {user}:<secret>"), encoded.clone()));
                needles.push((
                    format!("unpadded base64 of {user}:<secret>"),
                    encoded.trim_end_matches('=').to_string(),
                ));
            }
        }
        let email = "canary@example.com";
        for host in hosts {
            let combos: Vec<Vec<(&str, &str)>> = vec![
                vec![
                    ("username", "canary"),
                    ("password", &self.password),
                    ("email", email),
                    ("serveraddress", host),
                ],
                vec![
                    ("username", "canary"),
                    ("password", &self.password),
                    ("serveraddress", host),
                ],
                vec![
                    ("username", "cfg"),
                    ("password", &self.cfg_password),
                    ("email", email),
                    ("serveraddress", host),
                ],
                vec![
                    ("username", "canary"),
                    ("password", &self.wrong),
                    ("serveraddress", host),
                ],
                vec![
                    ("username", "canary"),
                    ("serveraddress", host),
                    ("identitytoken", &self.token),
                ],
                vec![("serveraddress", host), ("identitytoken", &self.token)],
            ];
            for fields in combos {
                for needle in registry_auth_needles(&fields) {
                    needles.push(("the X-Registry-Auth header".to_string(), needle));
                }
            }
        }
        needles.sort();
        needles.dedup();
        needles
    }
}

/// The registry the audit pulls from (users `canary` and `cfg`) and the
/// secrets.
struct Canaries {
    registry: Registry,
    secrets: Secrets,
}

impl std::ops::Deref for Canaries {
    type Target = Secrets;
    fn deref(&self) -> &Secrets {
        &self.secrets
    }
}

impl Canaries {
    fn new() -> Canaries {
        let secrets = Secrets::new();
        let registry = Harness::registry_with(&[
            ("canary", &secrets.password),
            ("cfg", &secrets.cfg_password),
        ]);
        Canaries { registry, secrets }
    }

    fn addr(&self) -> String {
        self.registry.addr()
    }

    /// Pushes a small image as `canary`; returns its reference.
    fn push(&self, prefix: &str) -> String {
        let repo = format!("{prefix}/r{}", random_token(10).to_ascii_lowercase());
        Harness::get().push_fixture(&self.registry, &repo, "1", ("canary", &self.password));
        self.registry.image_ref(&repo, "1")
    }

    /// The needles, with `X-Registry-Auth` for this registry and `hosts`.
    fn needles(&self, hosts: &[String]) -> Vec<(String, String)> {
        let mut all = vec![self.addr()];
        all.extend(hosts.iter().cloned());
        self.secrets.needles(&all)
    }
}

/// The X-Registry-Auth JSON in insertion and sorted field order, and both
/// base64 encodings of each (padded and not).
fn registry_auth_needles(fields: &[(&str, &str)]) -> Vec<String> {
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut needles = Vec::new();
    for order in [fields.to_vec(), sorted] {
        let parts: Vec<String> = order
            .iter()
            .map(|(k, v)| format!("{}:{}", json!(k), json!(v)))
            .collect();
        let text = format!("{{{}}}", parts.join(","));
        for encoded in [
            base64_standard(text.as_bytes()),
            base64_url_safe(text.as_bytes()),
        ] {
            needles.push(encoded.trim_end_matches('=').to_string());
            needles.push(encoded);
        }
        needles.push(text);
    }
    needles
}

/// Searches everything pullauth produced for the needles; counts what it
/// searched so that the audit can show its coverage.
struct Scanner {
    needles: Vec<(String, String)>,
    scanned: Vec<(String, usize)>,
}

impl Scanner {
    fn new(needles: Vec<(String, String)>) -> Scanner {
        Scanner {
            needles,
            scanned: Vec::new(),
        }
    }

    /// The first hit in `bytes`: which secret, and the text around it
    /// with the secret marked.
    fn find_leak(&self, bytes: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(bytes);
        for (what, needle) in &self.needles {
            if let Some(at) = text.find(needle.as_str()) {
                let start = text[..at]
                    .char_indices()
                    .rev()
                    .nth(120)
                    .map_or(0, |(i, _)| i);
                let end = (at + needle.len() + 120).min(text.len());
                let end = (end..=text.len())
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(text.len());
                return Some(format!(
                    "{what} ({needle:?}):\n...{}...",
                    text[start..end].replace(needle.as_str(), "<<<LEAK>>>")
                ));
            }
        }
        None
    }

    /// Panics, naming the source and the kind of secret, on any hit.
    fn scan(&mut self, source: &str, bytes: &[u8]) {
        if let Some(leak) = self.find_leak(bytes) {
            panic!("{source} leaks {leak}");
        }
        self.scanned.push((source.to_string(), bytes.len()));
    }

    /// Scans every regular file below `dir` (the state file and anything
    /// else pullauth left there; sockets have no bytes to read).
    fn scan_dir(&mut self, what: &str, dir: &Path) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                self.scan_dir(what, &path);
            } else if meta.is_file() {
                let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                self.scan(&format!("{what} file {}", path.display()), &bytes);
            }
        }
    }

    fn summary(&self) -> String {
        let bytes: usize = self.scanned.iter().map(|(_, n)| n).sum();
        format!(
            "{} sources, {bytes} bytes, {} needles",
            self.scanned.len(),
            self.needles.len()
        )
    }
}

// ---------------------------------------------------------------------------
// Running pullauth
// ---------------------------------------------------------------------------

/// Runs the CLI with debug logging in one format and scans its output.
struct Cli<'a> {
    scanner: &'a mut Scanner,
    format: &'static str,
    dir: tempfile::TempDir,
    files: usize,
    debug_seen: bool,
}

impl Cli<'_> {
    /// Writes an env file (ecs.config) with `text`; returns its path.
    fn env_file(&mut self, text: &str) -> PathBuf {
        self.files += 1;
        let path = self.dir.path().join(format!("ecs{}.config", self.files));
        fs::write(&path, text).expect("cannot write ecs.config");
        path
    }

    /// Writes any file (task definitions, JSON config files).
    fn file(&mut self, name: &str, text: &str) -> PathBuf {
        self.files += 1;
        let path = self.dir.path().join(format!("{}-{name}", self.files));
        fs::write(&path, text).expect("cannot write file");
        path
    }

    /// `pullauth ARGS...` with PATH, DOCKER_HOST (the harness engine unless
    /// `env` says otherwise), debug logging in this format and `env`.
    fn run(&mut self, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
        let mut cmd = Command::new(pullauth_bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DOCKER_HOST", Harness::get().docker_host())
            .env("ECS_LOGLEVEL", "debug")
            .env("ECS_LOG_OUTPUT_FORMAT", self.format)
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied())
            .args(args);
        let outcome = Outcome::run_bounded(&mut cmd, stdin, RUN_TIMEOUT);
        let source = format!("`pullauth {}` ({})", args.join(" "), self.format);
        self.scanner
            .scan(&format!("{source} stdout"), outcome.stdout.as_bytes());
        self.scanner
            .scan(&format!("{source} stderr"), outcome.stderr.as_bytes());
        assert!(
            !outcome.stderr.contains("panicked"),
            "{source} panicked:\n{}",
            outcome.stderr
        );
        if outcome.stderr.contains("level=debug") || outcome.stderr.contains("\"DEBUG\"") {
            self.debug_seen = true;
        }
        outcome
    }

    /// `pullauth SUBCOMMAND --env-file ENV_FILE ARGS...`.
    fn with_file(
        &mut self,
        subcommand: &str,
        env_file: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Outcome {
        let file = env_file.to_str().expect("UTF-8 path").to_string();
        let mut all = vec![subcommand, "--env-file", &file];
        all.extend_from_slice(args);
        self.run(&all, env, b"")
    }
}

/// The `ECS_ENGINE_AUTH_DATA` env file for `kind` and `data`.
fn auth_config(kind: &str, data: &str) -> String {
    format!("ECS_ENGINE_AUTH_TYPE={kind}\nECS_ENGINE_AUTH_DATA={data}\n")
}

// ---------------------------------------------------------------------------
// The CLI: check, resolve, pull, serve that refuses, ECS_AGENT_CONFIG_FILE_PATH
// ---------------------------------------------------------------------------

fn cli_audit(format: &'static str) {
    let h = Harness::get();
    let c = Canaries::new();
    let addr = c.addr();
    let stall = Stall::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let ok_image = c.push("team");
    let tok_image = c.push("tok");
    let missing = c.registry.image_ref("team/never-pushed", "1");
    let mut scanner = Scanner::new(c.needles(&[stall.addr(), dead.clone()]));
    let mut cli = Cli {
        scanner: &mut scanner,
        format,
        dir: scratch_dir("audit-cli"),
        files: 0,
        debug_seen: false,
    };
    let email = "canary@example.com";

    // Configurations that work.
    let docker = auth_config(
        "docker",
        &json!({
            addr.clone(): {"username": "canary", "password": c.password, "email": email},
            format!("{addr}/tok"): {"username": "canary", "identitytoken": c.token},
            stall.addr(): {"username": "canary", "password": c.password},
            dead.clone(): {"username": "canary", "password": c.password},
        })
        .to_string(),
    );
    let dockercfg = auth_config(
        "dockercfg",
        &json!({
            addr.clone(): {"auth": c.auth, "email": email},
            format!("{addr}/tok"): {"identitytoken": c.token},
        })
        .to_string(),
    );
    let wrapped = auth_config(
        "dockercfg",
        &json!({
            "auths": {addr.clone(): {"auth": c.auth}},
            // Inline auth beats the store, so this helper is never run.
            "credsStore": "pullauth-audit-never-run",
        })
        .to_string(),
    );
    let wrong = auth_config(
        "docker",
        &json!({addr.clone(): {"username": "canary", "password": c.wrong}}).to_string(),
    );
    let docker_file = cli.env_file(&docker);
    let dockercfg_file = cli.env_file(&dockercfg);
    let wrapped_file = cli.env_file(&wrapped);
    let wrong_file = cli.env_file(&wrong);

    // check, valid.
    for (what, file) in [
        ("docker", &docker_file),
        ("dockercfg", &dockercfg_file),
        ("wrapped", &wrapped_file),
    ] {
        cli.with_file("check", file, &[], &[])
            .expect(what, 0, &["configuration is valid"]);
    }
    cli.with_file("check", &docker_file, &[], &[]).expect(
        "check lists the token key",
        0,
        &["identity token"],
    );

    // check, invalid: every kind of bad data, each holding the canary.
    let bad = &c.bad;
    let b64 = |text: &str| base64_standard(text.as_bytes());
    let mut not_utf8 = vec![0xff_u8, 0xfe];
    not_utf8.extend_from_slice(format!(":{bad}").as_bytes());
    let invalid: Vec<(&str, String, &str)> = vec![
        (
            "bad JSON after the password",
            auth_config(
                "docker",
                &format!("{{\"{addr}\": {{\"username\": \"canary\", \"password\": \"{bad}\""),
            ),
            "is not valid JSON",
        ),
        (
            "bad JSON right after the password",
            auth_config(
                "docker",
                &format!("{{\"{addr}\": {{\"username\": \"canary\", \"password\": \"{bad}\" x}}}}"),
            ),
            "is not valid JSON",
        ),
        (
            "bad base64",
            auth_config("dockercfg", &json!({addr.clone(): {"auth": bad}}).to_string()),
            "not valid base64",
        ),
        (
            "auth without a colon",
            auth_config("dockercfg", &json!({addr.clone(): {"auth": b64(bad)}}).to_string()),
            "has no ':'",
        ),
        (
            "auth not UTF-8",
            auth_config(
                "dockercfg",
                &json!({addr.clone(): {"auth": base64_standard(&not_utf8)}}).to_string(),
            ),
            "does not decode to UTF-8",
        ),
        (
            "entry not an object",
            auth_config("docker", &json!({addr.clone(): bad}).to_string()),
            "must be a JSON object",
        ),
        (
            "password of the wrong type",
            auth_config(
                "docker",
                &json!({addr.clone(): {"username": "canary", "password": [bad]}}).to_string(),
            ),
            "must be a string",
        ),
        (
            "email of the wrong type",
            auth_config(
                "docker",
                &json!({addr.clone(): {"username": "canary", "password": bad, "email": {"x": bad}}})
                    .to_string(),
            ),
            "must be a string",
        ),
        (
            "password twice",
            auth_config(
                "docker",
                &format!(
                    "{{\"{addr}\": {{\"username\": \"canary\", \"password\": \"{bad}\", \
                     \"password\": \"{bad}2\"}}}}"
                ),
            ),
            "appears twice",
        ),
        (
            "auth disagreeing with password",
            auth_config(
                "docker",
                &json!({addr.clone(): {"auth": b64(&format!("canary:{bad}")), "password": format!("x{bad}")}})
                    .to_string(),
            ),
            "disagree",
        ),
        (
            "password without username",
            auth_config("docker", &json!({addr.clone(): {"password": bad}}).to_string()),
            "has a password but no username",
        ),
        (
            "dockercfg with a password",
            auth_config(
                "dockercfg",
                &json!({addr.clone(): {"username": "canary", "password": bad}}).to_string(),
            ),
            "use \"auth\"",
        ),
        (
            "data that is a JSON array",
            auth_config("docker", &json!([bad]).to_string()),
            "must be a JSON object",
        ),
        (
            "credsStore that is not a helper name",
            auth_config(
                "dockercfg",
                &json!({"auths": {addr.clone(): {"auth": c.auth}}, "credsStore": bad}).to_string(),
            ),
            "is not a plain name",
        ),
        (
            "credHelpers naming a path",
            auth_config(
                "dockercfg",
                &json!({"auths": {}, "credHelpers": {addr.clone(): format!("../{bad}")}})
                    .to_string(),
            ),
            "is not a plain name",
        ),
        (
            "auths that is not an object",
            auth_config("docker", &json!({"auths": bad}).to_string()),
            "\"auths\" must be an object",
        ),
        (
            "a key that is not a registry",
            auth_config(
                "docker",
                &json!({"not a registry!": {"username": "canary", "password": bad}}).to_string(),
            ),
            "is not a registry",
        ),
        (
            "two keys for one registry",
            auth_config(
                "docker",
                &json!({
                    addr.clone(): {"username": "canary", "password": bad},
                    format!("https://{addr}/"): {"username": "canary", "password": format!("{bad}2")},
                })
                .to_string(),
            ),
            "name the same registry",
        ),
        (
            "unknown auth type",
            auth_config(
                "basic",
                &json!({addr.clone(): {"username": "canary", "password": bad}}).to_string(),
            ),
            "is not a supported type",
        ),
        (
            "data without type",
            format!(
                "ECS_ENGINE_AUTH_DATA={}\n",
                json!({addr.clone(): {"username": "canary", "password": bad}})
            ),
            "ECS_ENGINE_AUTH_TYPE is not",
        ),
        (
            "JSON split over two env file lines",
            format!(
                "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={{\"{addr}\":\n\
                 {{\"username\":\"canary\",\"password\":\"{bad}\"}}}}\n"
            ),
            "expected KEY=VALUE",
        ),
        (
            "a secret where a variable name belongs",
            format!("{bad}\n"),
            "expected KEY=VALUE",
        ),
    ];
    for (what, text, message) in &invalid {
        let file = cli.env_file(text);
        cli.with_file("check", &file, &[], &[])
            .expect(what, 2, &[message]);
    }
    // The same through the process environment.
    for (what, text, message) in invalid.iter().take(3) {
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("ECS_ENGINE_AUTH_DATA="))
            .expect("auth data line");
        let kind = if text.contains("TYPE=dockercfg") {
            "dockercfg"
        } else {
            "docker"
        };
        cli.run(
            &["check"],
            &[
                ("ECS_ENGINE_AUTH_TYPE", kind),
                ("ECS_ENGINE_AUTH_DATA", data),
            ],
            b"",
        )
        .expect(&format!("{what} (process env)"), 2, &[message]);
    }

    // resolve: text, --json, stdin, invalid references.
    cli.with_file("resolve", &docker_file, &[&ok_image, &tok_image], &[])
        .expect("resolve", 0, &["user \"canary\""]);
    let out = cli.with_file(
        "resolve",
        &dockercfg_file,
        &["--json", &ok_image, &tok_image],
        &[],
    );
    out.expect("resolve --json", 0, &["\"username\":\"cfg\""]);
    let file = docker_file.to_str().expect("UTF-8").to_string();
    cli.run(
        &["resolve", "--env-file", &file, "-"],
        &[],
        format!("{ok_image}\n{tok_image}\n").as_bytes(),
    )
    .expect("resolve from stdin", 0, &[&ok_image]);
    cli.with_file("resolve", &docker_file, &[&ok_image, "Not//A:Ref"], &[])
        .expect(
            "resolve with an invalid reference",
            2,
            &["invalid image reference"],
        );
    cli.with_file("resolve", &docker_file, &["--json", "UPPER/Case"], &[])
        .expect("resolve --json with an invalid reference", 2, &[]);

    // pull: success in every output mode and behavior.
    let data = scratch_dir("audit-once");
    let data_dir = data.path().to_str().expect("UTF-8").to_string();
    h.remove_local(&ok_image);
    cli.with_file("pull", &docker_file, &[&ok_image], &[])
        .expect("pull", 0, &["pulled "]);
    h.remove_local(&ok_image);
    cli.with_file("pull", &dockercfg_file, &["--json", &ok_image], &[])
        .expect("pull --json (dockercfg)", 0, &["\"status\":\"pulled\""]);
    h.remove_local(&ok_image);
    cli.with_file("pull", &wrapped_file, &["--quiet", &ok_image], &[])
        .expect("pull --quiet (wrapped)", 0, &[]);
    for behavior in ["default", "always", "once", "prefer-cached"] {
        h.remove_local(&ok_image);
        let env = [("ECS_DATADIR", data_dir.as_str())];
        cli.with_file(
            "pull",
            &docker_file,
            &["--json", "--pull-behavior", behavior, &ok_image],
            &env,
        )
        .expect(behavior, 0, &["\"status\":\"pulled\""]);
        cli.with_file(
            "pull",
            &docker_file,
            &["--pull-behavior", behavior, &ok_image],
            &env,
        )
        .expect(behavior, 0, &[]);
    }
    // pull: every failure.
    cli.with_file(
        "pull",
        &wrong_file,
        &["--pull-behavior", "always", &ok_image],
        &[],
    )
    .expect("wrong password", 1, &["rejected the credentials"]);
    cli.with_file("pull", &wrong_file, &[&ok_image], &[])
        .expect("wrong password, cached", 0, &["using the cached image"]);
    cli.with_file("pull", &wrong_file, &["--json", &ok_image], &[])
        .expect(
            "wrong password, cached, --json",
            0,
            &["\"status\":\"cached\""],
        );
    h.remove_local(&ok_image);
    cli.with_file("pull", &wrong_file, &["--quiet", &ok_image], &[])
        .expect("wrong password --quiet", 1, &["rejected the credentials"]);
    cli.with_file("pull", &docker_file, &[&missing], &[])
        .expect("not found", 1, &["was not found"]);
    cli.with_file("pull", &docker_file, &["--json", &missing], &[])
        .expect("not found --json", 1, &["was not found"]);
    let out = cli.with_file("pull", &docker_file, &[&tok_image], &[]);
    assert!(
        matches!(out.code, Some(0 | 1)),
        "identity token pull: {out:?}"
    );
    eprintln!(
        "audit: identity token pull exits {:?}: {}",
        out.code,
        out.stderr.lines().last().unwrap_or_default()
    );
    let out = cli.with_file("pull", &dockercfg_file, &["--json", &tok_image], &[]);
    assert!(
        matches!(out.code, Some(0 | 1)),
        "identity token pull (dockercfg): {out:?}"
    );
    cli.with_file("pull", &docker_file, &[&format!("{dead}/team/app:1")], &[])
        .expect(
            "unreachable registry",
            1,
            &["unreachable or failing", "retrying in"],
        );
    cli.with_file(
        "pull",
        &docker_file,
        &[&ok_image],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    )
    .expect("unreachable engine", 1, &["cannot reach the Docker Engine"]);
    cli.with_file(
        "pull",
        &docker_file,
        &["--quiet", &format!("{}/team/app:1", stall.addr())],
        &[("ECS_IMAGE_PULL_INACTIVITY_TIMEOUT", "2s")],
    )
    .expect("stalled", 1, &["stalled"]);
    cli.with_file("pull", &docker_file, &["Not//A:Ref"], &[])
        .expect(
            "pull of an invalid reference",
            2,
            &["invalid image reference"],
        );
    let bad_file = cli.env_file(&invalid[0].1);
    cli.with_file("pull", &bad_file, &[&ok_image], &[]).expect(
        "pull with invalid configuration",
        2,
        &["ECS_ENGINE_AUTH_DATA"],
    );

    // serve that refuses to start: invalid configuration.
    let socket = cli.dir.path().join("refused.sock");
    let socket = socket.to_str().expect("UTF-8").to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    for (what, text, _) in invalid.iter().take(4) {
        let file = cli.env_file(text);
        cli.with_file(
            "serve",
            &file,
            &["--listen", &listen, "--control-socket", &socket],
            &[],
        )
        .expect(&format!("serve with {what}"), 2, &[]);
    }

    // ECS_AGENT_CONFIG_FILE_PATH: valid (object and string forms), then broken.
    let empty = cli.env_file("");
    let object_form = json!({
        "EngineAuthType": "docker",
        "EngineAuthData": {addr.clone(): {"username": "canary", "password": c.password}},
        "Cluster": "audit",
    })
    .to_string();
    let string_form = json!({
        "EngineAuthType": "dockercfg",
        "EngineAuthData": json!({addr.clone(): {"auth": c.auth}}).to_string(),
    })
    .to_string();
    for (what, text) in [("object", &object_form), ("string", &string_form)] {
        let path = cli.file("agent-config.json", text);
        let path = path.to_str().expect("UTF-8").to_string();
        let env = [("ECS_AGENT_CONFIG_FILE_PATH", path.as_str())];
        cli.with_file("check", &empty, &[], &env)
            .expect(what, 0, &["configuration is valid"]);
        h.remove_local(&ok_image);
        cli.with_file("pull", &empty, &[&ok_image], &env)
            .expect(what, 0, &["pulled "]);
    }
    let broken: Vec<(&str, String, &str)> = vec![
        (
            "config file with a syntax error after the password",
            format!(
                "{{\"EngineAuthType\": \"docker\", \"EngineAuthData\": {{\"{addr}\": \
                 {{\"username\": \"canary\", \"password\": \"{bad}\""
            ),
            "is not a valid JSON object",
        ),
        (
            "config file with a syntax error right after the password",
            format!(
                "{{\"EngineAuthType\": \"docker\", \"EngineAuthData\": {{\"{addr}\": \
                 {{\"username\": \"canary\", \"password\": \"{bad}\" ]}}}}"
            ),
            "is not a valid JSON object",
        ),
        (
            "config file with a field of the wrong type",
            json!({"EngineAuthType": "docker", "EngineAuthData": [bad]}).to_string(),
            "must be a JSON object or a string",
        ),
        (
            "config file with Cluster of the wrong type",
            json!({"Cluster": {"x": bad}}).to_string(),
            "must be a string",
        ),
        (
            "config file whose EngineAuthData string is bad JSON",
            json!({
                "EngineAuthType": "docker",
                "EngineAuthData": format!("{{\"{addr}\": {{\"password\": \"{bad}\""),
            })
            .to_string(),
            "ECS_ENGINE_AUTH_DATA",
        ),
        (
            "config file that is a JSON string",
            json!(bad).to_string(),
            "is not a valid JSON object",
        ),
    ];
    for (what, text, message) in &broken {
        let path = cli.file("agent-config.json", text);
        let path = path.to_str().expect("UTF-8").to_string();
        let env = [("ECS_AGENT_CONFIG_FILE_PATH", path.as_str())];
        cli.with_file("check", &empty, &[], &env)
            .expect(what, 2, &[&path, message]);
        cli.with_file("pull", &empty, &[&ok_image], &env)
            .expect(what, 2, &[message]);
        cli.with_file(
            "serve",
            &empty,
            &["--listen", &listen, "--control-socket", &socket],
            &env,
        )
        .expect(what, 2, &[message]);
    }
    let missing_file = cli.dir.path().join("no-such-config.json");
    cli.with_file(
        "check",
        &empty,
        &[],
        &[(
            "ECS_AGENT_CONFIG_FILE_PATH",
            missing_file.to_str().expect("UTF-8"),
        )],
    )
    .expect("missing config file", 2, &["cannot read"]);

    // task run without an agent.
    let def = cli.file(
        "task.json",
        &taskdef("audit", &[("app", &ok_image, true)]).to_string(),
    );
    cli.run(
        &[
            "task",
            "run",
            "--control-socket",
            &socket,
            def.to_str().expect("UTF-8"),
        ],
        &[],
        b"",
    )
    .expect("task run without an agent", 1, &["cannot connect"]);

    let debug_seen = cli.debug_seen;
    drop(cli);
    scanner.scan_dir("the `once` ECS_DATADIR", data.path());
    assert!(debug_seen, "no run logged at debug level");
    eprintln!("audit (CLI, {format}): clean; {}", scanner.summary());
}

// Proves no form of any canary secret reaches stdout or stderr of check, resolve, pull (every behavior, output mode and failure) or a refusing serve, with logfmt debug logging, nor the `once` state file.
#[test]
fn cli_never_leaks_secrets_logfmt() {
    cli_audit("logfmt");
}

// Proves the same as the logfmt CLI audit with ECS_LOG_OUTPUT_FORMAT=json.
#[test]
fn cli_never_leaks_secrets_json() {
    cli_audit("json");
}

// ---------------------------------------------------------------------------
// Typos: configuration copied wrongly, with a canary where pullauth does not
// expect a secret (issue #8)
// ---------------------------------------------------------------------------

/// The mistakes operators make copying ecs.config from the ECS
/// documentation, each with the canary `bad` where pullauth does not expect
/// a secret: `(what, env file, text the message must hold)`. `host` is the
/// registry the keys name.
fn typo_configs(s: &Secrets, host: &str) -> Vec<(&'static str, String, String)> {
    let bad = &s.bad;
    let docker_json = json!({host: {"username": "canary", "password": bad}}).to_string();
    let auth = base64_standard(format!("canary:{bad}").as_bytes());
    let dockercfg_json = json!({host: {"auth": auth}}).to_string();
    vec![
        (
            "swapped variables",
            format!("ECS_ENGINE_AUTH_TYPE={docker_json}\nECS_ENGINE_AUTH_DATA=docker\n"),
            "the two variables are swapped".into(),
        ),
        (
            "swapped variables (dockercfg)",
            format!("ECS_ENGINE_AUTH_DATA=dockercfg\nECS_ENGINE_AUTH_TYPE={dockercfg_json}\n"),
            "the two variables are swapped".into(),
        ),
        (
            "auth data JSON in the type variable",
            format!("ECS_ENGINE_AUTH_TYPE={docker_json}\n"),
            "looks like the JSON of ECS_ENGINE_AUTH_DATA: are the two variables swapped?".into(),
        ),
        (
            "the documentation's one-line example pasted as one line, beside a data line",
            format!(
                "ECS_ENGINE_AUTH_TYPE=dockercfg ECS_ENGINE_AUTH_DATA={dockercfg_json}\n\
                 ECS_ENGINE_AUTH_DATA={{}}\n"
            ),
            "ECS_ENGINE_AUTH_TYPE and ECS_ENGINE_AUTH_DATA must be on separate lines".into(),
        ),
        (
            "the documentation's one-line example pasted as one line (docker)",
            format!("ECS_ENGINE_AUTH_TYPE=docker ECS_ENGINE_AUTH_DATA={docker_json}\n"),
            "ECS_ENGINE_AUTH_TYPE and ECS_ENGINE_AUTH_DATA must be on separate lines".into(),
        ),
        (
            "user info in a key",
            auth_config(
                "docker",
                &json!({format!("https://canary:{bad}@{host}"):
                    {"username": "canary", "password": bad}})
                .to_string(),
            ),
            format!("\"https://<userinfo redacted>@{host}\" is not a registry"),
        ),
        (
            "user info in a key (dockercfg, no scheme)",
            auth_config(
                "dockercfg",
                &json!({format!("canary:{bad}@{host}/team"): {"auth": auth}}).to_string(),
            ),
            "remove the user:password@ part".into(),
        ),
        (
            "auth data JSON in ECS_IMAGE_PULL_BEHAVIOR",
            format!("ECS_IMAGE_PULL_BEHAVIOR={docker_json}\n"),
            "the value looks like JSON".into(),
        ),
        (
            "auth data JSON in ECS_IMAGE_PULL_INACTIVITY_TIMEOUT",
            format!("ECS_IMAGE_PULL_INACTIVITY_TIMEOUT={dockercfg_json}\n"),
            "the value looks like JSON".into(),
        ),
        (
            "auth data JSON in ECS_LOGLEVEL",
            format!("ECS_LOGLEVEL={docker_json}\n"),
            "the value looks like JSON".into(),
        ),
        (
            "auth data pasted onto the ECS_CLUSTER line",
            format!(
                "ECS_CLUSTER=prod ECS_ENGINE_AUTH_DATA={docker_json}\nECS_ENGINE_AUTH_TYPE=docker\n"
            ),
            "holds ECS_ENGINE_AUTH_DATA=... after its value".into(),
        ),
        (
            "auth data pasted onto the ECS_DATADIR line",
            format!("ECS_DATADIR=/var/lib/ecs/data\tECS_ENGINE_AUTH_DATA={dockercfg_json}\n"),
            "holds ECS_ENGINE_AUTH_DATA=... after its value".into(),
        ),
        (
            "auth data JSON on the line after ECS_ENGINE_AUTH_DATA=",
            format!("ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA=\n{docker_json}\n"),
            "found a line that starts with '{'".into(),
        ),
    ]
}

fn typo_audit(format: &'static str) {
    let secrets = Secrets::new();
    let host = format!("127.0.0.1:{}", free_port());
    let image = format!("{host}/team/app:1");
    let mut scanner = Scanner::new(secrets.needles(std::slice::from_ref(&host)));
    let typos = typo_configs(&secrets, &host);
    let mut cli = Cli {
        scanner: &mut scanner,
        format,
        dir: scratch_dir("audit-typos"),
        files: 0,
        debug_seen: false,
    };

    // Every command that reads the configuration refuses it, saying what
    // is wrong without quoting it.
    let socket = cli.dir.path().join("refused.sock");
    let socket = socket.to_str().expect("UTF-8").to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    for (what, text, message) in &typos {
        let file = cli.env_file(text);
        let message = message.as_str();
        cli.with_file("check", &file, &[], &[]).expect(
            &format!("check with {what}"),
            2,
            &[message],
        );
        cli.with_file("resolve", &file, &[&image], &[]).expect(
            &format!("resolve with {what}"),
            2,
            &[message],
        );
        cli.with_file("resolve", &file, &["--json", &image], &[])
            .expect(&format!("resolve --json with {what}"), 2, &[message]);
        cli.with_file("pull", &file, &[&image], &[]).expect(
            &format!("pull with {what}"),
            2,
            &[message],
        );
        cli.with_file("pull", &file, &["--json", &image], &[])
            .expect(&format!("pull --json with {what}"), 2, &[message]);
        cli.with_file(
            "serve",
            &file,
            &["--listen", &listen, "--control-socket", &socket],
            &[],
        )
        .expect(&format!("serve with {what}"), 2, &[message]);
    }
    // The auth mistakes through the process environment (`docker run -e`).
    let docker_json = json!({host.clone(): {"username": "canary", "password": secrets.bad}});
    let one_line = format!("dockercfg ECS_ENGINE_AUTH_DATA={docker_json}");
    let empty = cli.env_file("");
    for (what, env, message) in [
        (
            "swapped variables",
            [
                ("ECS_ENGINE_AUTH_TYPE", docker_json.to_string()),
                ("ECS_ENGINE_AUTH_DATA", "docker".to_string()),
            ],
            "the two variables are swapped",
        ),
        (
            "the one-line example in one variable",
            [
                ("ECS_ENGINE_AUTH_TYPE", one_line.clone()),
                ("ECS_ENGINE_AUTH_DATA", "{}".to_string()),
            ],
            "must be on separate lines",
        ),
    ] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (command, args) in [("check", &[][..]), ("pull", &[image.as_str()][..])] {
            cli.with_file(command, &empty, args, &env).expect(
                &format!("{command} with {what} (process env)"),
                2,
                &[message],
            );
        }
    }
    drop(cli);

    // SIGHUP: a serve started with a good configuration rejects each typo,
    // logging why, and keeps running. --no-watch: a reload on the file
    // change as well would make the count at the end two per typo.
    let good = auth_config(
        "docker",
        &json!({host.clone(): {"username": "canary", "password": secrets.password}}).to_string(),
    );
    let spec = AgentSpec::new()
        .arg("--no-watch")
        .env("ECS_LOGLEVEL", "debug")
        .env("ECS_LOG_OUTPUT_FORMAT", format)
        .env_file_text(&good);
    let agent = spec.start();
    for (i, (what, text, message)) in typos.iter().enumerate() {
        spec.write_env_file(text);
        agent.sighup();
        let rejected = i + 1;
        wait_for(&format!("the reload with {what} to be rejected"), || {
            (spec.logs().matches("configuration reload rejected").count() >= rejected).then_some(())
        });
        scanner.scan(
            &format!("the agent's log after the reload with {what}"),
            &spec.log_bytes(),
        );
        let logs = spec.logs();
        let last = logs
            .lines()
            .rfind(|l| l.contains("configuration reload rejected"))
            .unwrap_or_default();
        // logfmt escapes quotes in values (as Rust's Debug does); compare without.
        assert!(
            last.replace("\\\"", "\"")
                .replace("\\'", "'")
                .contains(message.as_str()),
            "the rejected reload with {what} does not say {message:?}: {last}"
        );
    }
    // A rejection is counted just after its log line.
    assert_eq!(
        agent.wait_metric("pullauth_config_reload_failures_total", typos.len() as f64),
        typos.len() as f64
    );
    assert_eq!(agent.get("/healthz").status, 200);
    agent.get("/v1/registries");
    agent.get("/metrics");
    scanner.scan(
        "the API responses after rejected reloads",
        &agent.transcript(),
    );
    assert!(agent.terminate().success());
    scanner.scan("the agent's stdout and stderr", &spec.log_bytes());
    eprintln!("audit (typos, {format}): clean; {}", scanner.summary());
}

// Proves that configuration copied wrongly (auth variables swapped, the documentation's one-line example pasted as one line, user info in a key, the auth JSON in another variable or on its own line) is refused by check, resolve, pull and serve, at startup and on SIGHUP, with a message that names the mistake and no form of the canary, with logfmt debug logging.
#[test]
fn typos_never_leak_secrets_logfmt() {
    typo_audit("logfmt");
}

// Proves the same as the logfmt typo audit with ECS_LOG_OUTPUT_FORMAT=json.
#[test]
fn typos_never_leak_secrets_json() {
    typo_audit("json");
}

// ---------------------------------------------------------------------------
// The agent: serve, tasks, task run, SIGHUP, restart, APIs, state file
// ---------------------------------------------------------------------------

fn agent_audit(format: &'static str) {
    let h = Harness::get();
    let c = Canaries::new();
    let addr = c.addr();
    let stall = Stall::start();
    let ok_image = c.push("team");
    let reload_image = c.push("team");
    let tok_image = c.push("tok");
    let wrong_image = c.push("wrong");
    let missing = c.registry.image_ref("team/never-pushed", "1");
    let stalled = format!("{}/team/app:1", stall.addr());
    let mut scanner = Scanner::new(c.needles(&[stall.addr()]));
    let email = "canary@example.com";
    let data = scratch_dir("audit-data");
    let docker = auth_config(
        "docker",
        &json!({
            addr.clone(): {"username": "canary", "password": c.password, "email": email},
            format!("{addr}/tok"): {"username": "canary", "identitytoken": c.token},
            format!("{addr}/wrong"): {"username": "canary", "password": c.wrong},
            stall.addr(): {"username": "canary", "password": c.password},
        })
        .to_string(),
    );
    let spec = AgentSpec::new()
        .data_dir(data.path())
        .env("ECS_LOGLEVEL", "debug")
        .env("ECS_LOG_OUTPUT_FORMAT", format)
        .env("ECS_IMAGE_PULL_INACTIVITY_TIMEOUT", "2s")
        .env_file_text(&docker);
    let agent = spec.start();
    let task_run = |args: &[&str], file: &Path| -> Outcome {
        let mut cmd = spec.task_run();
        cmd.args(args).arg(file);
        Outcome::run_bounded(&mut cmd, b"", RUN_TIMEOUT)
    };
    let mut outputs: Vec<(String, Outcome)> = Vec::new();

    // task run: a valid task, one with a secret in its environment, invalid ones.
    let write = |name: &str, text: &str| {
        let path = spec.dir().join(format!("{name}.json"));
        fs::write(&path, text).expect("write task definition");
        path
    };
    let ok_def = write(
        "ok",
        &taskdef("audit", &[("app", &ok_image, true)]).to_string(),
    );
    let out = task_run(&["--wait", "--wait-timeout", "60s"], &ok_def);
    assert_eq!(out.code, Some(0), "task run --wait: {out:?}");
    outputs.push(("task run --wait".into(), out));
    let env_def = write(
        "env",
        &json!({
            "family": "with-env",
            "containerDefinitions": [{
                "name": "app",
                "image": ok_image,
                "environment": [{"name": "DB_PASSWORD", "value": c.task_env}],
                "secrets": [{"name": "TOKEN", "valueFrom": c.task_env}],
            }],
        })
        .to_string(),
    );
    let out = task_run(&["--wait", "--wait-timeout", "60s"], &env_def);
    assert_eq!(out.code, Some(0), "task with an environment: {out:?}");
    outputs.push(("task run with an environment secret".into(), out));
    for (name, text) in [
        (
            "not-json",
            format!(
                "{{\"family\": \"x\", \"containerDefinitions\": [{{\"environment\": \"{}\"",
                c.task_env
            ),
        ),
        (
            "no-image",
            json!({"family": "x", "containerDefinitions": [
                {"name": "a", "environment": [{"name": "P", "value": c.task_env}]}]})
            .to_string(),
        ),
        (
            "bad-family",
            json!({"family": {"x": c.task_env}, "containerDefinitions": []}).to_string(),
        ),
    ] {
        let out = task_run(&[], &write(name, &text));
        assert_eq!(out.code, Some(2), "invalid task {name}: {out:?}");
        outputs.push((format!("task run {name}"), out));
    }

    // Tasks that fail: not found, rejected password, identity token, stalled.
    let mut arns = Vec::new();
    for (name, image) in [
        ("missing", &missing),
        ("wrong", &wrong_image),
        ("token", &tok_image),
        ("stalled", &stalled),
    ] {
        let task = agent.submit(&taskdef(name, &[("app", image, true)]));
        arns.push(task["Arn"].as_str().expect("Arn").to_string());
    }
    for arn in &arns {
        let task = agent.wait_final(arn);
        if task["Family"] != "token" {
            assert_eq!(task["KnownStatus"], "STOPPED", "{task:#}");
        }
    }
    // The rejected pull again with a cached copy: falls back, logs the
    // engine's error at debug level.
    let tag = h.docker().args(["tag", &ok_image, &wrong_image]).output();
    assert!(tag.is_ok_and(|o| o.status.success()));
    let task = agent.submit(&taskdef("fallback", &[("app", &wrong_image, true)]));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");

    // SIGHUP: a good configuration (dockercfg), then bad ones holding a canary.
    let dockercfg = auth_config(
        "dockercfg",
        &json!({
            addr.clone(): {"auth": c.auth, "email": email},
            format!("{addr}/tok"): {"identitytoken": c.token},
        })
        .to_string(),
    );
    spec.write_env_file(&dockercfg);
    agent.sighup();
    agent.wait_metric("pullauth_config_reloads_total", 1.0);
    let task = agent.submit(&taskdef("reloaded", &[("app", &reload_image, true)]));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");
    assert_eq!(task["Containers"][0]["Username"], "cfg", "{task:#}");
    let task = agent.submit(&taskdef("token2", &[("app", &tok_image, true)]));
    agent.wait_final(task["Arn"].as_str().expect("Arn"));
    let bad_reloads = [
        auth_config(
            "docker",
            &format!(
                "{{\"{addr}\": {{\"username\": \"canary\", \"password\": \"{}\"",
                c.bad
            ),
        ),
        auth_config(
            "dockercfg",
            &json!({addr.clone(): {"auth": c.bad}}).to_string(),
        ),
        format!(
            "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={{\"{addr}\":\n\
             {{\"password\":\"{}\"}}}}\n",
            c.bad
        ),
    ];
    for (i, text) in bad_reloads.iter().enumerate() {
        spec.write_env_file(text);
        agent.sighup();
        agent.wait_metric("pullauth_config_reload_failures_total", (i + 1) as f64);
    }
    assert_eq!(agent.get("/healthz").status, 200);

    // Every API answer.
    let read_all = |agent: &pullauth_integration::agent::AgentClient| {
        for path in [
            "/",
            "/v1/metadata",
            "/v1/tasks",
            "/v1/registries",
            "/healthz",
            "/metrics",
            "/v1/nope",
        ] {
            agent.get(path);
        }
        agent.tcp("POST", "/v1/tasks", b"{}");
        agent.control("GET", "/v1/tasks", b"");
        agent.control("GET", "/healthz", b"");
        agent.control("POST", "/v1/tasks", c.bad.as_bytes());
        for task in agent.tasks() {
            agent.task(task["Arn"].as_str().expect("Arn"));
        }
    };
    read_all(&agent);
    let metrics = agent.metrics();
    assert!(metrics.contains("pullauth_pulls_failed_total"), "{metrics}");
    scanner.scan("the API responses", &agent.transcript());
    scanner.scan_dir("the live ECS_DATADIR", data.path());

    // Restart: SIGTERM, start again on the same state (with the good
    // configuration back), read everything again.
    assert!(agent.terminate().success());
    spec.write_env_file(&dockercfg);
    scanner.scan_dir("the stopped ECS_DATADIR", data.path());
    let agent = spec.start();
    read_all(&agent);
    scanner.scan("the API responses after a restart", &agent.transcript());
    assert!(agent.terminate().success());
    scanner.scan_dir("the ECS_DATADIR after a restart", data.path());

    for (what, out) in &outputs {
        scanner.scan(&format!("`{what}` stdout"), out.stdout.as_bytes());
        scanner.scan(&format!("`{what}` stderr"), out.stderr.as_bytes());
    }
    let logs = spec.log_bytes();
    let text = String::from_utf8_lossy(&logs);
    assert!(
        text.contains("level=debug") || text.contains("\"DEBUG\""),
        "debug logging was not on:\n{}",
        spec.log_tail(20)
    );
    for expected in [
        "configuration reload rejected",
        "configuration reloaded",
        "falling back to the cached image",
        "SIGTERM",
    ] {
        assert!(text.contains(expected), "the log lacks {expected:?}");
    }
    assert!(!text.contains("panicked"), "{}", spec.log_tail(40));
    scanner.scan("the agent's stdout and stderr", &logs);
    eprintln!("audit (agent, {format}): clean; {}", scanner.summary());
}

// Proves no form of any canary secret reaches the agent's logfmt debug log, its API responses and /metrics, `task run` output, or the state file, across tasks that succeed and fail, SIGHUP good and bad, and a restart.
#[test]
fn agent_never_leaks_secrets_logfmt() {
    agent_audit("logfmt");
}

// Proves the same as the logfmt agent audit with ECS_LOG_OUTPUT_FORMAT=json.
#[test]
fn agent_never_leaks_secrets_json() {
    agent_audit("json");
}

// Proves the scanner itself finds every form of a secret: raw, a 12-character piece, inside standard or URL-safe base64 at every offset (padded or not), and the X-Registry-Auth header; and passes clean text.
#[test]
fn scanner_finds_every_form_of_a_secret() {
    let secrets = Secrets::new();
    let host = "127.0.0.1:5000".to_string();
    let needles = secrets.needles(std::slice::from_ref(&host));
    let header = json!({"username": "canary", "password": secrets.password, "serveraddress": host})
        .to_string();
    let mut leaks = vec![
        secrets.password.clone(),
        secrets.token[3..20].to_string(),
        base64_url_safe(header.as_bytes()),
        base64_standard(format!("cfg:{}", secrets.cfg_password).as_bytes())
            .trim_end_matches('=')
            .to_string(),
        format!("auth={}", secrets.auth),
    ];
    for prefix in ["", "x", "xy", "{\"identitytoken\":\""] {
        let text = format!("{prefix}{}\"}}", secrets.token);
        leaks.push(base64_standard(text.as_bytes()));
        leaks.push(
            base64_url_safe(text.as_bytes())
                .trim_end_matches('=')
                .to_string(),
        );
        let text = format!("{prefix}{}", secrets.bad);
        leaks.push(base64_standard(text.as_bytes()));
    }
    let scanner = Scanner::new(needles.clone());
    for leak in leaks {
        assert!(
            scanner
                .find_leak(format!("level=info msg={leak}\n").as_bytes())
                .is_some(),
            "the scanner missed {leak:?}"
        );
    }
    let mut scanner = Scanner::new(needles);
    scanner.scan(
        "clean",
        b"level=info message=\"pulling\" key=127.0.0.1:5000 username=canary canaryPW",
    );
    assert_eq!(scanner.scanned.len(), 1);
}
