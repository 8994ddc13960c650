//! Docker credential helpers consumed: a config.json in
//! ECS_ENGINE_AUTH_DATA whose `credHelpers` names a harness registry pulls
//! with what a REAL helper (`docker-credential-pass`, from
//! golang-docker-credential-helpers, over `pass` and a throwaway GPG key)
//! keeps; the registry's log shows the helper's user.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pullauth_integration::agent::{
    AgentSpec, ecs_config, random_token, scratch_dir, secret_needles,
};
use pullauth_integration::{Harness, Outcome, pullauth_command};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Environment that points gpg and pass at `dir`.
fn pass_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("GNUPGHOME".into(), dir.join("gnupg").display().to_string()),
        (
            "PASSWORD_STORE_DIR".into(),
            dir.join("store").display().to_string(),
        ),
        ("HOME".into(), dir.display().to_string()),
    ]
}

fn run(cmd: &mut Command, input: &[u8]) -> Outcome {
    Outcome::run_bounded(cmd, input, Duration::from_secs(60))
}

/// A password store with a fresh GPG key, holding `user`/`secret` for `server`.
fn pass_store(dir: &Path, server: &str, user: &str, secret: &str) {
    let env = pass_env(dir);
    std::fs::create_dir_all(dir.join("gnupg")).expect("gnupg dir");
    std::fs::set_permissions(
        dir.join("gnupg"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod gnupg");
    run(
        Command::new("gpg")
            .envs(env.clone())
            .args(["--batch", "--passphrase", "", "--quick-gen-key"])
            .args(["pullauth-test", "default", "default", "never"]),
        b"",
    )
    .assert_code(0);
    let listed = run(
        Command::new("gpg").envs(env.clone()).args([
            "--batch",
            "--with-colons",
            "--list-secret-keys",
        ]),
        b"",
    );
    listed.assert_code(0);
    let fpr = listed
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| !f.is_empty()))
        .expect("a fingerprint")
        .to_owned();
    run(
        Command::new("pass").envs(env.clone()).args(["init", &fpr]),
        b"",
    )
    .assert_code(0);
    let entry = serde_json::json!({ "ServerURL": server, "Username": user, "Secret": secret });
    run(
        Command::new("docker-credential-pass")
            .envs(env)
            .arg("store"),
        entry.to_string().as_bytes(),
    )
    .assert_code(0);
}

// Proves credHelpers {"127.0.0.1:PORT": "pass"} with no inline auth pulls as the user docker-credential-pass keeps (registry log), labelled "helper pass", with no secret on stdout/stderr; a registry the helper has nothing for fails with exit 1 naming helper and registry; a helper that is not installed fails with a clear error.
#[test]
fn cred_helpers_pass_pulls_as_the_helpers_user() {
    let h = Harness::get();
    let password = format!("hugo-{}", random_token(20));
    let registry = Harness::registry_with(&[("hugo", &password)]);
    let repo = format!("credhelper-{}", std::process::id());
    h.push_fixture(&registry, &repo, "1", ("hugo", &password));
    let image = registry.image_ref(&repo, "1");

    let dir = scratch_dir("cred-helpers");
    pass_store(dir.path(), &registry.addr(), "hugo", &password);
    let env = pass_env(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let config = |helpers: serde_json::Value| {
        let data = serde_json::json!({ "auths": {}, "credHelpers": helpers });
        ecs_config(
            dir.path(),
            &format!("ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={data}\n"),
        )
    };
    let pull = |env_file: &Path| {
        Outcome::run_bounded(
            &mut pullauth_command(
                "pull",
                h.docker_host(),
                env_file,
                &env,
                &["--pull-behavior", "always", &image],
            ),
            b"",
            RUN_TIMEOUT,
        )
    };

    let env_file = config(serde_json::json!({ registry.addr(): "pass" }));
    let mark = registry.log_mark();
    let pulled = pull(&env_file);
    pulled
        .assert_code(0)
        .assert_no_panic()
        .assert_no_secret(&secret_needles(&password));
    assert!(pulled.stdout.contains("helper pass"), "{}", pulled.stdout);
    assert!(
        !pulled.stderr.contains("ignoring top-level field"),
        "{}",
        pulled.stderr
    );
    let users = registry.users_since_in(mark, &repo);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "hugo"),
        "the registry saw {users:?}"
    );
    h.remove_local(&image);

    // A second store that holds nothing for this registry.
    let empty = scratch_dir("cred-helpers-empty");
    pass_store(empty.path(), "other.example:1", "nobody", "x");
    let empty_env = pass_env(empty.path());
    let empty_env: Vec<(&str, &str)> = empty_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let failed = Outcome::run_bounded(
        &mut pullauth_command(
            "pull",
            h.docker_host(),
            &env_file,
            &empty_env,
            &["--pull-behavior", "always", &image],
        ),
        b"",
        RUN_TIMEOUT,
    );
    failed
        .assert_code(1)
        .assert_no_panic()
        .assert_no_secret(&secret_needles(&password));
    let want = format!("helper pass has no credentials for {}", registry.addr());
    assert!(failed.stderr.contains(&want), "{}", failed.stderr);

    // Regression (issue 25): a helper whose login the registry refuses was
    // told to check ECS_ENGINE_AUTH_DATA. The advice names the helper and
    // the server URL it was asked for.
    let stale = scratch_dir("cred-helpers-stale");
    let stale_password = format!("stale-{}", random_token(20));
    pass_store(stale.path(), &registry.addr(), "hugo", &stale_password);
    let stale_env = pass_env(stale.path());
    let stale_env: Vec<(&str, &str)> = stale_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let refused = Outcome::run_bounded(
        &mut pullauth_command(
            "pull",
            h.docker_host(),
            &env_file,
            &stale_env,
            &["--pull-behavior", "always", &image],
        ),
        b"",
        RUN_TIMEOUT,
    );
    refused
        .assert_code(1)
        .assert_no_panic()
        .assert_no_secret(&secret_needles(&stale_password));
    let want = format!(
        "from credential helper docker-credential-pass for server URL {}",
        registry.addr()
    );
    assert!(refused.stderr.contains(&want), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains(&format!("docker login {}", registry.addr()))
            && !refused.stderr.contains("entry in ECS_ENGINE_AUTH_DATA"),
        "{}",
        refused.stderr
    );

    let missing = config(serde_json::json!({ registry.addr(): "pullauth-absent" }));
    let failed = pull(&missing);
    failed.assert_code(1).assert_no_panic();
    assert!(
        failed
            .stderr
            .contains("credential helper docker-credential-pullauth-absent was not found"),
        "{}",
        failed.stderr
    );
}

/// A task's credential helpers run at once, not one after another: each
/// helper of this one answers only once all of them have started (and
/// gives up after 5 s, well within the 10 s helper limit), so provisioning
/// the task's containers in turn would fail all but the last.
#[test]
fn a_tasks_helpers_run_at_the_same_time() {
    const CONTAINERS: usize = 4;
    let dir = scratch_dir("helper-barrier");
    let bin = dir.path().join("bin");
    let started = dir.path().join("started");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::fs::create_dir_all(&started).expect("barrier dir");
    let helper = bin.join("docker-credential-barrier");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n\
             server=$(cat)\n\
             touch '{started}'/$$\n\
             i=0\n\
             while [ \"$(ls '{started}' | wc -l)\" -lt {CONTAINERS} ]; do\n\
             \ti=$((i + 1))\n\
             \t[ $i -gt 100 ] && {{ echo 'not every helper started' >&2; exit 1; }}\n\
             \tsleep 0.05\n\
             done\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"barrier-user\",\"Secret\":\"barrier-pw\"}}' \"$server\"\n",
            started = started.display()
        ),
    )
    .expect("write helper");
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod helper");

    let hosts: Vec<String> = (0..CONTAINERS)
        .map(|i| format!("h{i}.pullauth.invalid"))
        .collect();
    let helpers: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .map(|h| (h.clone(), serde_json::Value::from("barrier")))
        .collect();
    let data = serde_json::json!({"auths": {}, "credHelpers": helpers});
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let spec = AgentSpec::new()
        .env_file_text(&format!(
            "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={data}\n"
        ))
        .env("PATH", &path);
    let agent = spec.start();
    let containers: Vec<serde_json::Value> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| serde_json::json!({"name": format!("c{i}"), "image": format!("{h}/app:1"), "essential": false}))
        .collect();
    let task =
        agent.submit(&serde_json::json!({"family": "barrier", "containerDefinitions": containers}));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    for c in task["Containers"].as_array().expect("containers") {
        assert_eq!(c["Username"], "barrier-user", "{task:#}");
        assert_eq!(c["RegistryKey"], "helper barrier", "{task:#}");
    }
    assert_eq!(
        std::fs::read_dir(&started).expect("barrier dir").count(),
        CONTAINERS,
        "each container runs its helper once"
    );
    assert!(
        !spec.logs().contains("barrier-pw"),
        "the log holds the helper's secret"
    );
}

// Regression (issue 17, findings 1 and 4), through `pullauth serve`: 10
// tasks of 10 containers of one image behind a credsStore helper ran the
// helper 100 times; now it runs once for them all. And POST /v1/verify of
// an image behind the helper ran it 0 times; now it runs it, as a pull
// does, and reports the helper's user.
#[test]
fn serve_runs_a_helper_once_for_many_containers_and_verify_runs_it() {
    let dir = scratch_dir("helper-count");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let log = dir.path().join("runs.log");
    let helper = bin.join("docker-credential-count");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n\
             server=$(cat)\n\
             echo \"$server\" >> '{log}'\n\
             sleep 0.2\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"count-user\",\"Secret\":\"count-canary-pw\"}}' \"$server\"\n",
            log = log.display()
        ),
    )
    .expect("write helper");
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod helper");
    let runs = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let data = serde_json::json!({"auths": {}, "credsStore": "count"});
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let spec = AgentSpec::new()
        .env_file_text(&format!(
            "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={data}\n"
        ))
        .env("PATH", &path);
    let agent = spec.start();
    // No registry listens on this host: the pulls fail, after credentials
    // were provided, which is all this test counts.
    let image = "count.pullauth.invalid/app:1";
    let containers: Vec<serde_json::Value> = (0..10)
        .map(|i| serde_json::json!({"name": format!("c{i}"), "image": image, "essential": false}))
        .collect();
    let taskdef = serde_json::json!({"family": "count", "containerDefinitions": containers});
    let arns: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                scope.spawn(|| {
                    agent.submit(&taskdef)["Arn"]
                        .as_str()
                        .expect("Arn")
                        .to_owned()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("submitted"))
            .collect()
    });
    for arn in &arns {
        let task = agent.wait_final(arn);
        for c in task["Containers"].as_array().expect("containers") {
            assert_eq!(c["RegistryKey"], "helper count", "{task:#}");
            assert_eq!(c["Username"], "count-user", "{task:#}");
        }
    }
    assert_eq!(
        runs(),
        ["count.pullauth.invalid"],
        "one helper run for 100 containers"
    );

    let body = serde_json::json!({"images": ["verified.pullauth.invalid/app:1"]}).to_string();
    let response = agent.control("POST", "/v1/verify", body.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert!(answer[0]["key"].is_null(), "{answer}");
    assert_eq!(answer[0]["source"], "helper", "{answer}");
    assert_eq!(answer[0]["from"], "helper count", "{answer}");
    assert_eq!(answer[0]["username"], "count-user", "{answer}");
    assert_eq!(
        runs(),
        ["count.pullauth.invalid", "verified.pullauth.invalid"],
        "verify ran the helper"
    );
    assert!(!response.text().contains("count-canary-pw"));
    assert!(
        !spec.logs().contains("count-canary-pw"),
        "the log holds the helper's secret"
    );
}
