//! Bounded in practice (issue 17): one agent per data directory, reloads
//! that never hold the APIs, S3 env files read no further than the limit,
//! a 413 that reaches a client that writes before it reads, metrics that
//! Prometheus's own checker accepts, and reloads that say what they cannot
//! apply.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pullauth_integration::agent::{AgentSpec, docker_auth_config, random_token};
use pullauth_integration::{
    Harness, Outcome, S3Mode, S3Stub, ensure_tools, pullauth_aws_env, pullauth_bin,
    pullauth_command,
};

/// The log lines that contain `needle`.
fn lines_with(spec: &AgentSpec, needle: &str) -> Vec<String> {
    spec.logs()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// Polls `done` every 20 ms for at most `limit` (a bound on a wait that
/// should end in milliseconds, not a timing assertion).
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_agent_on_one_data_dir_exits_2_naming_the_first_and_pull_once_still_shares_it() {
    let h = Harness::get();
    let data = tempfile::tempdir().expect("tempdir");
    let first_spec = AgentSpec::new().data_dir(data.path());
    let first = first_spec.start();

    // The second one has its own --listen and --control-socket: only the
    // data directory is shared.
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut second = Command::new(pullauth_bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DOCKER_HOST", h.docker_host())
        .env("ECS_DATADIR", data.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--control-socket"])
        .arg(scratch.path().join("second.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second agent on one ECS_DATADIR kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("PID {}", first.pid())),
        "names the holder: {stderr}"
    );
    assert!(stderr.contains("ECS_DATADIR"), "{stderr}");

    // `pull --pull-behavior once` reads and writes the same store meanwhile.
    let repo = format!("lock/r{}", random_token(8).to_ascii_lowercase());
    h.push_fixture(&h.alpha, &repo, "1", ("alice", h.alpha.password("alice")));
    let image = h.alpha.image_ref(&repo, "1");
    let env_file = scratch.path().join("ecs.config");
    std::fs::write(
        &env_file,
        docker_auth_config(
            &[(&h.alpha.addr(), "alice", h.alpha.password("alice"))],
            &[],
        ),
    )
    .expect("env file");
    let data_dir = data.path().to_str().expect("utf8");
    let out = pullauth_command(
        "pull",
        h.docker_host(),
        &env_file,
        &[("ECS_DATADIR", data_dir)],
        &["--pull-behavior", "once", &image],
    )
    .output()
    .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first agent is unharmed.
    assert_eq!(first.get("/healthz").status, 200);
    drop(first);
}

/// `pullauth check --env-file s3://stub-bucket/<key>`, reading from `stub`.
fn check_s3_env_file(stub: &S3Stub, key: &str) -> std::process::Output {
    let env = pullauth_aws_env(&stub.endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pullauth_command(
        "check",
        Harness::get().docker_host(),
        Path::new(&format!("s3://stub-bucket/{key}")),
        &env,
        &[],
    )
    .output()
    .expect("runs")
}

/// The client left `stub`'s endless body early: what it read, plus what
/// socket buffers held when it left, is far below the 64 MiB on offer.
fn assert_stopped_reading(stub: &S3Stub) {
    wait_until("the stream to end", Duration::from_secs(30), || {
        stub.streamed().1 >= 1
    });
    let (sent, _) = stub.streamed();
    assert!(
        sent < 16 * 1024 * 1024,
        "{sent} bytes sent before the client stopped reading"
    );
}

#[test]
fn reloading_an_s3_env_file_against_a_stalled_endpoint_never_holds_the_apis() {
    let stub = S3Stub::start(S3Mode::Serve(b"ECS_CLUSTER=s3-stub\n".to_vec()));
    let mut spec = AgentSpec::new()
        .no_env_file()
        .arg("--env-file")
        .arg("s3://stub-bucket/ecs.config")
        .arg("--no-watch")
        // One worker thread, as on a one-vCPU instance: a reload that
        // blocks it blocks everything.
        .env("TOKIO_WORKER_THREADS", "1");
    for (k, v) in pullauth_aws_env(&stub.endpoint()) {
        spec = spec.env(k, &v);
    }
    let agent = spec.start();
    assert_eq!(agent.get_json("/v1/metadata")["Cluster"], "s3-stub");

    stub.set_mode(S3Mode::Stall);
    agent.sighup();
    wait_until("the reload reaching S3", Duration::from_secs(20), || {
        stub.stalled() >= 1
    });
    let metadata = agent.get("/v1/metadata");
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    // Structural, not timing: the reload was still waiting for S3 when
    // the answer came (no outcome logged, no reload counted).
    let outcomes = lines_with(&spec, "configuration reload");
    assert!(
        outcomes.is_empty(),
        "the reload had ended before metadata answered: {outcomes:?}"
    );
    assert_eq!(agent.metric("pullauth_config_reload_failures_total"), 0.0);
    assert_eq!(agent.metric("pullauth_config_reloads_total"), 0.0);
}

/// Issue 24: a shared plan read from an S3 that accepts the connection
/// and never answers. The boot `prefetch --plan` fails within
/// `PULLAUTH_AWS_TIMEOUT`, naming the plan's object and the limit; a
/// `serve --follow-plan` on one worker thread answers its API while its
/// poll waits, then shows the same failure in `GET /v1/prefetch`.
#[test]
fn a_plan_read_from_a_stalled_s3_is_bounded_and_never_holds_the_api() {
    let h = Harness::get();
    let stub = S3Stub::start(S3Mode::Stall);
    let plan = "s3://stub-bucket/plans/prod.json";
    let config = "ECS_CLUSTER=prod\nPULLAUTH_AWS_TIMEOUT=2s\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("ecs.config");
    std::fs::write(&env_file, config).expect("env file");
    let aws_env = pullauth_aws_env(&stub.endpoint());
    let env: Vec<(&str, &str)> = aws_env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let mut cmd = pullauth_command(
        "prefetch",
        h.docker_host(),
        &env_file,
        &env,
        &["--plan", plan],
    );
    let out = Outcome::run_bounded(&mut cmd, b"", Duration::from_secs(60));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(plan) && out.stderr.contains("no answer (within 2s)"),
        "{}",
        out.stderr
    );
    assert!(stub.stalled() >= 1, "the stalled endpoint was not asked");

    let mut spec = AgentSpec::new()
        .env_file_text(config)
        .arg("--follow-plan")
        .arg(plan)
        .arg("--plan-interval")
        .arg("1s")
        .env("TOKIO_WORKER_THREADS", "1");
    for (k, v) in &aws_env {
        spec = spec.env(k, v);
    }
    let held = stub.stalled();
    let agent = spec.start();
    wait_until(
        "the follower's read reaching S3",
        Duration::from_secs(30),
        || stub.stalled() > held,
    );
    let metadata = agent.get("/v1/metadata");
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    wait_until(
        "the plan read failing in GET /v1/prefetch",
        Duration::from_secs(30),
        || {
            agent.get_json("/v1/prefetch")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(plan) && e.contains("no answer (within 2s)"))
        },
    );
}

#[test]
fn an_s3_env_file_without_a_length_is_read_no_further_than_the_limit() {
    const SENT_AT_MOST: u64 = 64 * 1024 * 1024;
    let stub = S3Stub::start(S3Mode::Stream(SENT_AT_MOST));
    let out = check_s3_env_file(&stub, "huge.config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("larger than 1048576 bytes"), "{stderr}");
    assert_stopped_reading(&stub);
}

#[test]
fn an_s3_env_file_in_a_bucket_of_another_region_is_read_there() {
    let stub = S3Stub::start(S3Mode::InRegion {
        region: "eu-central-1".into(),
        body: b"ECS_CLUSTER=from-frankfurt\n".to_vec(),
    });
    assert!(
        pullauth_aws_env(&stub.endpoint()).contains(&("AWS_REGION", "us-east-1".to_string())),
        "the configured region"
    );
    let out = check_s3_env_file(&stub, "ecs.config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("from-frankfurt"), "{stdout}");
    // Regression (issue 25): the start-up read ran before logging started,
    // so what it logged was lost. It is logged now, as every other line.
    assert!(
        stderr.contains("the bucket is in another region; reading it there")
            && stderr.contains("bucket_region=eu-central-1"),
        "{stderr}"
    );
    // Signed for the configured region, redirected, signed for the
    // bucket's: two requests, no retry of the redirect.
    assert_eq!(stub.signed_for(), ["us-east-1", "eu-central-1"]);
    // Path style on an IP endpoint; S3 logs and CloudTrail name the caller.
    // (`x-id=GetObject` is the generated client's, as for every S3 SDK.)
    for head in stub.heads() {
        assert!(
            head.starts_with("GET /stub-bucket/ecs.config?x-id=GetObject HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nuser-agent: pullauth/"),
            "{head}"
        );
    }
}

/// A redirect whose region could not be a region name is not followed:
/// the error says which region was used and what to set.
#[test]
fn an_s3_redirect_to_no_region_is_not_followed_and_says_what_to_set() {
    let stub = S3Stub::start(S3Mode::InRegion {
        region: "evil.example".into(),
        body: b"ECS_CLUSTER=never\n".to_vec(),
    });
    let out = check_s3_env_file(&stub, "ecs.config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the bucket is not in region us-east-1")
            && stderr.contains("set AWS_REGION to the bucket's region"),
        "{stderr}"
    );
    assert_eq!(stub.signed_for(), ["us-east-1"], "not followed");
}

/// An error answer's body is bounded too (the SDK reads it whole to find
/// S3's error code): an endless one fails the call instead of filling
/// memory.
#[test]
fn an_s3_error_body_without_a_length_is_read_no_further_than_its_limit() {
    const SENT_AT_MOST: u64 = 64 * 1024 * 1024;
    let stub = S3Stub::start(S3Mode::StreamError(SENT_AT_MOST));
    let out = check_s3_env_file(&stub, "ecs.config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("s3://stub-bucket/ecs.config"), "{stderr}");
    assert_stopped_reading(&stub);
}

#[test]
fn a_client_that_writes_a_2_mib_body_before_reading_gets_the_413() {
    let spec = AgentSpec::new();
    let _agent = spec.start();
    let mut stream = UnixStream::connect(spec.control_socket()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body = vec![b' '; 2 * 1024 * 1024];
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: pullauth\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    // As Python's http.client does: the whole request, then the answer.
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&body).expect("the whole body is accepted");
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{read:?}: {answer:.300}"
    );
    assert!(answer.contains("larger than 1024 KiB"), "{answer:.300}");
}

#[test]
fn promtool_finds_no_problem_in_the_metrics_and_openmetrics_is_served_when_asked() {
    ensure_tools(&[("promtool", "prometheus")]);
    let spec = AgentSpec::new();
    let agent = spec.start();
    let classic = agent.get("/metrics");
    assert_eq!(
        classic.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(classic.text().as_bytes())
        .expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool ends");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}\n{}", classic.text());
    assert!(report.trim().is_empty(), "{report}");

    let openmetrics = pullauth_integration::http::request(
        pullauth_integration::http::Target::Tcp(agent.listen()),
        "GET",
        "/metrics",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
        b"",
        pullauth_integration::http::REQUEST_TIMEOUT,
    )
    .expect("GET /metrics");
    assert_eq!(
        openmetrics.header("content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = openmetrics.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE pullauth_pulls_started counter\n"),
        "{text}"
    );
}

#[test]
fn a_reload_warns_naming_each_changed_variable_that_needs_a_restart() {
    let h = Harness::get();
    let cluster_before = format!("before-{}", random_token(8));
    let cluster_after = format!("after-{}", random_token(8));
    let data = tempfile::tempdir().expect("tempdir");
    let credentials = docker_auth_config(
        &[(&h.alpha.addr(), "alice", h.alpha.password("alice"))],
        &[],
    );
    let spec = AgentSpec::new().arg("--no-watch").env_file_text(&format!(
        "{credentials}\nECS_CLUSTER={cluster_before}\nECS_IMAGE_PULL_TIMEOUT=1m\n"
    ));
    let agent = spec.start();
    let data_dir = data.path().display().to_string();
    spec.write_env_file(&format!(
        "{credentials}\nECS_CLUSTER={cluster_after}\nECS_IMAGE_PULL_TIMEOUT=2m\n\
         ECS_LOGLEVEL=debug\nECS_DATADIR={data_dir}\n\
         ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=7h\nPULLAUTH_ECR=off\n"
    ));
    agent.sighup();
    assert_eq!(agent.wait_metric("pullauth_config_reloads_total", 1.0), 1.0);
    let warnings = lines_with(&spec, "until it is restarted");
    assert_eq!(warnings.len(), 1, "{}", spec.logs());
    let warning = &warnings[0];
    for var in [
        "ECS_CLUSTER",
        "ECS_LOGLEVEL",
        "ECS_DATADIR",
        "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION",
        "PULLAUTH_ECR",
    ] {
        assert!(warning.contains(var), "{var} missing: {warning}");
    }
    // What the reload applies is not listed; no value is shown.
    assert!(!warning.contains("ECS_IMAGE_PULL_TIMEOUT"), "{warning}");
    for value in [
        cluster_after.as_str(),
        cluster_before.as_str(),
        &data_dir,
        "7h",
    ] {
        assert!(!warning.contains(value), "{value} shown: {warning}");
    }
    // The running agent kept its cluster.
    assert_eq!(agent.get_json("/v1/metadata")["Cluster"], cluster_before);
}
