//! ECS as the source of work, against moto's ECS with the real engine and
//! authenticated registries: `pullauth prefetch` pulls each image of the
//! cluster's services once, as the user ECS would pull it as (an ecs.config
//! key, a `repositoryCredentials` secret), the registry log says who pulled;
//! faults (a bad image reference, a missing secret, a secret without a
//! password, a missing cluster, a stalled endpoint, one answering garbage)
//! are reported with the service or task definition they concern while the
//! others go on. `serve` follows the cluster, and pulls again an image
//! removed from the engine.

use std::time::Duration;

use pullauth_integration::agent::{
    AgentSpec, assert_no_secret, docker_auth_config, metric_value, random_token, scratch_dir,
};
use pullauth_integration::{
    ECS_STUB_SERVICE_ARN, EcsAgentStub, EcsStub, Harness, Moto, Outcome, Registry, Stall,
    pullauth_command,
};
use serde_json::Value;

/// The bound of one prefetch run in these tests.
const RUN_BOUND: Duration = Duration::from_secs(120);

/// A cluster in moto with its names, all unique to one test.
struct Cluster {
    name: String,
    token: String,
}

impl Cluster {
    fn new(moto: &Moto, what: &str) -> Cluster {
        let token = random_token(6).to_ascii_lowercase();
        let name = format!("{what}-{token}");
        moto.boto3(
            &format!("client('ecs').create_cluster(clusterName='{name}')\n"),
            None,
        );
        Cluster { name, token }
    }

    /// Registers `family` with one container per `(name, image, secret)`;
    /// returns its ARN.
    fn register(
        &self,
        moto: &Moto,
        family: &str,
        containers: &[(&str, &str, Option<&str>)],
        role: Option<&str>,
    ) -> String {
        let defs: Vec<Value> = containers
            .iter()
            .map(|(name, image, secret)| {
                let mut c = serde_json::json!({"name": name, "image": image, "memory": 64});
                if let Some(secret) = secret {
                    c["repositoryCredentials"] =
                        serde_json::json!({"credentialsParameter": secret});
                }
                c
            })
            .collect();
        let role = role.map_or(String::new(), |r| format!(", executionRoleArn={r:?}"));
        moto.boto3(
            &format!(
                "r = client('ecs').register_task_definition(family={family:?}, \
                 containerDefinitions=json.loads({:?}){role})\n\
                 print(r['taskDefinition']['taskDefinitionArn'])\n",
                Value::Array(defs).to_string()
            ),
            None,
        )
        .trim()
        .to_owned()
    }

    fn service(&self, moto: &Moto, name: &str, task_definition: &str, daemon: bool) {
        let strategy = if daemon { "DAEMON" } else { "REPLICA" };
        let count = if daemon { "" } else { ", desiredCount=0" };
        moto.boto3(
            &format!(
                "client('ecs').create_service(cluster='{}', serviceName={name:?}, \
                 taskDefinition={task_definition:?}, schedulingStrategy='{strategy}'{count})\n",
                self.name
            ),
            None,
        );
    }
}

fn push(registry: &Registry, user: &str) -> (String, String) {
    let repo = format!("prefetch/r{}", random_token(10).to_ascii_lowercase());
    Harness::get().push_fixture(registry, &repo, "1", (user, registry.password(user)));
    let image = registry.image_ref(&repo, "1");
    (repo, image)
}

/// Runs `pullauth prefetch` with moto's keys, `env_text` as ecs.config.
fn prefetch(moto_endpoint: &str, env_text: &str, args: &[&str]) -> Outcome {
    let h = Harness::get();
    let dir = scratch_dir("prefetch");
    let env_file = dir.path().join("ecs.config");
    std::fs::write(&env_file, env_text).expect("env file");
    let env = pullauth_integration::pullauth_aws_env(moto_endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut cmd = pullauth_command("prefetch", h.docker_host(), &env_file, &env, args);
    Outcome::run_bounded(&mut cmd, b"", RUN_BOUND)
}

fn json_lines(out: &Outcome) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn line_for<'a>(lines: &'a [Value], image: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["image"] == image)
        .unwrap_or_else(|| panic!("no line for {image}: {lines:#?}"))
}

/// A cluster with a replica service and a daemon service on one task
/// definition whose image an ecs.config key (bob) reads, and a service whose
/// task definition names a `repositoryCredentials` secret (alice).
struct Fixture {
    cluster: Cluster,
    keyed_image: String,
    keyed_repo: String,
    secret_image: String,
    secret_repo: String,
    env_text: String,
    password: String,
}

fn fixture(moto: &Moto, what: &str) -> Fixture {
    let h = Harness::get();
    let cluster = Cluster::new(moto, what);
    let token = cluster.token.clone();
    let (keyed_repo, keyed_image) = push(&h.alpha, "bob");
    let (secret_repo, secret_image) = push(&h.alpha, "alice");
    let password = h.alpha.password("alice").to_owned();
    let secret = format!("prefetch-{token}/alice");
    moto.boto3(
        &format!(
            "client('secretsmanager').create_secret(Name='{secret}', SecretString=json.dumps(\
             {{'username': 'alice', 'password': {password:?}}}))\n"
        ),
        None,
    );
    let keyed = cluster.register(
        moto,
        &format!("keyed-{token}"),
        &[("app", &keyed_image, None)],
        None,
    );
    let secret_td = cluster.register(
        moto,
        &format!("secret-{token}"),
        &[("app", &secret_image, Some(&secret))],
        None,
    );
    cluster.service(moto, "web", &keyed, false);
    cluster.service(moto, "agentd", &keyed, true);
    cluster.service(moto, "private", &secret_td, false);
    let env_text = docker_auth_config(
        &[(&h.alpha.addr(), "bob", h.alpha.password("bob"))],
        &[("ECS_CLUSTER", &cluster.name)],
    );
    Fixture {
        cluster,
        keyed_image,
        keyed_repo,
        secret_image,
        secret_repo,
        env_text,
        password,
    }
}

#[test]
fn prefetch_pulls_each_image_once_as_the_user_ecs_would_use() {
    let h = Harness::get();
    let moto = Moto::shared();
    let f = fixture(moto, "warm");
    let token = &f.cluster.token;

    // --dry-run: every image with its source, nothing pulled.
    let mark = h.alpha.log_mark();
    let out = prefetch(&moto.endpoint(), &f.env_text, &["--dry-run", "--json"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "one line per distinct pull: {lines:#?}");
    let keyed = line_for(&lines, &f.keyed_image);
    assert_eq!(keyed["status"], "would-pull");
    assert_eq!(keyed["source"], "key");
    assert_eq!(keyed["key"], h.alpha.addr().as_str());
    assert_eq!(keyed["from"], format!("key {:?}", h.alpha.addr()));
    assert_eq!(
        keyed["services"],
        serde_json::json!(["agentd", "web"]),
        "{keyed}"
    );
    assert_eq!(
        keyed["task_definitions"],
        serde_json::json!([format!("keyed-{token}:1")])
    );
    assert!(keyed.get("task_definition").is_none(), "{keyed}");
    let private = line_for(&lines, &f.secret_image);
    assert_eq!(private["source"], "task_secret", "{private}");
    assert_eq!(private["key"], Value::Null, "{private}");
    assert_eq!(
        private["from"],
        format!("secretsmanager prefetch-{token}/alice")
    );
    assert_eq!(private["services"], serde_json::json!(["private"]));
    assert!(h.alpha.users_since_in(mark, &f.keyed_repo).is_empty());
    assert!(h.alpha.users_since_in(mark, &f.secret_repo).is_empty());
    assert!(h.local_image_id(&f.keyed_image).is_none());

    // Filters: --service narrows; --task-definition alone names only itself.
    let out = prefetch(
        &moto.endpoint(),
        &f.env_text,
        &["--dry-run", "--json", "--service", "private"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["image"], f.secret_image.as_str());
    let family = format!("keyed-{token}");
    let out = prefetch(
        &moto.endpoint(),
        &f.env_text,
        &["--dry-run", "--json", "--task-definition", &family],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["image"], f.keyed_image.as_str());
    assert_eq!(lines[0]["services"], serde_json::json!([]));

    // The pull: each image once, as the user ECS would use.
    let mark = h.alpha.log_mark();
    let out = prefetch(&moto.endpoint(), &f.env_text, &["--json"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let keyed = line_for(&lines, &f.keyed_image);
    assert_eq!(keyed["status"], "pulled", "{keyed}");
    assert_eq!(keyed["username"], "bob");
    assert!(
        keyed["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let private = line_for(&lines, &f.secret_image);
    assert_eq!(private["status"], "pulled", "{private}");
    assert_eq!(private["username"], "alice");
    let bobs = h.alpha.users_since_in(mark, &f.keyed_repo);
    assert!(
        !bobs.is_empty() && bobs.iter().all(|u| u == "bob"),
        "{bobs:?}"
    );
    let alices = h.alpha.users_since_in(mark, &f.secret_repo);
    assert!(
        !alices.is_empty() && alices.iter().all(|u| u == "alice"),
        "{alices:?}"
    );
    assert!(h.local_image_id(&f.keyed_image).is_some());
    assert!(h.local_image_id(&f.secret_image).is_some());
    assert_no_secret("prefetch's stdout", out.stdout.as_bytes(), &f.password);
    assert_no_secret("prefetch's stderr", out.stderr.as_bytes(), &f.password);

    // Human output names the status, the source and the user.
    let out = prefetch(
        &moto.endpoint(),
        &f.env_text,
        &["--pull-behavior", "prefer-cached"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.lines().any(|l| l.contains(&f.secret_image)
            && l.contains("secretsmanager")
            && l.contains("\"alice\"")),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failing_service_is_reported_and_the_others_are_prefetched() {
    let h = Harness::get();
    let moto = Moto::shared();
    let f = fixture(moto, "faults");
    let token = &f.cluster.token;
    let c = &f.cluster;
    let no_password = format!("prefetch-{token}/nopass");
    moto.boto3(
        &format!(
            "client('secretsmanager').create_secret(Name='{no_password}', \
             SecretString=json.dumps({{'username': 'alice'}}))\n"
        ),
        None,
    );
    let bad_ref = c.register(
        moto,
        &format!("badref-{token}"),
        &[("app", "Bad Ref!!", None)],
        None,
    );
    c.service(moto, "badref", &bad_ref, false);
    let missing = format!("prefetch-{token}/missing");
    let (_, image) = push(&h.alpha, "alice");
    let missing_td = c.register(
        moto,
        &format!("missing-{token}"),
        &[("app", &image, Some(&missing))],
        None,
    );
    c.service(moto, "missing", &missing_td, false);
    let nopass_td = c.register(
        moto,
        &format!("nopass-{token}"),
        &[("app", &image, Some(&no_password))],
        None,
    );
    c.service(moto, "nopass", &nopass_td, false);
    let bad_role = c.register(
        moto,
        &format!("badrole-{token}"),
        &[("app", &image, Some(&format!("prefetch-{token}/alice")))],
        Some("not-an-arn"),
    );
    c.service(moto, "badrole", &bad_role, false);

    let out = prefetch(&moto.endpoint(), &f.env_text, &["--json"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    let failed = |service: &str| {
        lines
            .iter()
            .find(|l| {
                l["status"] == "failed"
                    && l["services"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s == service))
            })
            .unwrap_or_else(|| panic!("no failure for {service}: {lines:#?}"))
    };
    let e = failed("badref");
    assert_eq!(
        e["task_definitions"],
        serde_json::json!([format!("badref-{token}:1")])
    );
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains("\"app\"")),
        "{e}"
    );
    let e = failed("missing");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains(&missing) && m.contains("no such secret")),
        "{e}"
    );
    let e = failed("nopass");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains(&no_password) && m.contains("password")),
        "{e}"
    );
    let e = failed("badrole");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("executionRoleArn") && m.contains("not-an-arn")),
        "{e}"
    );
    // The others went on.
    assert_eq!(line_for(&lines, &f.keyed_image)["status"], "pulled");
    assert_eq!(line_for(&lines, &f.secret_image)["status"], "pulled");
    assert!(out.stderr.contains("service badref"), "{}", out.stderr);
    assert_no_secret("prefetch's output", out.stdout.as_bytes(), &f.password);
    assert_no_secret("prefetch's stderr", out.stderr.as_bytes(), &f.password);
}

#[test]
fn a_missing_cluster_is_bad_input_naming_the_cluster() {
    let moto = Moto::shared();
    let name = format!("absent-{}", random_token(6).to_ascii_lowercase());
    let out = prefetch(&moto.endpoint(), "", &["--cluster", &name]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&name) && out.stderr.contains("no such cluster"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_stalled_ecs_endpoint_fails_within_the_operation_bound() {
    let stall = Stall::start();
    let started = std::time::Instant::now();
    // PULLAUTH_AWS_TIMEOUT shortens the 20 s default (whose value a unit
    // test in the pullauth crate holds).
    let out = prefetch(
        &format!("http://{}", stall.addr()),
        "PULLAUTH_AWS_TIMEOUT=2s\n",
        &["--cluster", "stalled"],
    );
    eprintln!(
        "prefetch against a stalled endpoint ended after {:?}",
        started.elapsed()
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("ecs:ListServices")
            && out.stderr.contains("cluster stalled")
            && out.stderr.contains("no answer (within 2s)"),
        "{}",
        out.stderr
    );
    assert!(stall.connections() >= 1);
}

/// Polls `GET /v1/prefetch` until `ready` holds, for at most `bound`.
fn wait_view(
    agent: &pullauth_integration::agent::RunningAgent,
    bound: Duration,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let view = agent.get_json("/v1/prefetch");
        if ready(&view) {
            return view;
        }
        assert!(
            started.elapsed() < bound,
            "{what} not within {bound:?}: {view:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The state of `image` in a `/v1/prefetch` view, in any service.
fn image_state(view: &Value, image: &str) -> Option<String> {
    view["services"]
        .as_array()?
        .iter()
        .flat_map(|s| {
            s["task_definitions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|td| td["images"].as_array().cloned().unwrap_or_default())
        .find(|i| i["image"] == image)
        .and_then(|i| i["state"].as_str().map(str::to_owned))
}

#[test]
fn serve_follows_an_update_service_to_a_new_revision_and_keeps_its_view_without_ecs() {
    let h = Harness::get();
    // Its own moto: the test stops it to see the agent keep its last view.
    let moto = Moto::start();
    let f = fixture(&moto, "follow");
    let token = &f.cluster.token;
    let (new_repo, new_image) = push(&h.alpha, "bob");
    let family = format!("keyed-{token}");
    f.cluster
        .register(&moto, &family, &[("app", &new_image, None)], None);
    let data = scratch_dir("prefetch-serve");
    let follow_text = |extra: &str| {
        format!(
            "{}PULLAUTH_PREFETCH=on\nPULLAUTH_PREFETCH_INTERVAL=1s\n{extra}",
            f.env_text
        )
    };
    let mut spec = AgentSpec::new()
        .data_dir(data.path())
        .env_file_text(&follow_text(""));
    for (k, v) in pullauth_integration::pullauth_aws_env(&moto.endpoint()) {
        spec = spec.env(k, &v);
    }
    let agent = spec.start();
    let bound = Duration::from_secs(90);
    let view = wait_view(&agent, bound, "the first images warm", |v| {
        image_state(v, &f.keyed_image).as_deref() == Some("warm")
            && image_state(v, &f.secret_image).as_deref() == Some("warm")
    });
    assert_eq!(view["cluster"], f.cluster.name.as_str(), "{view:#}");
    assert!(image_state(&view, &new_image).is_none(), "{view:#}");

    // moto's UpdateService changes the service's taskDefinition (to
    // family:revision) without a new deployment.
    let mark = h.alpha.log_mark();
    let updated = std::time::Instant::now();
    moto.boto3(
        &format!(
            "client('ecs').update_service(cluster='{}', service='web', taskDefinition='{family}:2')\n",
            f.cluster.name
        ),
        None,
    );
    let view = wait_view(&agent, bound, "the new revision's image warm", |v| {
        image_state(v, &new_image).as_deref() == Some("warm")
    });
    // The benchmark in BENCHMARKS.md: UpdateService to a warm image.
    eprintln!(
        "prefetch benchmark: UpdateService -> image warm on this instance in {:?} (PULLAUTH_PREFETCH_INTERVAL=1s)",
        updated.elapsed()
    );
    let users = h.alpha.users_since_in(mark, &new_repo);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "bob"),
        "{users:?}"
    );
    assert!(h.local_image_id(&new_image).is_some());
    let web = view["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == "web"))
        .expect("web followed");
    assert!(
        web["task_definitions"].as_array().is_some_and(|tds| tds
            .iter()
            .any(|td| td["task_definition"] == format!("{family}:2"))),
        "{web:#}"
    );
    let metrics = agent.metrics();
    assert!(
        metric_value(&metrics, "pullauth_prefetch_polls_total").is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(
        metric_value(&metrics, "pullauth_prefetch_pulls_total").is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    // Task definitions are described once each, then served from the cache.
    assert!(
        metric_value(&metrics, "pullauth_aws_task_definition_cache_hits_total")
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    // The store knows the prefetched image: `pull --pull-behavior once`
    // with the agent's ECS_DATADIR does not contact the registry.
    let env_file = data.path().join("pull.config");
    std::fs::write(&env_file, &f.env_text).expect("env file");
    let data_dir = data.path().to_str().expect("utf-8");
    let mark = h.alpha.log_mark();
    let mut cmd = pullauth_command(
        "pull",
        h.docker_host(),
        &env_file,
        &[("ECS_DATADIR", data_dir)],
        &["--json", "--pull-behavior", "once", &new_image],
    );
    let out = Outcome::run_bounded(&mut cmd, b"", RUN_BOUND);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("\"status\":\"cached\""),
        "{}",
        out.stdout
    );
    assert!(h.alpha.users_since_in(mark, &new_repo).is_empty());

    // An image removed from the engine (an operator, `docker image prune`)
    // is pulled again by a later poll, as bob again. (Not "is gone now":
    // a poll every second may pull it again before `docker image inspect`
    // could look; the pull after the mark is the proof.)
    let mark = h.alpha.log_mark();
    h.remove_local(&new_image);
    wait_view(&agent, bound, "the removed image pulled again", |_| {
        h.local_image_id(&new_image).is_some()
    });
    let users = h.alpha.users_since_in(mark, &new_repo);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "bob"),
        "{users:?}"
    );

    // A reload narrows the followed services.
    spec.write_env_file(&follow_text("PULLAUTH_PREFETCH_SERVICES=private\n"));
    agent.sighup();
    let view = wait_view(&agent, bound, "the reloaded filter", |v| {
        v["services_filter"] == serde_json::json!(["private"])
            && v["services"].as_array().is_some_and(|s| s.len() == 1)
    });
    assert_eq!(view["services"][0]["service"], "private", "{view:#}");

    // ECS gone: the last good view stays, with the error beside it, which
    // names the endpoint that did not answer.
    let ecs_at = moto.addr();
    moto.stop();
    let view = wait_view(&agent, bound, "the poll error", |v| {
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("ecs:ListServices"))
    });
    assert!(
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&ecs_at)),
        "{view:#}"
    );
    assert_eq!(
        image_state(&view, &f.secret_image).as_deref(),
        Some("warm"),
        "{view:#}"
    );
    assert!(
        metric_value(
            &agent.metrics(),
            "pullauth_prefetch_poll_failures_total{class=\"unreachable\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );
    let text = agent.get("/v1/prefetch").text();
    assert_no_secret("/v1/prefetch", text.as_bytes(), &f.password);
    assert_no_secret("/metrics", agent.metrics().as_bytes(), &f.password);
    assert_no_secret("the log", &spec.log_bytes(), &f.password);
    for file in ["pullauth.db", "pullauth.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.path().join(file)) {
            assert_no_secret(file, &bytes, &f.password);
        }
    }
}

#[test]
fn serve_on_a_taken_port_names_listen_and_the_ecs_agents_port() {
    let h = Harness::get();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = scratch_dir("prefetch-port");
    let env_file = dir.path().join("ecs.config");
    std::fs::write(&env_file, "").expect("env file");
    let socket = dir.path().join("pullauth.sock");
    let socket = socket.to_str().expect("utf-8");
    let mut cmd = pullauth_command(
        "serve",
        h.docker_host(),
        &env_file,
        &[],
        &["--listen", &addr, "--control-socket", socket],
    );
    let out = Outcome::run_bounded(&mut cmd, b"", Duration::from_secs(60));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&addr)
            && out.stderr.contains("--listen")
            && out.stderr.contains("already in use")
            && out.stderr.contains("51678"),
        "{}",
        out.stderr
    );
}

/// Calls moto serves before it enforces IAM in
/// `access_denied_and_an_unassumable_role_are_reported_with_what_they_concern`.
const IAM_SETUP_CALLS: usize = 8;

#[test]
fn access_denied_and_an_unassumable_role_are_reported_with_what_they_concern() {
    let h = Harness::get();
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", &IAM_SETUP_CALLS.to_string())]);
    let (_, image) = push(&h.alpha, "alice");
    // `reader` may read ECS and nothing else (no sts:AssumeRole); `nobody`
    // may do nothing. The task definition's secret must be read as its
    // execution role, which reader cannot assume.
    let keys = moto.boto3(
        &format!(
            "iam = client('iam')\n\
             iam.create_user(UserName='reader')\n\
             r = iam.create_access_key(UserName='reader')['AccessKey']\n\
             iam.put_user_policy(UserName='reader', PolicyName='ecs', PolicyDocument=json.dumps(\
               {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': \
               ['ecs:ListServices', 'ecs:DescribeServices', 'ecs:DescribeTaskDefinition'], 'Resource': '*'}}]}}))\n\
             iam.create_user(UserName='nobody')\n\
             n = iam.create_access_key(UserName='nobody')['AccessKey']\n\
             ecs = client('ecs')\n\
             ecs.create_cluster(clusterName='iam')\n\
             td = ecs.register_task_definition(family='exec', executionRoleArn='arn:aws:iam::123456789012:role/exec', \
               containerDefinitions=[{{'name': 'app', 'image': {image:?}, 'memory': 64, \
               'repositoryCredentials': {{'credentialsParameter': 'registry/exec-only'}}}}])\n\
             ecs.create_service(cluster='iam', serviceName='guarded', \
               taskDefinition=td['taskDefinition']['taskDefinitionArn'], desiredCount=0)\n\
             print(r['AccessKeyId'], r['SecretAccessKey'], n['AccessKeyId'], n['SecretAccessKey'])\n"
        ),
        None,
    );
    let keys: Vec<&str> = keys.split_whitespace().collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    let run = |key: &str, secret: &str| {
        let dir = scratch_dir("prefetch-iam");
        let env_file = dir.path().join("ecs.config");
        std::fs::write(&env_file, "ECS_CLUSTER=iam\n").expect("env file");
        let endpoint = moto.endpoint();
        let env = [
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        let mut cmd = pullauth_command("prefetch", h.docker_host(), &env_file, &env, &["--json"]);
        Outcome::run_bounded(&mut cmd, b"", RUN_BOUND)
    };

    let out = run(keys[2], keys[3]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("ecs:ListServices")
            && out.stderr.contains("cluster iam")
            && out.stderr.contains("access denied"),
        "{}",
        out.stderr
    );

    let out = run(keys[0], keys[1]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert_eq!(line["status"], "failed", "{line}");
    assert_eq!(line["services"], serde_json::json!(["guarded"]));
    assert_eq!(line["task_definitions"], serde_json::json!(["exec:1"]));
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("sts:AssumeRole")
            && error.contains("role arn:aws:iam::123456789012:role/exec")
            && error.contains("access denied"),
        "{error}"
    );
    assert!(h.local_image_id(&image).is_none());
}

/// ECS answering `DescribeServices` with HTTP 200 and garbage: `prefetch`
/// exits 1 with an error naming the cluster and the call (an unreadable
/// body), or the service it could not describe (JSON about nothing), within
/// its bounds and without a panic.
#[test]
fn prefetch_reports_describe_services_answering_garbage_naming_cluster_and_call() {
    let cases: [(&str, &[u8], &[&str]); 3] = [
        (
            "html",
            b"<html><body>502 Bad Gateway</body></html>",
            &[
                "cluster stub",
                "ecs:DescribeServices",
                "not an answer to ecs:DescribeServices",
            ],
        ),
        (
            "wrong_shape",
            br#"{"services":"web"}"#,
            &[
                "cluster stub",
                "ecs:DescribeServices",
                "not JSON, or JSON of another shape",
            ],
        ),
        (
            "about_nothing",
            b"{}",
            &[
                ECS_STUB_SERVICE_ARN,
                "ecs:DescribeServices in cluster stub",
                "neither this service nor a failure",
            ],
        ),
    ];
    for (name, body, expected) in cases {
        let stub = EcsStub::start(body);
        let out = prefetch(&stub.endpoint(), "", &["--cluster", "stub", "--json"]);
        assert_eq!(out.code, Some(1), "{name}: {}\n{}", out.stdout, out.stderr);
        for text in expected {
            assert!(
                out.stderr.contains(text),
                "{name}: no {text:?} in {}",
                out.stderr
            );
        }
        assert!(!out.stderr.contains("panicked"), "{name}: {}", out.stderr);
        assert_eq!(stub.calls(), ["ListServices", "DescribeServices"], "{name}");
    }
}

/// The ECS name of the architecture this engine does not run (the engine is
/// local, so it runs the test's own).
fn other_architecture() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "X86_64"
    } else {
        "ARM64"
    }
}

/// One cluster mixing every way ECS runs a service and every placement
/// rule: exactly the images ECS could start on this instance are pulled
/// (an `EC2` service, an `EXTERNAL` service's `ACTIVE` task set, a
/// `memberOf` on a custom attribute that cannot be decided before the
/// instance is described); the rest are skipped with their reason code
/// (Fargate launch type, `requiresCompatibilities` without `EC2`, another
/// CPU architecture, Windows, a `memberOf` excluding this OS, a deleted
/// service) and never pulled; a service naming no task definition is a
/// problem.
#[test]
fn a_mixed_cluster_prefetches_exactly_what_can_run_here_and_says_why_for_the_rest() {
    let h = Harness::get();
    let moto = Moto::shared();
    let cluster = Cluster::new(moto, "mixed");
    let token = cluster.token.clone();
    let repo = format!("prefetch/mixed{}", random_token(8).to_ascii_lowercase());
    let bob = ("bob", h.alpha.password("bob"));
    for tag in ["ec2", "taskset", "undecided"] {
        h.push_fixture(&h.alpha, &repo, tag, bob);
    }
    let image = |tag: &str| h.alpha.image_ref(&repo, tag);
    let absent = |what: &str| h.alpha.image_ref(&format!("{repo}-absent"), what);
    let script = format!(
        r#"
ecs = client('ecs')
c = {cluster:?}
def td(family, image, **extra):
    return ecs.register_task_definition(family=family + '-{token}',
        containerDefinitions=[{{'name': 'app', 'image': image, 'memory': 64}}],
        **extra)['taskDefinition']['taskDefinitionArn']
ec2 = td('ec2', {ec2:?})
ecs.create_service(cluster=c, serviceName='ec2', taskDefinition=ec2, desiredCount=0, launchType='EC2')
fg = td('fargate', {fargate:?})
ecs.create_service(cluster=c, serviceName='fargate', taskDefinition=fg, desiredCount=0, launchType='FARGATE')
fgonly = td('fgonly', {fgonly:?}, requiresCompatibilities=['FARGATE'], cpu='256', memory='512', networkMode='awsvpc')
ecs.create_service(cluster=c, serviceName='fgonly', taskDefinition=fgonly, desiredCount=0)
arch = td('arch', {arch:?}, runtimePlatform={{'cpuArchitecture': {other_arch:?}, 'operatingSystemFamily': 'LINUX'}})
ecs.create_service(cluster=c, serviceName='arch', taskDefinition=arch, desiredCount=0)
win = td('win', {win:?}, runtimePlatform={{'cpuArchitecture': 'X86_64', 'operatingSystemFamily': 'WINDOWS_SERVER_2022_CORE'}})
ecs.create_service(cluster=c, serviceName='win', taskDefinition=win, desiredCount=0)
member = td('member', {member:?}, placementConstraints=[{{'type': 'memberOf', 'expression': 'attribute:ecs.os-type == windows'}}])
ecs.create_service(cluster=c, serviceName='member', taskDefinition=member, desiredCount=0)
undecided = td('undecided', {undecided:?}, placementConstraints=[{{'type': 'memberOf', 'expression': 'attribute:stack == prod'}}])
ecs.create_service(cluster=c, serviceName='undecided', taskDefinition=undecided, desiredCount=0)
gone = td('gone', {gone:?})
ecs.create_service(cluster=c, serviceName='gone', taskDefinition=gone, desiredCount=0)
ecs.delete_service(cluster=c, service='gone')
ts = td('taskset', {taskset:?})
ecs.create_service(cluster=c, serviceName='external', desiredCount=0, deploymentController={{'type': 'EXTERNAL'}})
ecs.create_task_set(cluster=c, service='external', taskDefinition=ts, launchType='EC2')
ecs.create_service(cluster=c, serviceName='empty', desiredCount=0, deploymentController={{'type': 'EXTERNAL'}})
"#,
        cluster = cluster.name,
        ec2 = image("ec2"),
        fargate = absent("fargate"),
        fgonly = absent("fgonly"),
        arch = absent("arch"),
        other_arch = other_architecture(),
        win = absent("win"),
        member = absent("member"),
        undecided = image("undecided"),
        gone = absent("gone"),
        taskset = image("taskset"),
    );
    moto.boto3(&script, None);
    // The ECS agent's untracked cleanup, on in the same file, would delete
    // what prefetch pulls: said once, with the variable that prevents it.
    let env_text = docker_auth_config(
        &[(&h.alpha.addr(), "bob", h.alpha.password("bob"))],
        &[
            ("ECS_CLUSTER", &cluster.name),
            ("ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP", "true"),
        ],
    );

    let out = prefetch(&moto.endpoint(), &env_text, &["--dry-run", "--json"]);
    // The service naming no task definition is a problem: exit 1.
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.matches("untracked-cleanup-loop").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("ECS_EXCLUDE_UNTRACKED_IMAGE"),
        "{}",
        out.stderr
    );
    let lines = json_lines(&out);
    let would: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["status"] == "would-pull")
        .filter_map(|l| l["image"].as_str())
        .collect();
    let (ec2, taskset, undecided) = (image("ec2"), image("taskset"), image("undecided"));
    assert_eq!(
        would,
        std::collections::BTreeSet::from([ec2.as_str(), taskset.as_str(), undecided.as_str()]),
        "{lines:#?}"
    );
    let undecided_line = line_for(&lines, &undecided);
    assert!(
        undecided_line["notes"].as_array().is_some_and(|n| n
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains("stack == prod")))),
        "an undecided pull says why: {undecided_line}"
    );
    for (what, reason) in [
        ("fargate", "launch-type"),
        ("fgonly", "requires-compatibilities"),
        ("arch", "cpu-architecture"),
        ("win", "os-family"),
        ("member", "member-of"),
    ] {
        let line = line_for(&lines, &absent(what));
        assert_eq!(line["status"], "skipped", "{what}: {line}");
        assert_eq!(line["reason"], reason, "{what}: {line}");
        assert_eq!(line["services"], serde_json::json!([what]), "{line}");
        assert!(
            line["error"].as_str().is_some_and(|d| !d.is_empty()),
            "{line}"
        );
    }
    // moto lists a deleted service as INACTIVE: skipped as a whole, its
    // task definition never described.
    let gone = lines
        .iter()
        .find(|l| l["services"] == serde_json::json!(["gone"]))
        .unwrap_or_else(|| panic!("the deleted service is not reported: {lines:#?}"));
    assert_eq!(gone["status"], "skipped", "{gone}");
    assert_eq!(gone["reason"], "service-not-active", "{gone}");
    let empty = lines
        .iter()
        .find(|l| l["services"] == serde_json::json!(["empty"]))
        .unwrap_or_else(|| panic!("the service naming nothing is not reported: {lines:#?}"));
    assert_eq!(empty["status"], "failed", "{empty}");
    assert!(
        empty["error"]
            .as_str()
            .is_some_and(|e| e.contains("names no task definition") && e.contains("EXTERNAL")),
        "{empty}"
    );

    // The real prefetch pulls exactly those three, as bob; the skipped
    // images (which do not exist) are never asked for.
    let mark = h.alpha.log_mark();
    let out = prefetch(&moto.endpoint(), &env_text, &["--json"]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    let pulled: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["status"] == "pulled" || l["status"] == "cached")
        .filter_map(|l| l["image"].as_str())
        .collect();
    assert_eq!(pulled, would, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l["status"] != "failed" || l["services"] == serde_json::json!(["empty"])),
        "{lines:#?}"
    );
    let users = h.alpha.users_since_in(mark, &repo);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "bob"),
        "{users:?}"
    );
    assert!(
        h.alpha
            .users_since_in(mark, &format!("{repo}-absent"))
            .is_empty(),
        "a skipped image was asked for"
    );
}

/// Where ECS pinned a digest in a service revision, prefetch pulls that
/// digest and tags it with the task's reference, as the ECS agent does
/// after its own pull by digest: even after the tag moved in the registry,
/// the image the task's reference finds in the engine (what the ECS agent
/// inspects with `prefer-cached`) is the one ECS pinned. moto has no
/// service deployments or revisions, so a stub ECS serves them (and the
/// service and task definition); the engine and the registry are real.
#[test]
fn a_digest_ecs_pinned_is_pulled_and_tagged_with_the_tasks_reference() {
    let h = Harness::get();
    let repo = format!("prefetch/pinned{}", random_token(8).to_ascii_lowercase());
    let bob = ("bob", h.alpha.password("bob"));
    let pinned = h.push_fixture(&h.alpha, &repo, "1", bob);
    // The tag moves on after ECS resolved it.
    let moved = h.push_fixture(&h.alpha, &repo, "1", bob);
    assert_ne!(pinned, moved);
    let image = h.alpha.image_ref(&repo, "1");
    let td_arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/pinned:1";
    let revision = "arn:aws:ecs:us-east-1:123456789012:service-revision/stub/web/1";
    let services = serde_json::json!({"services": [{
        "serviceName": "web", "serviceArn": ECS_STUB_SERVICE_ARN, "status": "ACTIVE",
        "taskDefinition": td_arn, "launchType": "EC2",
        "deployments": [{"status": "PRIMARY", "taskDefinition": td_arn}]
    }], "failures": []})
    .to_string();
    let task_definition = serde_json::json!({"taskDefinition": {
        "taskDefinitionArn": td_arn, "family": "pinned", "revision": 1,
        "containerDefinitions": [{"name": "app", "image": image, "memory": 64}]
    }})
    .to_string();
    let deployments = serde_json::json!({"serviceDeployments": [{
        "serviceDeploymentArn": "arn:aws:ecs:us-east-1:123456789012:service-deployment/stub/web/1",
        "serviceArn": ECS_STUB_SERVICE_ARN, "status": "IN_PROGRESS",
        "targetServiceRevisionArn": revision, "createdAt": 1_765_000_000
    }]})
    .to_string();
    let revisions = serde_json::json!({"serviceRevisions": [{
        "serviceRevisionArn": revision, "serviceArn": ECS_STUB_SERVICE_ARN,
        "taskDefinition": td_arn,
        "containerImages": [{"containerName": "app", "image": image, "imageDigest": pinned}]
    }], "failures": []})
    .to_string();
    let stub = EcsStub::with_answers(
        services.as_bytes(),
        &[
            ("DescribeTaskDefinition", &task_definition),
            ("ListServiceDeployments", &deployments),
            ("DescribeServiceRevisions", &revisions),
        ],
    );
    let env_text = docker_auth_config(
        &[(&h.alpha.addr(), "bob", h.alpha.password("bob"))],
        &[("ECS_CLUSTER", "stub")],
    );

    let out = prefetch(&stub.endpoint(), &env_text, &["--dry-run", "--json"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    assert_eq!(
        line_for(&lines, &image)["pinned_digest"],
        pinned.as_str(),
        "{lines:#?}"
    );

    let mark = h.alpha.log_mark();
    let out = prefetch(&stub.endpoint(), &env_text, &["--json"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    let line = line_for(&lines, &image);
    assert_eq!(line["status"], "pulled", "{line}");
    assert_eq!(line["username"], "bob", "{line}");
    assert_eq!(line["digest"], pinned.as_str(), "{line}");
    let users = h.alpha.users_since_in(mark, &repo);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "bob"),
        "{users:?}"
    );
    // The task's reference finds the pinned image, not the moved tag's.
    let by_tag = h
        .local_image_id(&image)
        .expect("the task's reference is in the engine");
    let by_digest = h
        .local_image_id(&format!(
            "{}@{pinned}",
            h.alpha.image_ref(&repo, "1").trim_end_matches(":1")
        ))
        .expect("the pinned digest is in the engine");
    assert_eq!(by_tag, by_digest);
    let calls = stub.calls();
    assert!(
        calls.iter().any(|c| c == "ListServiceDeployments")
            && calls.iter().any(|c| c == "DescribeServiceRevisions"),
        "{calls:?}"
    );
}

/// `serve` removes what it prefetched once no followed service names it
/// (after `PULLAUTH_PREFETCH_REMOVE_AFTER`), against the real engine: the
/// old revision's image goes; an image a container uses stays (the engine
/// refuses, pullauth never forces); an image pullauth did not pull (a
/// `docker pull` of the operator's) is never touched.
#[test]
fn serve_removes_what_it_prefetched_once_nothing_names_it_and_nothing_else() {
    let h = Harness::get();
    let moto = Moto::shared();
    let cluster = Cluster::new(moto, "cleanup");
    let token = cluster.token.clone();
    let bob = ("bob", h.alpha.password("bob"));
    let repo = format!("prefetch/clean{}", random_token(8).to_ascii_lowercase());
    for tag in ["old", "used", "new", "bystander"] {
        h.push_fixture(&h.alpha, &repo, tag, bob);
    }
    let image = |tag: &str| h.alpha.image_ref(&repo, tag);
    // The operator's own pull: in the engine before pullauth starts.
    let login = scratch_dir("prefetch-cleanup-login");
    h.docker_login(login.path(), &h.alpha, "bob", h.alpha.password("bob"))
        .expect("login");
    h.docker_pull(login.path(), &image("bystander"))
        .expect("the operator's pull");
    let family = format!("clean-{token}");
    let first = cluster.register(
        moto,
        &family,
        &[("app", &image("old"), None), ("side", &image("used"), None)],
        None,
    );
    cluster.register(moto, &family, &[("app", &image("new"), None)], None);
    cluster.service(moto, "web", &first, false);
    let env_text = format!(
        "{}PULLAUTH_PREFETCH=on\nPULLAUTH_PREFETCH_INTERVAL=1s\nPULLAUTH_PREFETCH_REMOVE_AFTER=2s\n",
        docker_auth_config(
            &[(&h.alpha.addr(), "bob", h.alpha.password("bob"))],
            &[("ECS_CLUSTER", &cluster.name)],
        )
    );
    let data = scratch_dir("prefetch-cleanup");
    let mut spec = AgentSpec::new()
        .data_dir(data.path())
        .env_file_text(&env_text);
    for (k, v) in pullauth_integration::pullauth_aws_env(&moto.endpoint()) {
        spec = spec.env(k, &v);
    }
    let agent = spec.start();
    let bound = Duration::from_secs(90);
    wait_view(&agent, bound, "the first revision warm", |v| {
        image_state(v, &image("old")).as_deref() == Some("warm")
            && image_state(v, &image("used")).as_deref() == Some("warm")
    });
    // A container (created, never started) uses one of them.
    let container = format!("pullauth-it-cleanup-{token}");
    let out = h
        .docker()
        .args(["create", "--name", &container, &image("used"), "sh"])
        .output()
        .expect("docker create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // moto's UpdateService leaves the old revision in the PRIMARY
    // deployment; a deleted service (INACTIVE) names nothing, as a
    // finished deployment does in ECS.
    moto.boto3(
        &format!(
            "ecs = client('ecs')\n\
             ecs.delete_service(cluster='{c}', service='web')\n\
             ecs.create_service(cluster='{c}', serviceName='web2', taskDefinition='{family}:2', desiredCount=0)\n",
            c = cluster.name
        ),
        None,
    );
    wait_view(&agent, bound, "the new revision warm", |v| {
        image_state(v, &image("new")).as_deref() == Some("warm")
    });
    wait_view(&agent, bound, "the old revision's image removed", |_| {
        h.local_image_id(&image("old")).is_none()
    });
    // Polls go on; give the follower a few to (wrongly) remove more.
    let polls = metric_value(&agent.metrics(), "pullauth_prefetch_polls_total").unwrap_or(0.0);
    wait_view(&agent, bound, "three more polls", |_| {
        metric_value(&agent.metrics(), "pullauth_prefetch_polls_total")
            .is_some_and(|n| n >= polls + 3.0)
    });
    assert!(
        h.local_image_id(&image("used")).is_some(),
        "a container's image was removed"
    );
    assert!(
        h.local_image_id(&image("bystander")).is_some(),
        "the operator's image was removed"
    );
    assert!(h.local_image_id(&image("new")).is_some());
    assert!(
        metric_value(&agent.metrics(), "pullauth_prefetch_images_cleaned_total")
            .is_some_and(|n| n >= 1.0)
    );
    let _ = h.docker().args(["rm", &container]).output();
}

/// With the local ECS agent registered (its introspection API names the
/// container instance), the instance's own attributes, custom ones too,
/// decide `memberOf`: an expression naming this instance's `stack` pulls,
/// one naming another is skipped. Without an ECS agent to ask (as at boot),
/// both pull, each saying why, unless `ECS_INSTANCE_ATTRIBUTES` names the
/// attribute (then it decides, as for a plan follower).
#[test]
fn custom_attributes_of_the_registered_instance_decide_member_of() {
    let h = Harness::get();
    let moto = Moto::shared();
    let cluster = Cluster::new(moto, "attrs");
    let token = cluster.token.clone();
    let repo = format!("prefetch/attrs{}", random_token(8).to_ascii_lowercase());
    h.push_fixture(&h.alpha, &repo, "prod", ("bob", h.alpha.password("bob")));
    let prod = h.alpha.image_ref(&repo, "prod");
    let dev = h.alpha.image_ref(&format!("{repo}-absent"), "dev");
    let arn = moto
        .boto3(
            &format!(
                r#"
ecs = client('ecs')
ec2 = client('ec2')
c = {cluster:?}
ami = ec2.describe_images()['Images'][0]['ImageId']
instance = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType='t3.large')['Instances'][0]['InstanceId']
doc = json.dumps({{'instanceId': instance, 'region': 'us-east-1', 'instanceType': 't3.large'}})
arn = ecs.register_container_instance(cluster=c, instanceIdentityDocument=doc)['containerInstance']['containerInstanceArn']
ecs.put_attributes(cluster=c, attributes=[{{'name': 'stack', 'value': 'prod', 'targetId': arn}}])
for name, image, stack in [('prodonly', {prod:?}, 'prod'), ('devonly', {dev:?}, 'dev')]:
    td = ecs.register_task_definition(family=name + '-{token}',
        containerDefinitions=[{{'name': 'app', 'image': image, 'memory': 64}}],
        placementConstraints=[{{'type': 'memberOf', 'expression': 'attribute:stack == ' + stack}}])
    ecs.create_service(cluster=c, serviceName=name, desiredCount=0,
        taskDefinition=td['taskDefinition']['taskDefinitionArn'])
print(arn)
"#,
                cluster = cluster.name
            ),
            None,
        )
        .trim()
        .to_owned();
    let ecs_agent = EcsAgentStub::start(&cluster.name, &arn);
    let env_with = |uri: &str, attributes: Option<&str>| {
        let mut vars = vec![
            ("ECS_CLUSTER", cluster.name.as_str()),
            ("PULLAUTH_ECS_AGENT_URI", uri),
        ];
        if let Some(attributes) = attributes {
            vars.push(("ECS_INSTANCE_ATTRIBUTES", attributes));
        }
        docker_auth_config(&[(&h.alpha.addr(), "bob", h.alpha.password("bob"))], &vars)
    };
    let env_text = |uri: &str| env_with(uri, None);

    let out = prefetch(
        &moto.endpoint(),
        &env_text(&ecs_agent.uri()),
        &["--dry-run", "--json"],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    assert_eq!(
        line_for(&lines, &prod)["status"],
        "would-pull",
        "{lines:#?}"
    );
    assert_eq!(
        line_for(&lines, &prod)["notes"],
        serde_json::json!([]),
        "{lines:#?}"
    );
    let skipped = line_for(&lines, &dev);
    assert_eq!(skipped["status"], "skipped", "{skipped}");
    assert_eq!(skipped["reason"], "member-of", "{skipped}");

    // No ECS agent to ask: nothing is decided on `stack`, both pull.
    let nobody = format!("http://127.0.0.1:{}", pullauth_integration::free_port());
    let out = prefetch(
        &moto.endpoint(),
        &env_text(&nobody),
        &["--dry-run", "--json"],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    for image in [&prod, &dev] {
        let line = line_for(&lines, image);
        assert_eq!(line["status"], "would-pull", "{line}");
        assert!(
            line["notes"].to_string().contains("does not know yet"),
            "{line}"
        );
    }
    assert!(out.stderr.contains("no ECS agent"), "{}", out.stderr);

    // Still no ECS agent, but the ECS agent's configuration says which
    // custom attributes it registers the instance with: `stack` is decided
    // from it, with no ECS call (as a plan follower decides).
    let out = prefetch(
        &moto.endpoint(),
        &env_with(&nobody, Some(r#"{"stack": "prod"}"#)),
        &["--dry-run", "--json"],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines = json_lines(&out);
    let pulled = line_for(&lines, &prod);
    assert_eq!(pulled["status"], "would-pull", "{pulled}");
    assert_eq!(pulled["notes"], serde_json::json!([]), "{pulled}");
    let skipped = line_for(&lines, &dev);
    assert_eq!(skipped["status"], "skipped", "{skipped}");
    assert_eq!(skipped["reason"], "member-of", "{skipped}");
}

/// Issue 24: a shared cluster plan. One `serve --follow-cluster --publish`
/// reads moto's ECS and writes the plan to moto's S3; two `serve
/// --follow-plan` (their own data directories) follow it with conditional
/// GETs and pull into the engine. A deployment (`UpdateService` to a new
/// revision) reaches both. Then the faults: a plan read later than a
/// publisher's own view is never replaced by it (`prefetch --publish`
/// says so), a deleted plan, another cluster's plan, garbage and a stale
/// plan are each an error or a warning naming the object while what is
/// warm stays warm; `prefetch --plan` pulls from the plan at boot.
#[test]
fn a_published_plan_carries_a_deployment_to_every_follower() {
    let h = Harness::get();
    let moto = Moto::start();
    let f = fixture(&moto, "plan");
    let token = &f.cluster.token;
    let bucket = format!("plans-{token}");
    moto.boto3(
        &format!("client('s3').create_bucket(Bucket='{bucket}')\n"),
        None,
    );
    let plan_url = format!("s3://{bucket}/{}.json", f.cluster.name);
    let (new_repo, new_image) = push(&h.alpha, "bob");
    let family = format!("keyed-{token}");
    f.cluster
        .register(&moto, &family, &[("app", &new_image, None)], None);
    let aws_env = pullauth_integration::pullauth_aws_env(&moto.endpoint());
    let start = |what: &str, args: &[&str], extra: &str| {
        let data = scratch_dir(what);
        let mut spec = AgentSpec::new()
            .data_dir(data.path())
            .env_file_text(&format!(
                "{}PULLAUTH_PREFETCH_INTERVAL=1s\n{extra}",
                f.env_text
            ));
        for arg in args {
            spec = spec.arg(arg);
        }
        for (k, v) in &aws_env {
            spec = spec.env(k, v);
        }
        let agent = spec.start();
        (data, spec, agent)
    };
    let (_pd, publisher_spec, publisher) = start(
        "plan-publisher",
        &["--follow-cluster", "--publish", &plan_url],
        "",
    );
    let follower_args = ["--follow-plan", plan_url.as_str(), "--plan-interval", "1s"];
    let (_ad, a_spec, a) = start("plan-follower-a", &follower_args, "");
    let (_bd, b_spec, b) = start("plan-follower-b", &follower_args, "");
    let bound = Duration::from_secs(90);
    for (name, agent) in [("a", &a), ("b", &b)] {
        let view = wait_view(
            agent,
            bound,
            &format!("{name}: the first images warm"),
            |v| {
                image_state(v, &f.keyed_image).as_deref() == Some("warm")
                    && image_state(v, &f.secret_image).as_deref() == Some("warm")
            },
        );
        let source = &view["plan_source"];
        assert_eq!(source["location"], plan_url.as_str(), "{view:#}");
        assert_eq!(source["stale"], false, "{view:#}");
        assert!(source["etag"].is_string(), "{view:#}");
    }
    let published = wait_view(&publisher, bound, "the publisher's view", |v| {
        v["plan_source"]["published"].is_string()
    });
    assert!(
        published["plan_source"]["publish_error"].is_null(),
        "{published:#}"
    );

    // A deployment reaches both followers' engines through the plan.
    let mark = h.alpha.log_mark();
    let updated = std::time::Instant::now();
    moto.boto3(
        &format!(
            "client('ecs').update_service(cluster='{}', service='web', taskDefinition='{family}:2')\n",
            f.cluster.name
        ),
        None,
    );
    for (name, agent) in [("a", &a), ("b", &b)] {
        wait_view(
            agent,
            bound,
            &format!("{name}: the new revision warm"),
            |v| image_state(v, &new_image).as_deref() == Some("warm"),
        );
    }
    eprintln!(
        "shared plan: UpdateService -> image warm on both followers in {:?} (publisher interval 1s, --plan-interval 1s)",
        updated.elapsed()
    );
    let users = h.alpha.users_since_in(mark, &new_repo);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "bob"),
        "{users:?}"
    );
    // The plan itself holds no secret (ARNs and references only).
    let object = moto.boto3(
        &format!(
            "print(client('s3').get_object(Bucket='{bucket}', Key='{}.json')['Body'].read().decode())\n",
            f.cluster.name
        ),
        None,
    );
    assert!(object.contains("pullauth.cluster-plan/v1"), "{object}");
    assert_no_secret("the plan", object.as_bytes(), &f.password);
    assert_no_secret("the plan", object.as_bytes(), h.alpha.password("bob"));

    // The publisher stops. A plan read after anything it could publish
    // now is in place (its readAt in the future): a one-shot publisher
    // with an older view leaves it alone.
    drop(publisher);
    let mut newer: Value = serde_json::from_str(object.trim()).expect("the plan is JSON");
    newer["readAt"] = "2999-01-01T00:00:00.000Z".into();
    let put = |body: &str| {
        moto.boto3(
            &format!(
                "client('s3').put_object(Bucket='{bucket}', Key='{}.json', Body={body:?}.encode())\n",
                f.cluster.name
            ),
            None,
        );
    };
    put(&newer.to_string());
    let out = prefetch(
        &moto.endpoint(),
        &f.env_text,
        &["--json", "--publish", &plan_url],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON line");
    assert_eq!(line["outcome"], "newer-plan-kept", "{line:#}");
    let after = moto.boto3(
        &format!(
            "print(client('s3').get_object(Bucket='{bucket}', Key='{}.json')['Body'].read().decode())\n",
            f.cluster.name
        ),
        None,
    );
    assert!(after.contains("2999-01-01"), "overwritten: {after}");

    // A boot prefetch from the plan pulls what it says for this instance.
    let out = prefetch(
        &moto.endpoint(),
        &f.env_text,
        &["--json", "--plan", &plan_url],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = json_lines(&out);
    let status = line_for(&lines, &new_image)["status"]
        .as_str()
        .unwrap_or_default();
    assert!(
        matches!(status, "pulled" | "up-to-date" | "cached"),
        "{lines:#?}"
    );

    // Faults: each one an error naming the object; warm stays warm.
    let faults: [(&str, Option<String>, &str); 3] = [
        (
            "garbage",
            Some("<html>503</html>".to_owned()),
            "not a pullauth cluster plan",
        ),
        (
            "another cluster's",
            Some(newer.to_string().replace(
                &format!("\"cluster\":\"{}\"", f.cluster.name),
                "\"cluster\":\"someone-else\"",
            )),
            "someone-else",
        ),
        ("deleted", None, "no plan at"),
    ];
    for (what, body, says) in faults {
        match body {
            Some(body) => put(&body),
            None => {
                moto.boto3(
                    &format!(
                        "client('s3').delete_object(Bucket='{bucket}', Key='{}.json')\n",
                        f.cluster.name
                    ),
                    None,
                );
            }
        }
        let view = wait_view(&a, bound, &format!("the {what} plan's error"), |v| {
            v["last_error"].as_str().is_some_and(|e| e.contains(says))
        });
        let error = view["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(&plan_url), "{what}: {error}");
        assert_eq!(
            image_state(&view, &new_image).as_deref(),
            Some("warm"),
            "{what}: {view:#}"
        );
    }
    assert!(
        metric_value(
            &a.metrics(),
            "pullauth_prefetch_poll_failures_total{class=\"bad_response\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{}",
        a.metrics()
    );

    // A stale plan (not confirmed for a day): followed, and said.
    let mut stale = newer.clone();
    stale["checkedAt"] = "2020-01-01T00:00:00.000Z".into();
    put(&stale.to_string());
    let view = wait_view(&b, bound, "the stale plan", |v| {
        v["plan_source"]["stale"] == true
    });
    assert!(
        view["plan_source"]["age_seconds"]
            .as_u64()
            .is_some_and(|age| age > 86_400),
        "{view:#}"
    );
    assert!(
        metric_value(&b.metrics(), "pullauth_prefetch_plan_age_seconds")
            .is_some_and(|age| age > 86_400.0),
        "{}",
        b.metrics()
    );
    assert!(
        b_spec.logs().contains("the cluster plan is stale"),
        "{}",
        b_spec.log_tail(20)
    );
    // With --plan-fallback, a follower of the stale plan reads ECS itself
    // meanwhile, and says so.
    let mut fallback_args = follower_args.to_vec();
    fallback_args.push("--plan-fallback");
    let (_cd, c_spec, c) = start("plan-follower-c", &fallback_args, "");
    let view = wait_view(&c, bound, "the fallback to ECS", |v| {
        v["plan_source"]["fell_back"] == true
            && image_state(v, &new_image).as_deref() == Some("warm")
    });
    assert_eq!(view["plan_source"]["stale"], true, "{view:#}");

    // S3 unreachable: an error naming the call and the endpoint; warm
    // stays warm.
    let s3_at = moto.addr();
    moto.stop();
    let view = wait_view(&a, bound, "the unreachable S3", |v| {
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("s3:GetObject") && e.contains(&s3_at))
    });
    assert_eq!(
        image_state(&view, &new_image).as_deref(),
        Some("warm"),
        "{view:#}"
    );
    for (what, spec) in [
        ("publisher", &publisher_spec),
        ("a", &a_spec),
        ("b", &b_spec),
        ("c", &c_spec),
    ] {
        assert_no_secret(what, &spec.log_bytes(), &f.password);
    }
}
