//! `--env-file s3://bucket/key`: the ecs.config is an S3 object (in moto),
//! read with the default credential chain at start and at every SIGHUP.
//! `check` and `pull` use it; `serve` picks up a replaced object on
//! SIGHUP; a missing bucket or key, a bad file and an unreachable endpoint
//! are clear errors that never quote the object.

use std::path::Path;

use pullauth_integration::agent::{
    AgentSpec, assert_no_secret, docker_auth_config, random_token, taskdef,
};
use pullauth_integration::{Harness, Moto, Registry, pullauth_command};

/// Environment for pullauth using `endpoint` with moto's static keys.
fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    pullauth_integration::pullauth_aws_env(endpoint)
}

/// A fresh bucket; returns its name.
fn bucket(moto: &Moto) -> String {
    let name = format!("pullauth-{}", random_token(10).to_ascii_lowercase());
    moto.boto3(
        &format!("client('s3').create_bucket(Bucket='{name}')\n"),
        None,
    );
    name
}

fn put(moto: &Moto, bucket: &str, key: &str, text: &str) {
    moto.boto3(
        &format!(
            "client('s3').put_object(Bucket='{bucket}', Key='{key}', Body={text:?}.encode())\n"
        ),
        None,
    );
}

/// An ecs.config giving `user` of `registry` (all its keys) for the registry.
fn config_for(registry: &Registry, user: &str) -> String {
    docker_auth_config(&[(&registry.addr(), user, registry.password(user))], &[])
}

fn push(registry: &Registry) -> String {
    let repo = format!("s3cfg/r{}", random_token(10).to_ascii_lowercase());
    Harness::get().push_fixture(registry, &repo, "1", ("alice", registry.password("alice")));
    registry.image_ref(&repo, "1")
}

/// The repository of an image reference `HOST:PORT/REPOSITORY:TAG`.
fn repository_of(image: &str) -> &str {
    let path = image.split_once('/').map_or(image, |(_, path)| path);
    path.rsplit_once(':')
        .map_or(path, |(repository, _)| repository)
}

/// Runs `pullauth <subcommand> --env-file <url> <args>` against `endpoint`.
fn run(subcommand: &str, url: &str, endpoint: &str, args: &[&str]) -> std::process::Output {
    let env = aws_env(endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pullauth_command(
        subcommand,
        Harness::get().docker_host(),
        Path::new(url),
        &env,
        args,
    )
    .output()
    .expect("runs")
}

#[test]
fn check_and_pull_read_the_env_file_from_s3() {
    let h = Harness::get();
    let moto = Moto::shared();
    let bucket = bucket(moto);
    put(
        moto,
        &bucket,
        "dir/ecs.config",
        &config_for(&h.alpha, "bob"),
    );
    let url = format!("s3://{bucket}/dir/ecs.config");
    let password = h.alpha.password("bob").to_string();

    let out = run("check", &url, &moto.endpoint(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&h.alpha.addr()), "{stdout}");
    assert!(stdout.contains("bob"), "{stdout}");
    assert!(stdout.contains(&format!("{url}:2")), "{stdout}");
    assert_no_secret("check's stdout", &out.stdout, &password);
    assert_no_secret("check's stderr", &out.stderr, &password);

    let image = push(&h.alpha);
    let mark = h.alpha.log_mark();
    let out = run("pull", &url, &moto.endpoint(), &[&image]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let users = h.alpha.users_since(mark);
    assert!(users.iter().any(|u| u == "bob"), "{users:?}");
    assert_no_secret("pull's stdout", &out.stdout, &password);
    assert_no_secret("pull's stderr", &out.stderr, &password);
}

#[test]
fn missing_bucket_key_bad_url_bad_file_and_unreachable_are_clear_errors() {
    let moto = Moto::shared();
    let bucket = bucket(moto);
    let canary = format!("CANARY{}", random_token(16));
    put(
        moto,
        &bucket,
        "bad.config",
        &format!("ECS_ENGINE_AUTH_TYPE=docker\nthis is not a line {canary}\n"),
    );
    put(moto, &bucket, "other.config", &format!("X={canary}\n"));
    let cases = [
        (
            format!("s3://{bucket}/missing.config"),
            2,
            "no such key \"missing.config\"".to_string(),
        ),
        (
            format!("s3://{bucket}-nope/other.config"),
            2,
            format!("no such bucket \"{bucket}-nope\""),
        ),
        ("s3://Bad_Bucket/x".to_string(), 2, "bucket names".into()),
        (
            format!("s3://{bucket}/bad.config"),
            2,
            format!("s3://{bucket}/bad.config:2"),
        ),
    ];
    for (url, code, needle) in &cases {
        for subcommand in ["check", "resolve"] {
            let args: &[&str] = if subcommand == "resolve" {
                &["busybox"]
            } else {
                &[]
            };
            let out = run(subcommand, url, &moto.endpoint(), args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(*code),
                "{subcommand} {url}: {stderr}"
            );
            assert!(
                stderr.contains(needle.as_str()),
                "{subcommand} {url}: {stderr}"
            );
            assert_no_secret("stderr", &out.stderr, &canary);
            assert_no_secret("stdout", &out.stdout, &canary);
        }
    }

    // Nothing listens on port 1: unreachable is an operational failure.
    let url = format!("s3://{bucket}/other.config");
    let out = run("check", &url, "http://127.0.0.1:1", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");

    // An endpoint override that cannot name an endpoint is a configuration
    // error, named, and its user info is never quoted. (The environment's
    // overrides are checked at start, before the env file is read from S3.)
    for (endpoint, needle) in [
        ("ftp://127.0.0.1:1", "the scheme must be http or https"),
        ("http://admin:hunter2@127.0.0.1:1", "user info"),
    ] {
        let out = run("check", &url, endpoint, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{endpoint}: {stderr}");
        assert!(
            stderr.contains("AWS_ENDPOINT_URL: not a usable endpoint: "),
            "{stderr}"
        );
        assert!(stderr.contains(needle), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn serve_rereads_the_s3_env_file_on_sighup() {
    let h = Harness::get();
    let moto = Moto::shared();
    let bucket = bucket(moto);
    put(moto, &bucket, "ecs.config", &config_for(&h.alpha, "alice"));
    let url = format!("s3://{bucket}/ecs.config");
    let mut spec = AgentSpec::new().no_env_file().arg("--env-file").arg(&url);
    for (k, v) in aws_env(&moto.endpoint()) {
        spec = spec.env(k, &v);
    }
    let agent = spec.start();
    let image = push(&h.alpha);

    let mark = h.alpha.log_mark();
    let task = agent.submit(&taskdef("s3a", &[("app", &image, false)]));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["Containers"][0]["Username"], "alice", "{task:#}");
    assert!(h.alpha.users_since(mark).iter().any(|u| u == "alice"));

    put(moto, &bucket, "ecs.config", &config_for(&h.alpha, "bob"));
    agent.sighup();
    assert_eq!(agent.wait_metric("pullauth_config_reloads_total", 1.0), 1.0);

    let image = push(&h.alpha);
    let mark = h.alpha.log_mark();
    let task = agent.submit(&taskdef("s3b", &[("app", &image, false)]));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["Containers"][0]["Username"], "bob", "{task:#}");
    // Only this image's repository: other tests pull from the shared
    // registry as alice meanwhile.
    let users = h.alpha.users_since_in(mark, repository_of(&image));
    assert!(users.iter().any(|u| u == "bob"), "{users:?}");
    assert!(!users.iter().any(|u| u == "alice"), "{users:?}");

    let log = spec.log_bytes();
    assert_no_secret("the log", &log, h.alpha.password("alice"));
    assert_no_secret("the log", &log, h.alpha.password("bob"));
}
