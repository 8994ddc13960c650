//! `pullauth config from-docker` against a config.json that a real
//! `docker login` wrote: the produced ecs.config lines pull as the user
//! who logged in (the registry's log says who authenticated).

use std::process::Command;
use std::time::Duration;

use pullauth_integration::agent::{ecs_config, random_token, scratch_dir, secret_needles};
use pullauth_integration::{Harness, Outcome, pullauth_bin, pullauth_command};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

// Proves the lines converted from a real `docker login` config.json pass --check and pull as the logged-in user, with registries kept by a credential helper named on stderr and no secret on stderr.
#[test]
fn docker_login_config_converts_to_lines_that_pull_as_the_user() {
    let h = Harness::get();
    let password = format!("fiona-{}", random_token(20));
    let registry = Harness::registry_with(&[("fiona", &password)]);
    let repo = format!("fromdocker-{}", std::process::id());
    h.push_fixture(&registry, &repo, "1", ("fiona", &password));
    let image = registry.image_ref(&repo, "1");

    let login = h.login_config(&registry, "fiona", &password);
    // A registry whose credentials a helper keeps, as on an ECR host.
    let config_json = login.path().join("config.json");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(&config_json).expect("docker login wrote config.json"),
    )
    .expect("config.json is JSON");
    config["credHelpers"] = serde_json::json!({ "helper.example.com": "ecr-login" });
    std::fs::write(&config_json, config.to_string()).expect("config.json rewritten");

    let converted = Outcome::run_bounded(
        Command::new(pullauth_bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DOCKER_CONFIG", login.path())
            .args(["config", "from-docker", "--check"]),
        b"",
        RUN_TIMEOUT,
    );
    converted.assert_code(0).assert_no_panic();
    for needle in secret_needles(&password) {
        assert!(
            !converted.stderr.contains(&needle),
            "stderr holds a secret: {}",
            converted.stderr
        );
    }
    assert!(
        converted.stderr.contains(
            "credHelpers \"ecr-login\" holds the credentials of: helper.example.com; pullauth \
             cannot read them inline"
        ),
        "{}",
        converted.stderr
    );
    let lines: Vec<&str> = converted.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "ECS_ENGINE_AUTH_TYPE=dockercfg");
    let data = lines[1]
        .strip_prefix("ECS_ENGINE_AUTH_DATA=")
        .expect("second line is ECS_ENGINE_AUTH_DATA");
    let data: Value = serde_json::from_str(data).expect("one line of JSON");
    assert!(data[registry.addr()]["auth"].is_string(), "{data}");

    let dir = scratch_dir("from-docker");
    let env_file = ecs_config(dir.path(), &converted.stdout);
    let mark = registry.log_mark();
    let pulled = Outcome::run_bounded(
        &mut pullauth_command(
            "pull",
            h.docker_host(),
            &env_file,
            &[],
            &["--pull-behavior", "always", &image],
        ),
        b"",
        RUN_TIMEOUT,
    );
    pulled
        .assert_code(0)
        .assert_no_panic()
        .assert_no_secret(&secret_needles(&password));
    assert!(
        pulled.stdout.contains("user \"fiona\""),
        "{}",
        pulled.stdout
    );
    let users = registry.users_since_in(mark, &repo);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "fiona"),
        "the registry saw {users:?}"
    );
    h.remove_local(&image);
}
