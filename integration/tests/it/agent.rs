//! End-to-end tests of the agent (`pullauth serve`): its APIs, task pulls
//! with the right credentials, persistence across restarts and crashes,
//! configuration reloads, single-flight pulls, secret hygiene, and running
//! as a container. Every test runs its own agent against the harness engine
//! and real htpasswd registries.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use pullauth_integration::agent::{
    AgentClient, AgentImage, AgentSpec, ContainerGuard, RegistryRequest, agent_image,
    base64_standard, base64_url_safe, container, docker_auth_config, http_unix, metric_value,
    random_token, repo_requests, scratch_dir, secret_needles, taskdef, wait_for,
};
use pullauth_integration::{Harness, Registry, free_port, pullauth_bin};
use serde_json::{Value, json};

/// A repository name nobody else uses, under `prefix`.
fn fresh_repo(prefix: &str) -> String {
    format!("{prefix}/r{}", random_token(10).to_ascii_lowercase())
}

/// Pushes a fresh fixture as `user` and returns (repository, image ref).
fn push(registry: &Registry, prefix: &str, user: &str) -> (String, String) {
    let repo = fresh_repo(prefix);
    Harness::get().push_fixture(registry, &repo, "1", (user, registry.password(user)));
    let image = registry.image_ref(&repo, "1");
    (repo, image)
}

/// The container named `name` in a task.
/// Runs a command to completion and returns its output.
fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `pullauth task run` and returns the task it printed; panics with
/// its output and the agent's log unless it succeeded.
fn task_run_ok(spec: &AgentSpec, cmd: &mut Command) -> Value {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "task run failed ({}):\n{}{}\nagent log:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        spec.log_tail(30)
    );
    serde_json::from_slice(&out.stdout).expect("task run prints JSON")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a task definition file in the agent's dir and returns its path.
fn taskdef_file(spec: &AgentSpec, name: &str, def: &Value) -> std::path::PathBuf {
    let path = spec.dir().join(format!("{name}.json"));
    fs::write(&path, def.to_string()).expect("cannot write task definition");
    path
}

/// The users of the requests on `repo` after `mark`; panics if there are none.
fn users_on(registry: &Registry, mark: usize, repo: &str) -> BTreeSet<String> {
    let requests = repo_requests(registry, mark, repo);
    assert!(
        !requests.is_empty(),
        "the registry logged no request for {repo}"
    );
    requests
        .iter()
        .map(|r| r.user.clone().unwrap_or_else(|| "<anonymous>".into()))
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Proves the introspection API's shape: metadata, command list, health,
/// registries without passwords, every metric, and that it is read-only.
#[test]
fn introspection_api_shape() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let cluster = format!("it-{}", random_token(6));
    let host_key = alpha.addr();
    let path_key = format!("{}/team", alpha.addr());
    let spec = AgentSpec::new()
        .env("ECS_CLUSTER", &cluster)
        .env_file_text(&docker_auth_config(
            &[
                (&host_key, "alice", alpha.password("alice")),
                (&path_key, "bob", alpha.password("bob")),
            ],
            &[],
        ));
    let agent = spec.start();

    let meta = agent.get_json("/v1/metadata");
    assert_eq!(meta["Cluster"], cluster.as_str(), "{meta}");
    assert!(meta["ContainerInstanceArn"].is_null(), "{meta}");
    let version = meta["Version"].as_str().expect("Version is a string");
    assert!(version.starts_with("pullauth v"), "{version}");
    assert!(!version.starts_with("pullauth vpullauth"), "{version}");

    for path in ["/", "/v1/does-not-exist", "/v2/metadata"] {
        let root = agent.get_json(path);
        let commands: Vec<&str> = root["AvailableCommands"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: no AvailableCommands: {root}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for expected in [
            "/v1/metadata",
            "/v1/tasks",
            "/v1/registries",
            "/healthz",
            "/metrics",
        ] {
            assert!(commands.contains(&expected), "{path}: {commands:?}");
        }
    }

    assert_eq!(agent.get("/healthz").status, 200);
    assert_eq!(agent.get_json("/v1/tasks")["Tasks"], json!([]));
    assert_eq!(agent.get("/v1/tasks?taskarn=arn%3Anope").status, 404);

    let registries = agent.get("/v1/registries");
    assert_eq!(registries.status, 200);
    let body = registries.text();
    for user in ["alice", "bob"] {
        assert!(
            !body.contains(alpha.password(user)),
            "/v1/registries leaks {user}'s password: {body}"
        );
    }
    let list = registries.json()["Registries"]
        .as_array()
        .cloned()
        .expect("Registries array");
    assert_eq!(list.len(), 2, "{body}");
    for (key, user) in [(&host_key, "alice"), (&path_key, "bob")] {
        let entry = list
            .iter()
            .find(|e| e["Key"] == key.as_str())
            .unwrap_or_else(|| panic!("no entry for {key}: {body}"));
        assert_eq!(entry["Username"], user, "{entry}");
        assert_eq!(entry["AuthenticatesWith"], "password", "{entry}");
        assert!(entry["AppliesTo"].is_string(), "{entry}");
    }

    let metrics = agent.metrics();
    for family in [
        "pullauth_pulls_started",
        "pullauth_pulls_succeeded",
        "pullauth_pulls_failed",
        "pullauth_pulls_shared",
        "pullauth_pull_retries",
        "pullauth_pull_duration_seconds",
        "pullauth_registry_keys",
        "pullauth_config_reloads",
        "pullauth_config_reload_failures",
        "pullauth_tasks_submitted",
    ] {
        // The classic format names the samples (`x_total` for a counter).
        assert!(
            metrics.contains(&format!("# TYPE {family} "))
                || metrics.contains(&format!("# TYPE {family}_total counter")),
            "{family} missing from /metrics:\n{metrics}"
        );
    }
    for sample in [
        "pullauth_pulls_started_total 0",
        "pullauth_pulls_succeeded_total 0",
        "pullauth_pulls_shared_total 0",
        "pullauth_pull_retries_total 0",
        "pullauth_pull_duration_seconds_count 0",
        "pullauth_registry_keys 2",
        "pullauth_config_reloads_total 0",
        "pullauth_config_reload_failures_total 0",
        "pullauth_tasks_submitted_total 0",
        "pullauth_pulls_failed_total{class=\"auth\"} 0",
        "pullauth_pulls_failed_total{class=\"not_found\"} 0",
        "pullauth_pulls_failed_total{class=\"registry_unavailable\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == sample),
            "no line {sample:?} in /metrics:\n{metrics}"
        );
    }

    // The TCP API is read-only: submitting there is refused and records nothing.
    let def = taskdef("web", &[("app", &alpha.image_ref("team/x", "1"), true)]);
    let post = agent.tcp("POST", "/v1/tasks", def.to_string().as_bytes());
    assert_eq!(post.status, 405, "{}", post.text());
    assert_eq!(agent.get_json("/v1/tasks")["Tasks"], json!([]));
    assert_eq!(agent.metric("pullauth_tasks_submitted_total"), 0.0);
}

/// Proves `task run --wait` pulls every container with the most specific
/// key's user (path key -> bob, host key -> alice) and reports it.
#[test]
fn task_run_pulls_with_the_matching_key() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let (team_repo, team_image) = push(alpha, "team", "alice");
    let (other_repo, other_image) = push(alpha, "other", "alice");
    let host_key = alpha.addr();
    let path_key = format!("{}/team", alpha.addr());
    let spec = AgentSpec::new().env_file_text(&docker_auth_config(
        &[
            (&host_key, "alice", alpha.password("alice")),
            (&path_key, "bob", alpha.password("bob")),
        ],
        &[],
    ));
    let agent = spec.start();
    let mark = alpha.log_mark();

    let file = taskdef_file(
        &spec,
        "web",
        &taskdef(
            "web",
            &[("app", &team_image, true), ("side", &other_image, true)],
        ),
    );
    let printed = task_run_ok(
        &spec,
        spec.task_run()
            .args(["--wait", "--wait-timeout", "60s"])
            .arg(&file),
    );
    assert_eq!(printed["KnownStatus"], "PULLED", "{printed:#}");
    assert_eq!(printed["Family"], "web");
    let arn = printed["Arn"].as_str().expect("Arn");
    let task = agent.task(arn).expect("the agent knows the task");
    assert_eq!(task["KnownStatus"], "PULLED");
    assert!(task["PullStartedAt"].is_string() && task["PullStoppedAt"].is_string());

    let app = container(&task, "app");
    assert_eq!(app["KnownStatus"], "PULLED");
    assert_eq!(app["RegistryKey"], path_key.as_str(), "{app}");
    assert_eq!(app["Username"], "bob", "{app}");
    assert_eq!(
        app["ImageID"].as_str(),
        h.local_image_id(&team_image).as_deref()
    );
    let side = container(&task, "side");
    assert_eq!(side["KnownStatus"], "PULLED");
    assert_eq!(side["RegistryKey"], host_key.as_str(), "{side}");
    assert_eq!(side["Username"], "alice", "{side}");
    assert_eq!(
        side["ImageID"].as_str(),
        h.local_image_id(&other_image).as_deref()
    );

    assert_eq!(
        users_on(alpha, mark, &team_repo),
        BTreeSet::from(["bob".to_string()])
    );
    assert_eq!(
        users_on(alpha, mark, &other_repo),
        BTreeSet::from(["alice".to_string()])
    );
    assert_eq!(agent.metric("pullauth_pulls_succeeded_total"), 2.0);
}

/// Regression: `task run` read `ECS_DATADIR` only from its own environment
/// while `serve` also reads the env file, so with `ECS_DATADIR` in
/// ecs.config (the usual case) `task run` knocked on /var/run/pullauth.sock.
/// Proves both now find `$ECS_DATADIR/pullauth.sock` from the same
/// `--env-file`, without `--control-socket` and without `ECS_DATADIR` in
/// either environment.
#[test]
fn task_run_finds_the_socket_from_the_env_file_as_serve_does() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let (_, image) = push(alpha, "envdir", "alice");
    let data = scratch_dir("datadir-in-env-file");
    let spec = AgentSpec::new()
        .env_file_text(&docker_auth_config(
            &[(&alpha.addr(), "alice", alpha.password("alice"))],
            &[],
        ))
        .data_dir_in_env_file(data.path());
    let agent = spec.start();
    let socket = data.path().join("pullauth.sock");
    assert!(
        fs::metadata(&socket).is_ok_and(|m| m.file_type().is_socket()),
        "serve did not bind {} from the env file's ECS_DATADIR:\n{}",
        socket.display(),
        spec.log_tail(30)
    );

    let file = taskdef_file(
        &spec,
        "envdir",
        &taskdef("envdir", &[("app", &image, true)]),
    );
    let printed = task_run_ok(
        &spec,
        Command::new(pullauth_bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args([
                "task",
                "run",
                "--wait",
                "--wait-timeout",
                "60s",
                "--env-file",
            ])
            .arg(spec.env_file())
            .arg(&file),
    );
    assert_eq!(printed["KnownStatus"], "PULLED", "{printed:#}");
    let arn = printed["Arn"].as_str().expect("Arn");
    assert!(agent.task(arn).is_some(), "the agent does not know {arn}");
}

/// Proves a failed essential pull stops the task with a clear PullError
/// (`task run --wait` exits 1), while a failed non-essential one does not.
#[test]
fn failed_pulls_stop_only_for_essential_containers() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let (repo, good) = push(alpha, "fail", "alice");
    let missing = alpha.image_ref(&repo, "missing");
    let spec = AgentSpec::new().env_file_text(&docker_auth_config(
        &[(&alpha.addr(), "alice", alpha.password("alice"))],
        &[],
    ));
    let agent = spec.start();

    let file = taskdef_file(&spec, "bad", &taskdef("bad", &[("app", &missing, true)]));
    let out = run(spec
        .task_run()
        .args(["--wait", "--wait-timeout", "60s"])
        .arg(&file));
    assert_eq!(
        out.status.code(),
        Some(1),
        "task run --wait must exit 1:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let task: Value = serde_json::from_slice(&out.stdout).expect("task run prints the task");
    assert_eq!(task["KnownStatus"], "STOPPED", "{task:#}");
    let app = container(&task, "app");
    assert_eq!(app["KnownStatus"], "STOPPED");
    assert!(app["ImageID"].is_null(), "{app}");
    let error = app["PullError"].as_str().expect("PullError is set");
    assert!(error.contains("not found"), "{error}");
    assert!(error.contains(&missing), "{error}");
    assert!(
        text(&out.stderr).contains("container app:"),
        "{}",
        text(&out.stderr)
    );
    let metrics = agent.metrics();
    assert!(
        metrics.contains("# TYPE pullauth_pulls_failed_total counter"),
        "{metrics}"
    );
    assert_eq!(
        agent.metric("pullauth_pulls_failed_total{class=\"not_found\"}"),
        1.0
    );

    let task = agent.submit(&taskdef(
        "mixed",
        &[("app", &good, true), ("optional", &missing, false)],
    ));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");
    let app = container(&task, "app");
    assert_eq!(app["KnownStatus"], "PULLED");
    assert_eq!(app["ImageID"].as_str(), h.local_image_id(&good).as_deref());
    let optional = container(&task, "optional");
    assert_eq!(optional["KnownStatus"], "STOPPED", "{optional}");
    assert!(
        optional["PullError"]
            .as_str()
            .is_some_and(|e| e.contains("not found")),
        "{optional}"
    );
}

/// Proves invalid task definitions get 400 with an error naming the field
/// (never quoting values), `task run` exits 2, and nothing is recorded.
#[test]
fn invalid_task_definitions_are_refused() {
    let secret = format!("hunter2-{}", random_token(12));
    let spec = AgentSpec::new();
    let agent = spec.start();
    let img = "127.0.0.1:5000/team/app:1";
    let cases = [
        ("this is not json".to_string(), "body"),
        ("[1, 2]".to_string(), "body"),
        (
            json!({"containerDefinitions": [{"name": "a", "image": img}]}).to_string(),
            "family",
        ),
        (
            json!({"family": " ", "containerDefinitions": [{"name": "a", "image": img}]})
                .to_string(),
            "family",
        ),
        (json!({"family": "f"}).to_string(), "containerDefinitions"),
        (
            json!({"family": "f", "containerDefinitions": []}).to_string(),
            "containerDefinitions",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"image": img}]}).to_string(),
            "containerDefinitions[0].name",
        ),
        (
            json!({"family": "f", "containerDefinitions": [
                {"name": "a", "environment": [{"name": "PASSWORD", "value": secret}]}]})
            .to_string(),
            "containerDefinitions[0].image",
        ),
        (
            json!({"family": "f", "containerDefinitions": [
                {"name": "a", "image": img}, {"name": "b", "image": "Bad/Image:1"}]})
            .to_string(),
            "containerDefinitions[1].image",
        ),
        (
            json!({"family": "f", "containerDefinitions": [
                {"name": "a", "image": img}, {"name": "a", "image": img}]})
            .to_string(),
            "containerDefinitions[1].name",
        ),
        (
            json!({"family": "f", "containerDefinitions": [
                {"name": "a", "image": img, "essential": "yes"}]})
            .to_string(),
            "containerDefinitions[0].essential",
        ),
    ];
    for (body, field) in &cases {
        let response = agent.control("POST", "/v1/tasks", body.as_bytes());
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        let error = response.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}: no error string: {}", response.text()))
            .to_string();
        assert!(
            error.starts_with(&format!("{field}: ")),
            "{body}: expected the error to name {field}: {error}"
        );
        assert!(!error.contains(&secret), "{error}");
    }

    for (i, (body, field)) in cases.iter().enumerate() {
        let file = spec.dir().join(format!("invalid{i}.json"));
        fs::write(&file, body).expect("write task definition");
        let out = run(spec.task_run().arg(&file));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{body}: task run must exit 2:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains(field), "{}", text(&out.stderr));
    }
    let out = run(spec.task_run().arg(spec.dir().join("no-such-file.json")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    assert_eq!(agent.tasks(), Vec::<Value>::new());
    assert_eq!(agent.metric("pullauth_tasks_submitted_total"), 0.0);
    assert!(!spec.logs().contains(&secret), "the log quotes a value");
}

/// Proves state survives SIGTERM and a restart (same tasks, same status,
/// no new pulls) and that the state file and control socket are mode 0600.
#[test]
fn state_survives_a_graceful_restart() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let (_, image) = push(alpha, "keep", "alice");
    let data = scratch_dir("data");
    let spec = AgentSpec::new()
        .data_dir(data.path())
        .env_file_text(&docker_auth_config(
            &[(&alpha.addr(), "alice", alpha.password("alice"))],
            &[],
        ));
    let state = spec.state_file().expect("data dir set");
    let socket = spec.control_socket();
    assert_eq!(socket, data.path().join("pullauth.sock"));

    let agent = spec.start();
    let task = agent.submit(&taskdef("keep", &[("app", &image, true)]));
    let arn = task["Arn"].as_str().expect("Arn").to_string();
    let before = agent.wait_final(&arn);
    assert_eq!(before["KnownStatus"], "PULLED", "{before:#}");
    assert_eq!(mode(&state), 0o600, "state file mode");
    assert!(
        fs::metadata(&socket)
            .expect("socket")
            .file_type()
            .is_socket()
    );
    assert_eq!(mode(&socket), 0o600, "control socket mode");

    let status = agent.terminate();
    assert!(status.success(), "SIGTERM exit status: {status}");
    assert!(spec.logs().contains("SIGTERM"), "{}", spec.log_tail(10));
    assert!(
        !socket.exists(),
        "the control socket is removed at shutdown"
    );

    let agent = spec.start();
    let tasks = agent.tasks();
    assert_eq!(tasks, vec![before.clone()], "tasks after restart");
    assert_eq!(agent.task(&arn), Some(before));
    assert_eq!(mode(&state), 0o600, "state file mode after restart");
    assert_eq!(mode(&socket), 0o600, "control socket mode after restart");
    // Nothing was unfinished, so nothing is pulled again. The agent decides
    // (and logs) what to resume before it says it is ready, so no waiting.
    assert!(
        !spec.logs().contains("resuming pulls that had not finished"),
        "{}",
        spec.log_tail(10)
    );
    assert_eq!(agent.metric("pullauth_pulls_started_total"), 0.0);
}

/// Proves a pull interrupted by kill -9 (registry down, pull retrying) is
/// resumed at the next start and completes with the right credentials.
#[test]
fn pull_interrupted_by_kill9_resumes_after_restart() {
    let h = Harness::get();
    let password = random_token(20);
    let registry = Harness::registry_with(&[("dave", &password)]);
    let (repo, image) = push(&registry, "slow", "dave");
    registry.stop();

    let data = scratch_dir("data");
    let spec = AgentSpec::new()
        .data_dir(data.path())
        .env_file_text(&docker_auth_config(
            &[(&registry.addr(), "dave", &password)],
            &[],
        ));
    let agent = spec.start();
    let task = agent.submit(&taskdef("slow", &[("app", &image, true)]));
    let arn = task["Arn"].as_str().expect("Arn").to_string();
    // The registry refuses connections: the pull fails transiently and retries.
    agent.wait_metric("pullauth_pull_retries_total", 1.0);
    let during = agent.task(&arn).expect("task");
    assert_eq!(during["KnownStatus"], "PULLING", "{during:#}");
    assert_eq!(container(&during, "app")["KnownStatus"], "PULLING");
    agent.kill9();

    registry.restart();
    let mark = registry.log_mark();
    let agent = spec.start();
    assert!(
        spec.logs().contains("resuming pulls that had not finished"),
        "{}",
        spec.log_tail(20)
    );
    let done = agent.wait_final(&arn);
    assert_eq!(done["KnownStatus"], "PULLED", "{done:#}");
    let app = container(&done, "app");
    assert_eq!(app["Username"], "dave");
    assert_eq!(app["ImageID"].as_str(), h.local_image_id(&image).as_deref());
    assert_eq!(
        users_on(&registry, mark, &repo),
        BTreeSet::from(["dave".to_string()])
    );
    assert_eq!(agent.metric("pullauth_pulls_succeeded_total"), 1.0);
}

/// Proves SIGHUP applies a good config (new key used, reloads_total 1) and
/// rejects a bad one (agent keeps serving with the old credentials,
/// reload_failures_total 1, log says rejected).
///
/// `--no-watch`: SIGHUP is what is under test, and the counts are exact. A
/// watching agent may also reload on the file change itself, before the
/// signal when the machine is busy, and count two.
#[test]
fn sighup_reloads_good_config_and_rejects_bad() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let (repo1, image1) = push(alpha, "hup", "alice");
    let (repo2, image2) = push(alpha, "hup", "alice");
    let spec = AgentSpec::new()
        .arg("--no-watch")
        .env_file_text("ECS_CLUSTER=hup\n");
    let agent = spec.start();
    assert_eq!(agent.get_json("/v1/registries")["Registries"], json!([]));

    let task = agent.submit(&taskdef("hup", &[("app", &image1, true)]));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["KnownStatus"], "STOPPED", "{task:#}");
    let error = container(&task, "app")["PullError"]
        .as_str()
        .expect("PullError")
        .to_string();
    assert!(error.contains("authentication"), "{error}");

    let key = alpha.addr();
    spec.write_env_file(&docker_auth_config(
        &[(&key, "alice", alpha.password("alice"))],
        &[("ECS_CLUSTER", "hup")],
    ));
    agent.sighup();
    assert_eq!(agent.wait_metric("pullauth_config_reloads_total", 1.0), 1.0);
    let registries = agent.get_json("/v1/registries")["Registries"].clone();
    assert_eq!(registries.as_array().map(Vec::len), Some(1), "{registries}");
    assert_eq!(registries[0]["Key"], key.as_str());
    assert_eq!(registries[0]["Username"], "alice");
    assert_eq!(agent.metric("pullauth_registry_keys"), 1.0);

    let mark = alpha.log_mark();
    let task = agent.submit(&taskdef("hup", &[("app", &image1, true)]));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");
    assert_eq!(container(&task, "app")["Username"], "alice");
    assert_eq!(
        users_on(alpha, mark, &repo1),
        BTreeSet::from(["alice".to_string()])
    );

    // Invalid JSON that would switch to bob if it were applied.
    spec.write_env_file(&format!(
        "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={{\"{key}\": {{\"username\": \"bob\", \
         \"password\": \"{}\"\n",
        alpha.password("bob")
    ));
    agent.sighup();
    assert_eq!(
        agent.wait_metric("pullauth_config_reload_failures_total", 1.0),
        1.0
    );
    assert_eq!(agent.metric("pullauth_config_reloads_total"), 1.0);
    assert!(
        spec.logs().contains("configuration reload rejected"),
        "{}",
        spec.log_tail(10)
    );
    assert_eq!(agent.get("/healthz").status, 200);
    let registries = agent.get_json("/v1/registries")["Registries"].clone();
    assert_eq!(registries[0]["Username"], "alice", "{registries}");

    let mark = alpha.log_mark();
    let task = agent.submit(&taskdef("hup", &[("app", &image2, true)]));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");
    assert_eq!(container(&task, "app")["Username"], "alice");
    assert_eq!(
        users_on(alpha, mark, &repo2),
        BTreeSet::from(["alice".to_string()])
    );
}

/// How many simultaneous submissions the fan-in tests make.
const FAN_IN: usize = 100;

/// Submits `FAN_IN` tasks for one fresh, uncached image at once (threads
/// released by a barrier) and checks that the registry saw exactly one
/// pull's worth of requests: as many (manifest and total) as a single
/// `pullauth pull` of a similar image, with 1 pull started and 99 shared.
///
/// The registry is kept from finishing the pull until every submission has
/// joined it, so that "one pull" never depends on how fast the submissions
/// are compared with the pull: [`Hold::Down`] stops the registry (the pull
/// keeps retrying), [`Hold::Frozen`] freezes it (the pull waits for
/// answers, never failing).
fn fan_in(hold: Hold) {
    let registry_down = hold == Hold::Down;
    let h = Harness::get();
    let password = random_token(20);
    let registry = Harness::registry_with(&[("erin", &password)]);
    let (ref_repo, ref_image) = push(&registry, "fan", "erin");
    let (repo, image) = push(&registry, "fan", "erin");
    assert!(h.local_image_id(&image).is_none());
    // No ECS_DATADIR: a persisted admission syncs to disk, and 100 of them
    // on a busy machine could outlast the stopped registry's retry budget
    // (about 10 s) before the test restarts it. Sharing does not depend on
    // where tasks are kept.
    let spec = AgentSpec::new().env_file_text(&docker_auth_config(
        &[(&registry.addr(), "erin", &password)],
        &[],
    ));

    // What one pull of a similar image costs at the registry.
    let mark = registry.log_mark();
    let out = run(Command::new(pullauth_bin())
        .env_clear()
        .env("DOCKER_HOST", h.docker_host())
        .args(["pull", "--quiet", "--env-file"])
        .arg(spec.env_file())
        .arg(&ref_image));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let one_pull = repo_requests(&registry, mark, &ref_repo);
    let manifests = |reqs: &[RegistryRequest], repo: &str| {
        let prefix = format!("/v2/{repo}/manifests/");
        reqs.iter().filter(|r| r.uri.starts_with(&prefix)).count()
    };
    let one_pull_manifests = manifests(&one_pull, &ref_repo);
    assert!(one_pull_manifests >= 1, "{one_pull:#?}");

    if registry_down {
        registry.stop();
    }
    let agent = spec.start();
    let frozen = (hold == Hold::Frozen).then(|| registry.hold());
    let mark = registry.log_mark();
    let barrier = Arc::new(Barrier::new(FAN_IN));
    let body = taskdef("fan", &[("app", &image, true)]).to_string();
    let socket = spec.control_socket();
    let started = Instant::now();
    let threads: Vec<_> = (0..FAN_IN)
        .map(|_| {
            let (barrier, body, socket) = (barrier.clone(), body.clone(), socket.clone());
            std::thread::spawn(move || {
                barrier.wait();
                http_unix(&socket, "POST", "/v1/tasks", body.as_bytes())
            })
        })
        .collect();
    let mut arns = Vec::new();
    for thread in threads {
        let response = thread
            .join()
            .expect("submitting thread panicked")
            .expect("POST /v1/tasks");
        assert_eq!(response.status, 201, "{}", response.text());
        arns.push(response.json()["Arn"].as_str().expect("Arn").to_string());
    }
    let admitted_in = started.elapsed();
    // Every container has joined the one pull, which is still in flight.
    agent.wait_metric("pullauth_pulls_shared_total", (FAN_IN - 1) as f64);
    assert_eq!(agent.metric("pullauth_pulls_started_total"), 1.0);
    if registry_down {
        // The first attempt fails against the stopped registry and is
        // retried; on a busy machine that may come after the last join.
        agent.wait_metric("pullauth_pull_retries_total", 1.0);
        registry.restart();
    }
    drop(frozen);
    for arn in &arns {
        let task = agent.wait_final(arn);
        assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");
    }
    let all_pulled_in = started.elapsed();
    let requests = repo_requests(&registry, mark, &repo);
    let metrics = agent.metrics();
    let metric = |series: &str| metric_value(&metrics, series).unwrap_or(0.0);
    let started_pulls = metric("pullauth_pulls_started_total");
    let shared = metric("pullauth_pulls_shared_total");
    eprintln!(
        "fan-in (registry down first: {registry_down}): {FAN_IN} submissions admitted in \
         {admitted_in:?}, all PULLED after {all_pulled_in:?}; pulls_started={started_pulls} \
         pulls_shared={shared}; engine pull time {}s over {} pull(s); registry requests for \
         the image: {} ({} manifest), for one reference pull: {} ({} manifest)",
        metric("pullauth_pull_duration_seconds_sum"),
        metric("pullauth_pull_duration_seconds_count"),
        requests.len(),
        manifests(&requests, &repo),
        one_pull.len(),
        one_pull_manifests,
    );
    assert_eq!(metric("pullauth_tasks_submitted_total"), FAN_IN as f64);
    assert_eq!(started_pulls, 1.0, "engine pulls started");
    assert_eq!(shared, (FAN_IN - 1) as f64, "requests that joined the pull");
    assert_eq!(metric("pullauth_pulls_succeeded_total"), 1.0);
    assert_eq!(
        manifests(&requests, &repo),
        one_pull_manifests,
        "{requests:#?}"
    );
    assert_eq!(requests.len(), one_pull.len(), "{requests:#?}");
    assert!(requests.iter().all(|r| r.user.as_deref() == Some("erin")));
    if !registry_down {
        assert_eq!(
            metric("pullauth_pull_retries_total"),
            0.0,
            "a held pull never fails"
        );
    }
}

/// How [`fan_in`] keeps the pull in flight while the submissions arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The registry is stopped; the pull fails and retries until restarted.
    Down,
    /// The registry is frozen (SIGSTOP); the pull waits, then succeeds at once.
    Frozen,
}

/// Proves single flight: 100 simultaneous tasks for one uncached image that
/// arrive while its pull is in flight (registry down, pull retrying) share
/// it: 1 pull started, 99 shared, one pull's worth of registry requests.
#[test]
fn hundred_tasks_arriving_during_a_pull_share_it() {
    fan_in(Hold::Down);
}

/// Proves 100 simultaneous submissions of one small uncached image cause
/// exactly one engine pull (1 started, 99 shared, one pull's registry
/// requests, no retry). The registry is frozen until all 100 have joined, so
/// a slow machine cannot let the pull finish before the last submission.
#[test]
fn hundred_simultaneous_tasks_share_one_pull() {
    fan_in(Hold::Frozen);
}

/// Every way `secret` could appear: itself, and inside base64 at any offset.
/// The X-Registry-Auth JSON the agent sends, in insertion and sorted field
/// order, and both base64 encodings of each.
fn registry_auth_needles(fields: &[(&str, &str)]) -> Vec<String> {
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut needles = Vec::new();
    for order in [fields.to_vec(), sorted] {
        let parts: Vec<String> = order
            .iter()
            .map(|(k, v)| format!("{}:{}", json!(k), json!(v)))
            .collect();
        let json_text = format!("{{{}}}", parts.join(","));
        needles.push(base64_standard(json_text.as_bytes()));
        needles.push(base64_url_safe(json_text.as_bytes()));
        needles.push(json_text);
    }
    needles
}

fn assert_no_needles(what: &str, haystack: &[u8], needles: &[String]) {
    let haystack = String::from_utf8_lossy(haystack);
    for needle in needles {
        assert!(
            !haystack.contains(needle.as_str()),
            "{what} contains the secret form {needle:?}"
        );
    }
}

/// Proves no secret (password, dockercfg auth, identity token, rejected
/// config, X-Registry-Auth in any base64) reaches logs, API bodies,
/// metrics, `task run` output or the state file, at debug level.
#[test]
fn secrets_never_leak() {
    let h = Harness::get();
    let password = format!("canary-pw-{}?>~", random_token(16));
    let wrong = format!("canary-wrong-{}", random_token(16));
    let idtoken = format!("canary-idtoken-{}", random_token(16));
    let rejected = format!("canary-rejected-{}", random_token(16));
    let registry = Harness::registry_with(&[("canary", &password)]);
    let addr = registry.addr();
    let (_, image) = push(&registry, "team", "canary");
    let (wrong_repo, _) = push(&registry, "wrong", "canary");
    let (tok_repo, _) = push(&registry, "tok", "canary");
    let missing = registry.image_ref(&fresh_repo("team"), "nope");
    let auth = base64_standard(format!("canary:{password}").as_bytes());
    let data = scratch_dir("data");
    let dockercfg = json!({
        addr.clone(): {"auth": auth, "email": "canary@example.com"},
        format!("{addr}/wrong"): {"auth": base64_standard(format!("canary:{wrong}").as_bytes())},
    })
    .to_string();
    let spec = AgentSpec::new()
        .data_dir(data.path())
        .env("ECS_LOGLEVEL", "debug")
        .env_file_text(&format!(
            "ECS_ENGINE_AUTH_TYPE=dockercfg\nECS_ENGINE_AUTH_DATA={dockercfg}\n"
        ));
    let agent = spec.start();

    // Success, missing image, rejected password, through `task run --wait` too.
    let file = taskdef_file(
        &spec,
        "canary",
        &taskdef("canary", &[("app", &image, true)]),
    );
    let out = run(spec
        .task_run()
        .args(["--wait", "--wait-timeout", "60s"])
        .arg(&file));
    assert!(out.status.success(), "{}", text(&out.stderr));
    agent.add_to_transcript(&out.stdout);
    agent.add_to_transcript(&out.stderr);
    for (name, img) in [
        ("missing", missing.clone()),
        ("wrong", registry.image_ref(&wrong_repo, "1")),
    ] {
        let file = taskdef_file(&spec, name, &taskdef(name, &[("app", &img, true)]));
        let out = run(spec
            .task_run()
            .args(["--wait", "--wait-timeout", "60s"])
            .arg(&file));
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stderr));
        agent.add_to_transcript(&out.stdout);
        agent.add_to_transcript(&out.stderr);
    }

    // The rejected pull again, now with a cached copy: the agent falls back
    // to it and logs the scrubbed engine error at debug level.
    let wrong_image = registry.image_ref(&wrong_repo, "1");
    let tag = run(h.docker().args(["tag", &image, &wrong_image]));
    assert!(tag.status.success(), "{}", text(&tag.stderr));
    let task = agent.submit(&taskdef("fallback", &[("app", &wrong_image, true)]));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");
    h.remove_local(&wrong_image);

    // Reload to docker-type credentials with an identity token key.
    spec.write_env_file(&format!(
        "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={}\nECS_LOGLEVEL=debug\n",
        json!({
            addr.clone(): {"username": "canary", "password": password},
            format!("{addr}/tok"): {"username": "canary", "identitytoken": idtoken},
        })
    ));
    agent.sighup();
    agent.wait_metric("pullauth_config_reloads_total", 1.0);
    let registries = agent.get_json("/v1/registries");
    assert!(
        registries.to_string().contains("identity token"),
        "{registries}"
    );
    h.remove_local(&image);
    for img in [image.clone(), registry.image_ref(&tok_repo, "1")] {
        let task = agent.submit(&taskdef("reloaded", &[("app", &img, true)]));
        agent.wait_final(task["Arn"].as_str().expect("Arn"));
    }
    // A rejected reload whose data holds a secret.
    spec.write_env_file(&format!(
        "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={{\"{addr}\":{{\"username\":\"canary\",\
         \"password\":\"{rejected}\"\n"
    ));
    agent.sighup();
    agent.wait_metric("pullauth_config_reload_failures_total", 1.0);

    for path in [
        "/",
        "/v1/metadata",
        "/v1/tasks",
        "/v1/registries",
        "/healthz",
        "/metrics",
    ] {
        agent.get(path);
    }
    agent.control("GET", "/v1/tasks", b"");
    for task in agent.tasks() {
        agent.task(task["Arn"].as_str().expect("Arn"));
    }

    let mut needles = Vec::new();
    for secret in [&password, &wrong, &idtoken, &rejected] {
        needles.extend(secret_needles(secret));
        needles.push(base64_standard(format!("canary:{secret}").as_bytes()));
        needles.push(base64_url_safe(format!("canary:{secret}").as_bytes()));
    }
    needles.push(auth.clone());
    needles.extend(registry_auth_needles(&[
        ("username", "canary"),
        ("password", &password),
        ("email", "canary@example.com"),
        ("serveraddress", &addr),
    ]));
    needles.extend(registry_auth_needles(&[
        ("username", "canary"),
        ("password", &password),
        ("serveraddress", &addr),
    ]));
    needles.extend(registry_auth_needles(&[
        ("username", "canary"),
        ("serveraddress", &addr),
        ("identitytoken", &idtoken),
    ]));

    let transcript = agent.transcript();
    assert!(
        text(&transcript).contains("pullauth_pulls_started_total"),
        "the transcript holds /metrics"
    );
    assert_no_needles("an API response", &transcript, &needles);
    let state = spec.state_file().expect("data dir");
    assert_no_needles(
        "the state file (live)",
        &fs::read(&state).expect("state"),
        &needles,
    );
    assert!(agent.terminate().success());
    assert_no_needles(
        "the state file",
        &fs::read(&state).expect("state"),
        &needles,
    );
    let logs = spec.log_bytes();
    assert!(
        text(&logs).contains("level=debug")
            && text(&logs).contains("falling back to the cached image"),
        "debug logging is on:\n{}",
        spec.log_tail(20)
    );
    assert_no_needles("the agent's stdout/stderr", &logs, &needles);
}

/// One agent container and a client for it.
struct AgentContainer {
    name: String,
    client: AgentClient,
    _guard: ContainerGuard,
}

impl AgentContainer {
    /// `docker run --detach --net host` of `image` with the harness engine's
    /// socket at /var/run/docker.sock, `data` at /data, `docker_args`
    /// (before the image) and the image's CMD plus `--listen`; waits until
    /// the agent answers.
    fn start(image: &AgentImage, data: &Path, docker_args: &[&str]) -> AgentContainer {
        let h = Harness::get();
        let engine_socket = h.engine_socket();
        let listen = format!("127.0.0.1:{}", free_port());
        let name = format!("pullauth-it-agent-{}", random_token(8).to_ascii_lowercase());
        let started = run(h
            .docker()
            .args([
                "run", "--detach", "--pull", "never", "--name", &name, "--net", "host",
            ])
            .args(["--volume", &format!("{engine_socket}:/var/run/docker.sock")])
            .args(["--volume", &format!("{}:/data", data.display())])
            .args(docker_args)
            .arg(&image.tag)
            .args(&image.cmd)
            .args(["--listen", &listen]));
        assert!(
            started.status.success(),
            "docker run: {}",
            text(&started.stderr)
        );
        let container = AgentContainer {
            name: name.clone(),
            client: AgentClient::new(&listen, &data.join("pullauth.sock")),
            _guard: ContainerGuard { name },
        };
        let client = &container.client;
        wait_for("the containerized agent to answer", || {
            let state = run(h.docker().args([
                "inspect",
                "--format",
                "{{.State.Running}}",
                &container.name,
            ]));
            assert_eq!(
                text(&state.stdout).trim(),
                "true",
                "the container stopped:\n{}",
                container.logs()
            );
            pullauth_integration::agent::http_tcp(client.listen(), "GET", "/healthz", b"")
                .ok()
                .filter(|r| r.status == 200)
                .filter(|_| client.control_socket().exists())
        });
        container
    }

    /// `docker logs`, stdout and stderr.
    fn logs(&self) -> String {
        let out = run(Harness::get().docker().args(["logs", &self.name]));
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// The JSON log lines whose message starts with `message`.
    fn log_lines(&self, message: &str) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .collect()
    }

    /// `docker kill -s HUP`, then waits for one more log line starting with
    /// `message`.
    fn sighup_until_logged(&self, message: &str) -> Value {
        let before = self.log_lines(message).len();
        let hup = run(Harness::get()
            .docker()
            .args(["kill", "--signal", "HUP", &self.name]));
        assert!(
            hup.status.success(),
            "docker kill -s HUP: {}",
            text(&hup.stderr)
        );
        wait_for(&format!("{message:?} in the container's log"), || {
            self.log_lines(message).into_iter().nth(before)
        })
    }

    /// `docker inspect` of the container, all of it.
    fn inspect(&self) -> Value {
        let out = run(Harness::get().docker().args(["inspect", &self.name]));
        assert!(
            out.status.success(),
            "docker inspect: {}",
            text(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("docker inspect prints JSON")[0].clone()
    }

    /// Submits a one-container task with `image` and waits for its end.
    fn pull(&self, image: &str) -> Value {
        let task = self.client.submit(&taskdef("ctr", &[("app", image, true)]));
        let task = self.client.wait_final(task["Arn"].as_str().expect("Arn"));
        assert_eq!(task["KnownStatus"], "PULLED", "{task:#}\n{}", self.logs());
        task
    }
}

/// Writes `text` as `dir/ecs.config` the way editors and configuration
/// tools do: a new file renamed over the old one (a new inode).
fn replace_file(dir: &Path, text: &str) {
    let tmp = dir.join(".ecs.config.tmp");
    fs::write(&tmp, text).expect("write the new ecs.config");
    fs::rename(&tmp, dir.join("ecs.config")).expect("rename it into place");
}

/// The image's binary is built as the Dockerfile builds it: a static PIE
/// (no interpreter, still placed at a random address) whose relative
/// relocations are packed as RELR. The idle agent's memory depends on both
/// (issue 18: a dynamic build maps libc, and RELA relocations are read page
/// by page at start), so a change of flags that loses either fails here.
#[test]
fn the_image_binary_is_a_static_pie_with_packed_relocations() {
    let (bin, _) = pullauth_integration::static_pullauth_bin();
    let readelf = |args: &[&str]| {
        let out = run(Command::new("readelf").args(args).arg(&bin));
        assert!(out.status.success(), "readelf {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let segments = readelf(&["--wide", "--program-headers"]);
    assert!(
        !segments.contains("INTERP"),
        "{} asks for a dynamic loader:\n{segments}",
        bin.display()
    );
    let dynamic = readelf(&["--wide", "--dynamic"]);
    assert!(
        dynamic.contains("PIE"),
        "{} is not position-independent:\n{dynamic}",
        bin.display()
    );
    assert!(
        dynamic.contains("(RELR)"),
        "{} has no packed relative relocations:\n{dynamic}",
        bin.display()
    );
}

/// Proves the statically linked agent runs as a FROM-scratch container
/// started as the Dockerfile documents: it answers from the host, uses the
/// default engine socket, reads ecs.config from the read-only mounted
/// /etc/ecs (so no credential is in `docker inspect`), pulls a private
/// image with the right user through the shared control socket, and after
/// the file is replaced (rename), reloads it by itself (and again on
/// `docker kill -s HUP`) and pulls as the user the new file names.
#[test]
fn agent_runs_as_a_container() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let image = agent_image();
    let (repo, first) = push(alpha, "ctr", "alice");
    let (repo2, second) = push(alpha, "ctr", "alice");
    let config_dir = scratch_dir("ctr-config");
    let path_key = format!("{}/ctr", alpha.addr());
    let settings = [
        ("ECS_CLUSTER", "in-a-container"),
        ("ECS_LOG_OUTPUT_FORMAT", "json"),
    ];
    replace_file(
        config_dir.path(),
        &docker_auth_config(
            &[
                (&alpha.addr(), "alice", alpha.password("alice")),
                (&path_key, "bob", alpha.password("bob")),
            ],
            &settings,
        ),
    );
    let data = scratch_dir("ctr-data");
    let mount = format!("{}:/etc/ecs:ro", config_dir.path().display());
    let agent = AgentContainer::start(&image, data.path(), &["--volume", &mount]);
    let client = &agent.client;
    let meta = client.get_json("/v1/metadata");
    assert_eq!(meta["Cluster"], "in-a-container", "{meta}");

    // dockerd copies the container's stderr into its log on its own time.
    let ready = wait_for("the ready line in the container's log", || {
        agent.log_lines("pullauth agent ready").into_iter().next()
    });
    assert_eq!(
        ready["fields"]["engine"], "unix:///var/run/docker.sock",
        "{ready}"
    );

    // The credentials are in the mounted file only, not in the container's
    // configuration.
    let inspect = agent.inspect();
    let inspect_text = inspect.to_string();
    for user in ["alice", "bob"] {
        for needle in secret_needles(alpha.password(user)) {
            assert!(
                !inspect_text.contains(&needle),
                "docker inspect shows {user}'s password (a form of it): Env {} Args {}",
                inspect["Config"]["Env"],
                inspect["Args"]
            );
        }
    }
    let env = inspect["Config"]["Env"].to_string();
    assert!(!env.contains("ECS_ENGINE_AUTH"), "Config.Env: {env}");

    let mark = alpha.log_mark();
    let task = agent.pull(&first);
    let app = container(&task, "app");
    assert_eq!(app["Username"], "bob");
    assert_eq!(app["RegistryKey"], path_key.as_str());
    assert_eq!(app["ImageID"].as_str(), h.local_image_id(&first).as_deref());
    assert_eq!(
        users_on(alpha, mark, &repo),
        BTreeSet::from(["bob".to_string()])
    );
    assert_eq!(mode(&data.path().join("pullauth.db")), 0o600);

    // Edit the file on the host as an editor does: the agent sees the
    // change through the read-only mount and reloads by itself; SIGHUP
    // reloads again.
    replace_file(
        config_dir.path(),
        &docker_auth_config(
            &[
                (&alpha.addr(), "bob", alpha.password("bob")),
                (&path_key, "alice", alpha.password("alice")),
            ],
            &settings,
        ),
    );
    let by_file = wait_for("the agent to reload the replaced file", || {
        agent.log_lines("configuration reloaded").into_iter().next()
    });
    assert_eq!(by_file["fields"]["trigger"], "file", "{by_file}");
    // A reload is counted just after its log line.
    assert_eq!(
        client.wait_metric("pullauth_config_reloads_total", 1.0),
        1.0
    );
    let by_hup = agent.sighup_until_logged("configuration reloaded");
    assert_eq!(by_hup["fields"]["trigger"], "sighup", "{by_hup}");
    assert_eq!(
        client.wait_metric("pullauth_config_reloads_total", 2.0),
        2.0
    );
    let mark = alpha.log_mark();
    let task = agent.pull(&second);
    let app = container(&task, "app");
    assert_eq!(app["Username"], "alice");
    assert_eq!(app["RegistryKey"], path_key.as_str());
    assert_eq!(
        users_on(alpha, mark, &repo2),
        BTreeSet::from(["alice".to_string()])
    );
    let logs = agent.logs();
    for user in ["alice", "bob"] {
        assert_no_needles(
            "the container's log",
            logs.as_bytes(),
            &secret_needles(alpha.password(user)),
        );
    }
}

/// Proves the seed's container command, `docker run --env-file FILE`
/// without a mounted /etc/ecs, still works with the image's default
/// arguments (the file they name is optional): the agent starts and pulls
/// with the right user, and SIGHUP logs that there is nothing to re-read
/// instead of counting a reload.
#[test]
fn agent_container_started_with_docker_env_file_still_works() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let image = agent_image();
    let (repo, first) = push(alpha, "ctr-seed", "alice");
    let config_dir = scratch_dir("ctr-seed-config");
    let config = config_dir.path().join("ecs.config");
    fs::write(
        &config,
        docker_auth_config(
            &[(&alpha.addr(), "alice", alpha.password("alice"))],
            &[
                ("ECS_CLUSTER", "seed-form"),
                ("ECS_LOG_OUTPUT_FORMAT", "json"),
            ],
        ),
    )
    .expect("write ecs.config");
    let data = scratch_dir("ctr-seed-data");
    let config_arg = config.to_str().expect("UTF-8 path");
    let agent = AgentContainer::start(&image, data.path(), &["--env-file", config_arg]);
    assert_eq!(
        agent.client.get_json("/v1/metadata")["Cluster"],
        "seed-form"
    );
    wait_for("the absent --env-file in the container's log", || {
        agent
            .log_lines("--env-file is absent and optional")
            .into_iter()
            .next()
    });

    let mark = alpha.log_mark();
    let task = agent.pull(&first);
    assert_eq!(container(&task, "app")["Username"], "alice");
    assert_eq!(
        users_on(alpha, mark, &repo),
        BTreeSet::from(["alice".to_string()])
    );

    let warning = agent.sighup_until_logged("SIGHUP ignored");
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(agent.client.metric("pullauth_config_reloads_total"), 0.0);
    assert_eq!(agent.client.get("/healthz").status, 200);
}
