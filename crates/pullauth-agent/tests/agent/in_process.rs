//! The agent's state machine, driven in-process through its `Puller` seam:
//! a fake engine that holds every pull until the test releases it, so that
//! sharing, reloads, panics and the concurrency bound are tested
//! deterministically rather than by racing a real pull.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use pullauth_agent::agent::VerifyTarget;
use pullauth_agent::credentials::{Provided, Provider, TaskCredentials};
use pullauth_agent::helper::HelperCache;
use pullauth_agent::{Agent, Identity, Puller, Settings};
use pullauth_config::{AuthType, PullBehavior, SecretString};
use pullauth_docker::{
    Identity as PullIdentity, Obtained, Platform, PullError, PullEvent, PullOptions, PullStatus,
    Verified,
};
use pullauth_resolve::{Entry, ImageRef, RegistryTable};
use pullauth_store::{Status, Store, Task};
use serde_json::json;
use tokio::sync::Semaphore;

/// One call the agent made to the engine.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    image: String,
    username: Option<String>,
}

/// What the fake does with the next pull.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Next {
    Succeed,
    Reject,
    Panic,
}

/// An engine whose pulls wait for [`FakeEngine::release`].
struct FakeEngine {
    calls: Mutex<Vec<Call>>,
    released: Semaphore,
    running: AtomicUsize,
    most_running: AtomicUsize,
    next: Mutex<Next>,
    panicked: AtomicBool,
    /// (source, target) of each tag.
    tags: Mutex<Vec<(String, String)>>,
}

impl FakeEngine {
    fn new() -> Arc<FakeEngine> {
        Arc::new(FakeEngine {
            calls: Mutex::new(Vec::new()),
            released: Semaphore::new(0),
            running: AtomicUsize::new(0),
            most_running: AtomicUsize::new(0),
            tags: Mutex::new(Vec::new()),
            next: Mutex::new(Next::Succeed),
            panicked: AtomicBool::new(false),
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// Lets `n` held pulls finish.
    fn release(&self, n: usize) {
        self.released.add_permits(n);
    }

    fn then(&self, next: Next) {
        *self.next.lock().expect("next") = next;
    }
}

impl Puller for FakeEngine {
    fn address(&self) -> &str {
        "fake://engine"
    }

    fn image_size<'a>(
        &'a self,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, PullError>> {
        async { Ok(None) }.boxed()
    }

    fn remove_image<'a>(
        &'a self,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<pullauth_docker::Removal, PullError>> {
        async { Ok(pullauth_docker::Removal::Missing) }.boxed()
    }

    fn tag<'a>(
        &'a self,
        source: &'a str,
        target: &'a ImageRef,
    ) -> BoxFuture<'a, Result<(), PullError>> {
        self.tags
            .lock()
            .expect("tags")
            .push((source.to_owned(), target.pull_reference()));
        async { Ok(()) }.boxed()
    }

    fn platform(&self) -> BoxFuture<'_, Result<Platform, PullError>> {
        async {
            Ok(Platform {
                architecture: Some("x86_64".into()),
                os_type: Some("linux".into()),
            })
        }
        .boxed()
    }

    fn image_id<'a>(
        &'a self,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, PullError>> {
        async { Ok(Some("sha256:feedface".to_owned())) }.boxed()
    }

    fn verify<'a>(
        &'a self,
        image: &'a ImageRef,
        entry: Option<&'a Entry>,
    ) -> BoxFuture<'a, Result<Verified, PullError>> {
        let result = match entry {
            Some(_) => Ok(Verified {
                digest: Some("sha256:feedface".to_owned()),
                media_type: None,
                platforms: vec!["linux/amd64".to_owned()],
            }),
            None => Err(PullError::NotFound {
                registry: image.registry.clone(),
                image: image.to_string(),
                detail: "manifest unknown".to_owned(),
            }),
        };
        async move { result }.boxed()
    }

    fn obtain<'a>(
        &'a self,
        image: &'a ImageRef,
        entry: Option<&'a Entry>,
        _behavior: PullBehavior,
        _pulled_before: bool,
        _options: &'a PullOptions,
        _progress: &'a mut (dyn FnMut(PullEvent) + Send),
    ) -> BoxFuture<'a, Result<Obtained, PullError>> {
        async move {
            let username = entry.and_then(|e| e.credentials.username.clone());
            self.calls.lock().expect("calls").push(Call {
                image: image.pull_reference(),
                username: username.clone(),
            });
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_running.fetch_max(now, Ordering::SeqCst);
            self.released.acquire().await.expect("open").forget();
            self.running.fetch_sub(1, Ordering::SeqCst);
            let next = *self.next.lock().expect("next");
            match next {
                Next::Succeed => Ok(Obtained {
                    status: PullStatus::Pulled,
                    image_id: "sha256:feedface".to_owned(),
                    digest: None,
                    attempts: 1,
                    retries: 0,
                    fallback_from: None,
                    elapsed: Duration::ZERO,
                }),
                Next::Reject => Err(PullError::Unauthorized {
                    registry: image.registry.clone(),
                    image: image.to_string(),
                    identity: Box::new(PullIdentity {
                        key: entry.map(|e| e.key.written.clone()),
                        username,
                        method: "password",
                        origin: entry.map(|e| e.origin.clone()),
                    }),
                    detail: "unauthorized: authentication required".to_owned(),
                }),
                Next::Panic => {
                    self.then(Next::Succeed);
                    self.panicked.store(true, Ordering::SeqCst);
                    panic!("the fake engine fell over");
                }
            }
        }
        .boxed()
    }
}

fn settings(entries: &[(&str, &str, &str)]) -> Settings {
    let mut map = serde_json::Map::new();
    for (key, user, password) in entries {
        map.insert(
            (*key).to_owned(),
            json!({"username": user, "password": password}),
        );
    }
    let data = SecretString::from(serde_json::Value::Object(map).to_string());
    Settings {
        table: RegistryTable::from_auth_data(AuthType::Docker, &data).expect("valid auth data"),
        behavior: PullBehavior::Always,
        options: PullOptions::default(),
    }
}

/// The identity every agent of these tests reports.
fn identity() -> Identity {
    Identity {
        cluster: "test".to_owned(),
        container_instance_arn: None,
        version: "test".to_owned(),
    }
}

/// An agent over `engine` pulling with `provider`, 4 pulls at a time.
fn start_with_provider(engine: &Arc<FakeEngine>, settings: Settings, provider: Provider) -> Agent {
    Agent::start_with_provider(
        Store::in_memory(),
        engine.clone(),
        settings,
        identity(),
        4,
        Arc::new(provider),
    )
    .expect("agent")
}

fn start(engine: &Arc<FakeEngine>, settings: Settings, max_pulls: usize) -> Agent {
    Agent::start(
        Store::in_memory(),
        engine.clone(),
        settings,
        identity(),
        max_pulls,
    )
    .expect("agent")
}

fn taskdef(images: &[&str]) -> Vec<u8> {
    let containers: Vec<_> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image, "essential": true}))
        .collect();
    json!({"family": "f", "containerDefinitions": containers})
        .to_string()
        .into_bytes()
}

/// Waits (bounded) until `done` holds; the fake engine decides when pulls
/// end, so this waits for the agent's own bookkeeping, never for a race.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn final_task(agent: &Agent, arn: &str) -> Task {
    let mut last = None;
    until("the task to be final", || {
        last = agent.store().task(arn).expect("read");
        last.as_ref()
            .is_some_and(|t| t.containers.iter().all(|c| c.known_status.is_final()))
    })
    .await;
    last.expect("task")
}

async fn submit(agent: &Agent, images: &[&str]) -> String {
    agent.submit(&taskdef(images)).await.expect("admitted").arn
}

#[tokio::test]
async fn hundred_submissions_during_a_held_pull_share_it() {
    let engine = FakeEngine::new();
    let agent = start(&engine, settings(&[("r.io", "alice", "pw")]), 4);
    let mut arns = Vec::new();
    for _ in 0..100 {
        arns.push(submit(&agent, &["r.io/app:1"]).await);
    }
    until("the one pull to reach the engine", || {
        engine.calls().len() == 1
    })
    .await;
    engine.release(1);
    for arn in &arns {
        let task = final_task(&agent, arn).await;
        assert_eq!(task.known_status, Status::Pulled);
        assert_eq!(task.containers[0].username.as_deref(), Some("alice"));
    }
    assert_eq!(engine.calls().len(), 1, "{:?}", engine.calls());
    assert!(
        agent
            .metrics()
            .render()
            .contains("pullauth_pulls_shared_total 99")
    );
}

#[tokio::test]
async fn a_reload_that_changes_credentials_starts_a_new_pull_and_each_task_records_its_own() {
    let engine = FakeEngine::new();
    let agent = start(&engine, settings(&[("r.io", "alice", "old")]), 4);
    let before = submit(&agent, &["r.io/app:1"]).await;
    until("the first pull", || engine.calls().len() == 1).await;

    agent.replace_settings(settings(&[("r.io", "bob", "new")]));
    let after = submit(&agent, &["r.io/app:1"]).await;
    until("a second pull with the new credentials", || {
        engine.calls().len() == 2
    })
    .await;
    engine.release(2);

    let before = final_task(&agent, &before).await;
    let after = final_task(&agent, &after).await;
    assert_eq!(before.containers[0].username.as_deref(), Some("alice"));
    assert_eq!(after.containers[0].username.as_deref(), Some("bob"));
    let users: Vec<_> = engine.calls().into_iter().map(|c| c.username).collect();
    assert_eq!(users, [Some("alice".to_owned()), Some("bob".to_owned())]);
}

#[tokio::test]
async fn a_task_that_joins_a_pull_records_the_identity_that_pull_used() {
    let engine = FakeEngine::new();
    let agent = start(&engine, settings(&[("r.io", "alice", "pw")]), 4);
    let first = submit(&agent, &["r.io/team/app:1"]).await;
    until("the pull", || engine.calls().len() == 1).await;
    // The same credentials under a new, longer key: the header the engine
    // gets is identical, so the task joins, and records the pull's key.
    agent.replace_settings(settings(&[
        ("r.io", "alice", "pw"),
        ("r.io/team", "alice", "pw"),
    ]));
    engine.then(Next::Reject);
    let joined = submit(&agent, &["r.io/team/app:1"]).await;
    engine.release(1);

    let first = final_task(&agent, &first).await;
    let joined = final_task(&agent, &joined).await;
    assert_eq!(engine.calls().len(), 1, "joined, not pulled again");
    for task in [&first, &joined] {
        let container = &task.containers[0];
        assert_eq!(container.known_status, Status::Stopped);
        assert_eq!(container.registry_key.as_deref(), Some("r.io"));
        assert_eq!(container.username.as_deref(), Some("alice"));
        let error = container.pull_error.as_deref().expect("error");
        assert!(
            error.contains("\"r.io\"") && error.contains("\"alice\""),
            "the error names the same key and user as the record: {error}"
        );
    }
}

#[tokio::test]
async fn a_panicking_pull_fails_its_tasks_and_does_not_poison_the_image() {
    let engine = FakeEngine::new();
    let agent = start(&engine, settings(&[]), 4);
    engine.then(Next::Panic);
    let first = submit(&agent, &["r.io/app:1"]).await;
    engine.release(1);
    let first = final_task(&agent, &first).await;
    assert!(engine.panicked.load(Ordering::SeqCst));
    assert_eq!(first.containers[0].known_status, Status::Stopped);
    let error = first.containers[0].pull_error.as_deref().expect("error");
    assert!(error.contains("ended abnormally"), "{error}");

    let second = submit(&agent, &["r.io/app:1"]).await;
    until("a new pull", || engine.calls().len() == 2).await;
    engine.release(1);
    assert_eq!(
        final_task(&agent, &second).await.known_status,
        Status::Pulled
    );
}

#[tokio::test]
async fn max_concurrent_pulls_bounds_what_reaches_the_engine() {
    let engine = FakeEngine::new();
    let agent = start(&engine, settings(&[]), 2);
    let images: Vec<String> = (0..5).map(|i| format!("r.io/app{i}:1")).collect();
    let refs: Vec<&str> = images.iter().map(String::as_str).collect();
    let arn = submit(&agent, &refs[..]).await;
    until("two pulls to run", || engine.calls().len() == 2).await;
    // Give the agent every chance to start a third; it must not.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(engine.calls().len(), 2);
    engine.release(1);
    until("a third pull once a slot is free", || {
        engine.calls().len() == 3
    })
    .await;
    engine.release(4);
    let task = final_task(&agent, &arn).await;
    assert_eq!(task.known_status, Status::Pulled);
    assert_eq!(engine.calls().len(), 5);
    assert_eq!(engine.most_running.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_task_is_admitted_in_one_write_with_its_containers_pulling() {
    let engine = FakeEngine::new();
    let agent = start(&engine, settings(&[]), 4);
    let task = agent
        .submit(&taskdef(&["r.io/a:1", "r.io/b:1"]))
        .await
        .expect("admitted");
    assert_eq!(task.known_status, Status::Pulling);
    assert!(task.pull_started_at.is_some());
    let stored = agent
        .store()
        .task(&task.arn)
        .expect("read")
        .expect("stored");
    assert!(
        stored
            .containers
            .iter()
            .all(|c| c.known_status == Status::Pulling),
        "{stored:?}"
    );
    engine.release(2);
    final_task(&agent, &task.arn).await;
}

#[tokio::test]
async fn verify_reports_every_known_image_once_or_the_ones_asked_for() {
    let engine = FakeEngine::new();
    let agent = start(&engine, settings(&[("r.io", "alice", "pw-never-shown")]), 4);
    submit(&agent, &["r.io/app:1", "other.io/x:1"]).await;
    submit(&agent, &["r.io/app:1"]).await;

    let reports: Vec<_> = agent
        .verify(VerifyTarget::KnownTasks)
        .await
        .expect("verified")
        .iter()
        .map(|r| r.to_json())
        .collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0]["image"], "other.io/x:1");
    assert_eq!(reports[0]["result"], "not_found");
    assert!(reports[0]["key"].is_null());
    assert_eq!(reports[1]["image"], "r.io/app:1");
    assert_eq!(reports[1]["result"], "accepted");
    assert_eq!(reports[1]["key"], "r.io");
    assert_eq!(reports[1]["username"], "alice");
    assert_eq!(reports[1]["digest"], "sha256:feedface");
    assert!(!format!("{reports:?}").contains("pw-never-shown"));

    let asked = agent
        .verify(VerifyTarget::Images(vec![
            "r.io/b:2".to_owned(),
            "r.io/b:2".to_owned(),
        ]))
        .await
        .expect("verified");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].image, "r.io/b:2");

    let bad = agent
        .verify(VerifyTarget::Images(vec!["Bad//Ref".to_owned()]))
        .await;
    assert!(
        matches!(bad, Err(pullauth_agent::agent::VerifyError::Invalid(_))),
        "{bad:?}"
    );
    // verify pulled nothing: only the three submitted containers' pulls.
    assert!(
        engine.calls().iter().all(|c| c.image != "r.io/b:2"),
        "{:?}",
        engine.calls()
    );
    engine.release(8);
}

/// A `docker-credential-count` in `dir` that appends the server URL it is
/// asked for to `log` and answers `helped-user` after a short pause, so
/// that concurrent callers overlap.
fn counting_helper(dir: &std::path::Path, log: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("docker-credential-count");
    let script = format!(
        "#!/bin/sh\nserver=$(cat)\necho \"$server\" >> '{}'\nsleep 0.2\n\
         echo '{{\"Username\":\"helped-user\",\"Secret\":\"canary-helper-pw\"}}'\n",
        log.display()
    );
    std::fs::write(&path, script).expect("write helper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn helper_runs(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

// Regression (issue 17, findings 1 and 4): 10 tasks x 10 containers of one
// image behind a credsStore helper ran the helper 100 times; now once. And
// POST /v1/verify ignored helpers (it looked at static keys only): now it
// runs the helper, as a pull does, and reports the helper's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpers_run_once_for_a_burst_of_tasks_and_verify_uses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("runs.log");
    counting_helper(dir.path(), &log);
    let data = SecretString::from(r#"{"auths":{},"credsStore":"count"}"#);
    let settings = Settings {
        table: RegistryTable::from_auth_data(AuthType::Docker, &data).expect("valid"),
        behavior: PullBehavior::Always,
        options: PullOptions::default(),
    };
    let provider = Provider::lazy(pullauth_aws::AwsOptions::default())
        .with_helpers(dir.path().to_path_buf(), HelperCache::default());
    let engine = FakeEngine::new();
    let agent = start_with_provider(&engine, settings, provider);
    let image = "helped.example.com/app:1";
    let images = [image; 10];
    let arns = futures_util::future::join_all((0..10).map(|_| submit(&agent, &images))).await;
    engine.release(100);
    for arn in &arns {
        let task = final_task(&agent, arn).await;
        for c in &task.containers {
            assert_eq!(c.username.as_deref(), Some("helped-user"));
            assert_eq!(c.registry_key.as_deref(), Some("helper count"));
        }
    }
    assert_eq!(helper_runs(&log), ["helped.example.com"]);

    // verify of another registry behind the same store runs the helper.
    let reports = agent
        .verify(VerifyTarget::Images(vec![
            "verified.example.com/app:1".to_owned(),
        ]))
        .await
        .expect("verified");
    assert_eq!(reports.len(), 1);
    let report = reports[0].to_json();
    assert_eq!(report["result"], "accepted", "{report}");
    // A helper's credentials are no ecs.config key: `key` is null, and
    // `source`/`from` say where they came from.
    assert_eq!(report["key"], serde_json::Value::Null, "{report}");
    assert_eq!(report["source"], "helper", "{report}");
    assert_eq!(report["from"], "helper count", "{report}");
    assert_eq!(report["username"], "helped-user");
    assert!(!report.to_string().contains("canary-helper-pw"));
    assert_eq!(
        helper_runs(&log),
        ["helped.example.com", "verified.example.com"]
    );
}

/// A STUB of ECR Public's `GetAuthorizationToken` (moto has no ECR Public):
/// it records each request's headers and answers the documented shape,
/// `{"authorizationData": {"authorizationToken", "expiresAt"}}`, or, when
/// `deny`, an `AccessDeniedException`. Returns its URL and what it saw.
async fn ecr_public_stub(deny: bool) -> (String, Arc<Mutex<Vec<hyper::HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let url = crate::stub::serve_json(move |headers, _body| {
        recorded.lock().expect("seen").push(headers.clone());
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 12 * 3600;
        // base64("AWS:pub-canary-token")
        let (status, body) = if deny {
            (
                400,
                json!({"__type": "AccessDeniedException", "message": "denied"}),
            )
        } else {
            (
                200,
                json!({"authorizationData": {
                    "authorizationToken": "QVdTOnB1Yi1jYW5hcnktdG9rZW4=",
                    "expiresAt": expires}}),
            )
        };
        (status, body.to_string())
    })
    .await;
    (url, seen)
}

/// An agent whose AWS calls go to `endpoint` with static keys, in
/// eu-west-1 (so that a call signed for us-east-1 proves ECR Public's
/// region was chosen on purpose).
async fn agent_with_aws(engine: &Arc<FakeEngine>, endpoint: &str) -> Agent {
    let aws = crate::stub::aws_at(endpoint).await;
    start_with_provider(engine, settings(&[]), Provider::with_aws(aws, true))
}

// ECR Public (issue 17): a pull of public.ecr.aws gets a token from
// ecr-public:GetAuthorizationToken, signed for service ecr-public in
// us-east-1 (the agent's region is eu-west-1), and pulls as the token's
// user; both host names share the one token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_public_pulls_with_a_token_from_us_east_1() {
    let (url, seen) = ecr_public_stub(false).await;
    let engine = FakeEngine::new();
    let agent = agent_with_aws(&engine, &url).await;
    let arn = submit(
        &agent,
        &[
            "public.ecr.aws/docker/library/busybox:1",
            "ecr-public.aws.com/x/y:1",
        ],
    )
    .await;
    engine.release(2);
    let task = final_task(&agent, &arn).await;
    assert_eq!(task.containers[0].username.as_deref(), Some("AWS"));
    assert_eq!(
        task.containers[0].registry_key.as_deref(),
        Some("ecr-public public.ecr.aws")
    );
    assert_eq!(
        task.containers[1].registry_key.as_deref(),
        Some("ecr-public ecr-public.aws.com")
    );
    let calls = engine.calls();
    assert!(
        calls.iter().all(|c| c.username.as_deref() == Some("AWS")),
        "{calls:?}"
    );
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1, "one token serves both hosts");
    let header = |name: &str| {
        seen[0]
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        header("authorization").contains("/us-east-1/ecr-public/aws4_request"),
        "{}",
        header("authorization")
    );
    assert!(header("authorization").starts_with("AWS4-HMAC-SHA256 Credential=AKIDSTUBEXAMPLE/"));
    assert_eq!(
        header("x-amz-target"),
        "SpencerFrontendService.GetAuthorizationToken"
    );
    assert!(!format!("{task:?}").contains("pub-canary-token"));
}

// Public images are public: when no ECR Public token can be had (here the
// stub denies it), the pull goes out anonymously instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_public_without_a_token_pulls_anonymously() {
    let (url, seen) = ecr_public_stub(true).await;
    let engine = FakeEngine::new();
    let agent = agent_with_aws(&engine, &url).await;
    let arn = submit(&agent, &["public.ecr.aws/docker/library/busybox:1"]).await;
    engine.release(1);
    let task = final_task(&agent, &arn).await;
    assert_eq!(task.containers[0].known_status, Status::Pulled);
    assert_eq!(task.containers[0].username, None);
    assert_eq!(task.containers[0].registry_key, None);
    assert_eq!(engine.calls()[0].username, None);
    assert!(
        !seen.lock().expect("seen").is_empty(),
        "the token was asked for"
    );
}

// A refused ECR Public token is remembered for the principal it was
// refused to, not for every principal: after the default chain is denied
// (and its pulls go out anonymously without asking again), a task whose
// execution role may have a token still gets one.
#[tokio::test]
async fn a_refused_ecr_public_token_is_remembered_per_principal() {
    const ROLE_KEY: &str = "ASIAROLESTUBEXAMPLE";
    let token_requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = Arc::clone(&token_requests);
    let url = crate::stub::serve_json(move |headers, _body| {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if headers.get("x-amz-target").is_none() {
            // sts:AssumeRole (the query protocol names no target).
            let expires = humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() + Duration::from_secs(3600),
            );
            let xml = format!(
                "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                 <AssumeRoleResult><AssumedRoleUser>\
                 <AssumedRoleId>AROASTUB:pullauth</AssumedRoleId>\
                 <Arn>arn:aws:sts::123456789012:assumed-role/puller/pullauth</Arn>\
                 </AssumedRoleUser><Credentials><AccessKeyId>{ROLE_KEY}</AccessKeyId>\
                 <SecretAccessKey>role-stub-secret</SecretAccessKey>\
                 <SessionToken>role-stub-session</SessionToken>\
                 <Expiration>{expires}</Expiration></Credentials></AssumeRoleResult>\
                 </AssumeRoleResponse>"
            );
            return (200, xml);
        }
        let as_role = auth.contains(&format!("Credential={ROLE_KEY}/"));
        recorded
            .lock()
            .expect("requests")
            .push(if as_role { "role" } else { "default" }.to_owned());
        if as_role {
            // base64("AWS:pub-role-token")
            let expires = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                + 12 * 3600;
            let body = json!({"authorizationData": {
                "authorizationToken": "QVdTOnB1Yi1yb2xlLXRva2Vu",
                "expiresAt": expires}});
            (200, body.to_string())
        } else {
            let body = json!({"__type": "AccessDeniedException", "message": "denied"});
            (400, body.to_string())
        }
    })
    .await;
    let provider = Provider::with_aws(crate::stub::aws_at(&url).await, true);
    let table = RegistryTable::default();
    let image = ImageRef::parse("public.ecr.aws/docker/library/busybox:1").expect("image");
    let role = pullauth_aws::RoleArn::parse("arn:aws:iam::123456789012:role/puller").expect("ARN");
    let as_role = TaskCredentials {
        secret: None,
        role: Some(&role),
    };
    let username = |provided: &Provided| {
        provided
            .entry
            .as_ref()
            .and_then(|e| e.credentials.username.clone())
    };

    let first = provider
        .credentials_for(&table, &image, TaskCredentials::default())
        .await
        .expect("anonymous, not an error");
    assert_eq!(username(&first), None);
    let again = provider
        .credentials_for(&table, &image, TaskCredentials::default())
        .await
        .expect("anonymous");
    assert_eq!(username(&again), None);
    assert_eq!(
        *token_requests.lock().expect("requests"),
        ["default"],
        "the default chain's refusal is remembered"
    );

    let with_role = provider
        .credentials_for(&table, &image, as_role)
        .await
        .expect("a token for the role");
    assert_eq!(username(&with_role).as_deref(), Some("AWS"));
    assert_eq!(
        *token_requests.lock().expect("requests"),
        ["default", "role"]
    );
}
