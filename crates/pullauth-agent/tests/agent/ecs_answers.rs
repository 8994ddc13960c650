//! ECS answering garbage: an endpoint that answers `ecs:ListServices`
//! properly and `ecs:DescribeServices` with HTTP 200 and a body that is not
//! JSON, or JSON of the wrong shape. Reading the cluster's plan (what
//! `pullauth prefetch` and `serve --follow-cluster` do first) must fail, or
//! report the service, with an error naming the call and the cluster,
//! never panic, and stay within its bounds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pullauth_agent::prefetch::{self, Filters};
use pullauth_aws::ErrorClass;
use pullauth_ecs::Host;

use crate::stub::{aws_at, aws_at_with, serve_json, stub_options};

const CLUSTER: &str = "prod";
const SERVICE_ARN: &str = "arn:aws:ecs:eu-west-1:123456789012:service/prod/web";

/// The bound of one plan read in these tests: the AWS limits below are
/// 2 s an attempt and 5 s a call, so this only fires on a hang.
const TEST_BOUND: Duration = Duration::from_secs(30);

/// Serves ECS: `ListServices` names one service, `DescribeServices` gets
/// `body` with HTTP 200; any other call gets a 400 naming it. Returns the
/// URL and the operations called, in order.
async fn ecs_stub(body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let url = serve_json(move |headers, _body| {
        let target = target(headers);
        seen.lock().expect("calls").push(target.clone());
        match target.as_str() {
            "ListServices" => (200, format!(r#"{{"serviceArns":["{SERVICE_ARN}"]}}"#)),
            "DescribeServices" => (200, body.to_owned()),
            other => (
                400,
                format!(
                    r#"{{"__type":"InvalidParameterException","message":"the stub does not serve {other}"}}"#
                ),
            ),
        }
    })
    .await;
    (url, calls)
}

/// Bodies that cannot be read as a `DescribeServices` answer: the read
/// fails with an error naming the call and the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_services_answering_unreadable_bodies_fails_naming_the_call_and_cluster() {
    let cases: [(&str, &'static str); 5] = [
        ("html", "<html><body>502 Bad Gateway</body></html>"),
        ("truncated", r#"{"services":[{"serviceName":"web","#),
        ("services_not_a_list", r#"{"services":"web"}"#),
        ("name_not_a_string", r#"{"services":[{"serviceName":7}]}"#),
        ("not_an_object", r#"["web"]"#),
    ];
    for (name, body) in cases {
        let (url, calls) = ecs_stub(body).await;
        let aws = aws_at(&url).await;
        let result = tokio::time::timeout(
            TEST_BOUND,
            prefetch::plan(&aws, CLUSTER, &Filters::default(), &Host::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: not within {TEST_BOUND:?}"));
        let error = match result {
            Ok(plan) => panic!("{name}: read as a plan: {plan:?}"),
            Err(error) => error,
        };
        let message = error.to_string();
        assert!(
            message.contains("cluster prod")
                && message.contains("not an answer to ecs:DescribeServices"),
            "{name}: {message}"
        );
        assert_eq!(error.class(), ErrorClass::BadResponse, "{name}: {message}");
        assert_eq!(
            *calls.lock().expect("calls"),
            ["ListServices", "DescribeServices"],
            "{name}: retried or went on"
        );
    }
}

/// JSON that parses but says nothing about the service asked about: the
/// service is reported as a problem naming the call and the cluster, not
/// silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_services_answering_about_nothing_reports_the_service() {
    for (name, body) in [
        ("empty_object", "{}"),
        ("another_shape", r#"{"clusters":[{"clusterName":"prod"}]}"#),
        ("empty_lists", r#"{"services":[],"failures":[]}"#),
    ] {
        let (url, _) = ecs_stub(body).await;
        let aws = aws_at(&url).await;
        let plan = tokio::time::timeout(
            TEST_BOUND,
            prefetch::plan(&aws, CLUSTER, &Filters::default(), &Host::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: not within {TEST_BOUND:?}"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(plan.wanted.is_empty(), "{name}: {plan:?}");
        assert_eq!(plan.problems.len(), 1, "{name}: {plan:?}");
        let problem = plan.problems[0].to_string();
        assert!(
            problem.contains(SERVICE_ARN)
                && problem.contains("ecs:DescribeServices in cluster prod")
                && problem.contains("neither"),
            "{name}: {problem}"
        );
    }
}

/// `DescribeTaskDefinition`'s answer for `td` (an ARN): family `web`,
/// revision 1, one container `app` on `registry.example.com/web:1`.
fn web_task_definition(td: &str) -> String {
    serde_json::json!({"taskDefinition": {"taskDefinitionArn": td, "family": "web",
        "revision": 1, "containerDefinitions": [{"name": "app",
        "image": "registry.example.com/web:1"}]}})
    .to_string()
}

/// The target of an AWS JSON request (`DescribeServices`, ...).
fn target(headers: &hyper::HeaderMap) -> String {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// moto drops a service's own `placementConstraints` and
/// `capacityProviderStrategy`, so a stub ECS serves them: a service on
/// Fargate capacity providers only is skipped (`capacity-provider`), one
/// whose `memberOf` names another zone is skipped (`member-of`, decided
/// from the instance's IMDS facts), one with a mixed strategy and one in
/// this zone are pulled. The task definitions are the same shape for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_constraints_and_capacity_providers_decide_placement() {
    let arn = |name: &str| format!("arn:aws:ecs:eu-west-1:123456789012:task-definition/{name}:1");
    let services = serde_json::json!({"services": [
        {"serviceName": "spot", "status": "ACTIVE", "taskDefinition": arn("spot"),
         "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 3},
                                      {"capacityProvider": "FARGATE", "weight": 1}]},
        {"serviceName": "mixed", "status": "ACTIVE", "taskDefinition": arn("mixed"),
         "capacityProviderStrategy": [{"capacityProvider": "FARGATE"},
                                      {"capacityProvider": "my-asg"}]},
        {"serviceName": "elsewhere", "status": "ACTIVE", "taskDefinition": arn("elsewhere"),
         "placementConstraints": [{"type": "memberOf",
                                   "expression": "attribute:ecs.availability-zone in [eu-west-1b, eu-west-1c]"}]},
        {"serviceName": "here", "status": "ACTIVE", "taskDefinition": arn("here"),
         "placementConstraints": [{"type": "memberOf",
                                   "expression": "attribute:ecs.availability-zone == eu-west-1a"}]}
    ], "failures": []})
    .to_string();
    let arns: Vec<String> = ["spot", "mixed", "elsewhere", "here"]
        .map(|s| format!("arn:aws:ecs:eu-west-1:123456789012:service/prod/{s}"))
        .to_vec();
    let list = serde_json::json!({ "serviceArns": arns }).to_string();
    let url = serve_json(move |headers, body| match target(headers).as_str() {
        "ListServices" => (200, list.clone()),
        "DescribeServices" => (200, services.clone()),
        "DescribeTaskDefinition" => {
            let asked: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let reference = asked["taskDefinition"].as_str().unwrap_or_default();
            let family = reference
                .rsplit('/')
                .next()
                .and_then(|r| r.split(':').next())
                .unwrap_or_default();
            (
                200,
                serde_json::json!({"taskDefinition": {
                    "taskDefinitionArn": reference, "family": family, "revision": 1,
                    "containerDefinitions": [{"name": "app", "image": format!("registry.example.com/{family}:1")}]
                }})
                .to_string(),
            )
        }
        other => (
            400,
            format!(r#"{{"__type":"InvalidParameterException","message":"not served: {other}"}}"#),
        ),
    })
    .await;
    let aws = aws_at(&url).await;
    let mut host = Host::from_engine("x86_64", "linux");
    host.set("ecs.availability-zone", "eu-west-1a");
    let plan = tokio::time::timeout(
        TEST_BOUND,
        prefetch::plan(&aws, CLUSTER, &Filters::default(), &host),
    )
    .await
    .expect("within the bound")
    .expect("a plan");
    assert!(plan.problems.is_empty(), "{plan:?}");
    let wanted: Vec<&str> = plan
        .wanted
        .iter()
        .map(|w| w.image.original.as_str())
        .collect();
    assert_eq!(
        wanted,
        [
            "registry.example.com/here:1",
            "registry.example.com/mixed:1"
        ],
        "{plan:?}"
    );
    let skipped: Vec<(&str, &str)> = plan
        .skipped
        .iter()
        .map(|s| (s.services[0].as_str(), s.reason.code()))
        .collect();
    assert_eq!(
        skipped,
        [("elsewhere", "member-of"), ("spot", "capacity-provider")],
        "{plan:?}"
    );
}

/// Service revisions that cannot be read (here: access denied) degrade to
/// tags: the plan still wants the image, by tag, with one warning naming
/// the call; the next plan neither warns again nor calls again (the calls
/// rest), so a fleet without the permission does not pay a call per
/// service and poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_service_revisions_degrade_to_tags_with_one_warning() {
    let td = "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:1";
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&calls);
    let url = serve_json(move |headers, _body| {
        let op = target(headers);
        seen.lock().expect("calls").push(op.clone());
        match op.as_str() {
            "ListServices" => (
                200,
                format!(r#"{{"serviceArns":["{SERVICE_ARN}","{SERVICE_ARN}2"]}}"#),
            ),
            "DescribeServices" => (
                200,
                serde_json::json!({"services": [
                    {"serviceName": "web", "serviceArn": SERVICE_ARN, "status": "ACTIVE",
                     "taskDefinition": td},
                    {"serviceName": "web2", "serviceArn": format!("{SERVICE_ARN}2"),
                     "status": "ACTIVE", "taskDefinition": td}]})
                .to_string(),
            ),
            "DescribeTaskDefinition" => (200, web_task_definition(td)),
            "ListServiceDeployments" => (
                400,
                r#"{"__type":"AccessDeniedException","message":"not authorized to perform ecs:ListServiceDeployments"}"#
                    .to_owned(),
            ),
            other => (400, format!(r#"{{"__type":"InvalidParameterException","message":"{other}"}}"#)),
        }
    })
    .await;
    let aws = aws_at(&url).await;
    let host = Host::from_engine("x86_64", "linux");
    let first = prefetch::plan(&aws, CLUSTER, &Filters::default(), &host)
        .await
        .expect("a plan");
    assert_eq!(first.wanted.len(), 1, "{first:?}");
    assert_eq!(first.wanted[0].digest, None);
    assert_eq!(
        first.wanted[0].pull_image().pull_reference(),
        "registry.example.com/web:1"
    );
    assert_eq!(first.warnings.len(), 1, "{first:?}");
    assert!(
        first.warnings[0].contains("ecs:ListServiceDeployments")
            && first.warnings[0].contains("by tag"),
        "{}",
        first.warnings[0]
    );
    let asked = |calls: &Arc<Mutex<Vec<String>>>| {
        calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| *c == "ListServiceDeployments")
            .count()
    };
    assert_eq!(
        asked(&calls),
        1,
        "one attempt, for the first of two services"
    );
    let second = prefetch::plan(&aws, CLUSTER, &Filters::default(), &host)
        .await
        .expect("a plan");
    assert!(second.warnings.is_empty(), "{second:?}");
    assert_eq!(second.wanted.len(), 1);
    assert_eq!(asked(&calls), 1, "the revision calls rest after a denial");
}

/// A quiet cluster costs no revision call per poll: while a service's
/// deployments are the same, its pinned digests are answered from the
/// cache; a new deployment (another ID) is read once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_are_read_once_per_deployment_not_per_poll() {
    let td = "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:1";
    let digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let deployment = Arc::new(Mutex::new("ecs-svc/1".to_owned()));
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let (seen, current) = (Arc::clone(&calls), Arc::clone(&deployment));
    let url = serve_json(move |headers, _body| {
        let op = target(headers);
        seen.lock().expect("calls").push(op.clone());
        let id = current.lock().expect("deployment").clone();
        match op.as_str() {
            "ListServices" => (200, format!(r#"{{"serviceArns":["{SERVICE_ARN}"]}}"#)),
            "DescribeServices" => (
                200,
                serde_json::json!({"services": [{"serviceName": "web", "status": "ACTIVE",
                    "taskDefinition": td,
                    "deployments": [{"id": id, "status": "PRIMARY", "taskDefinition": td}]}]})
                .to_string(),
            ),
            "DescribeTaskDefinition" => (200, web_task_definition(td)),
            "ListServiceDeployments" => (
                200,
                serde_json::json!({"serviceDeployments": [{"status": "IN_PROGRESS",
                    "targetServiceRevisionArn": format!("rev-{id}")}]})
                .to_string(),
            ),
            "DescribeServiceRevisions" => (
                200,
                serde_json::json!({"serviceRevisions": [{"serviceRevisionArn": format!("rev-{id}"),
                    "taskDefinition": td, "containerImages": [{"containerName": "app",
                    "image": "registry.example.com/web:1", "imageDigest": digest}]}]})
                .to_string(),
            ),
            other => (
                400,
                format!(r#"{{"__type":"InvalidParameterException","message":"{other}"}}"#),
            ),
        }
    })
    .await;
    let aws = aws_at(&url).await;
    let host = Host::from_engine("x86_64", "linux");
    let count = |op: &str| {
        calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| *c == op)
            .count()
    };
    for _ in 0..3 {
        let plan = prefetch::plan(&aws, CLUSTER, &Filters::default(), &host)
            .await
            .expect("a plan");
        assert_eq!(plan.wanted[0].digest.as_deref(), Some(digest), "{plan:?}");
    }
    assert_eq!(count("ListServiceDeployments"), 1, "three polls, one read");
    assert_eq!(count("DescribeServiceRevisions"), 1);
    *deployment.lock().expect("deployment") = "ecs-svc/2".to_owned();
    let plan = prefetch::plan(&aws, CLUSTER, &Filters::default(), &host)
        .await
        .expect("a plan");
    assert_eq!(plan.wanted[0].digest.as_deref(), Some(digest));
    assert_eq!(
        count("ListServiceDeployments"),
        2,
        "a new deployment is read"
    );
    assert_eq!(count("DescribeServiceRevisions"), 2);
}

/// A stub whose every call is throttled (HTTP 400 `ThrottlingException`,
/// as ECS answers "Rate exceeded"); counts the requests.
async fn throttling_stub() -> (String, Arc<Mutex<usize>>) {
    let requests = Arc::new(Mutex::new(0));
    let seen = Arc::clone(&requests);
    let url = serve_json(move |_headers, _body| {
        *seen.lock().expect("requests") += 1;
        (
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned(),
        )
    })
    .await;
    (url, requests)
}

/// An AWS client at `endpoint` with the SDK's standard three attempts, the
/// ECS calls paced (the follower) or not (`pullauth prefetch`).
async fn aws_with_retries(endpoint: &str, pace_ecs: bool) -> pullauth_aws::Aws {
    let options = pullauth_aws::AwsOptions {
        operation_timeout: Duration::from_secs(20),
        max_attempts: 3,
        pace_ecs,
        ..stub_options()
    };
    aws_at_with(endpoint, options).await
}

/// Issue 24: the follower's ECS client makes one attempt per call (its
/// poll schedule is the retry, and a throttled call ends the poll); the
/// one-shot prefetch keeps the SDK's standard retries (3 attempts, with
/// back-off). Both end with the throttle, classified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_makes_one_attempt_and_the_one_shot_prefetch_retries() {
    for (pace_ecs, attempts) in [(true, 1), (false, 3)] {
        let (url, requests) = throttling_stub().await;
        let aws = aws_with_retries(&url, pace_ecs).await;
        let error = tokio::time::timeout(TEST_BOUND, aws.ecs_services(CLUSTER))
            .await
            .expect("within the bound")
            .expect_err("throttled");
        assert_eq!(error.class(), ErrorClass::Throttled, "{error}");
        assert_eq!(
            *requests.lock().expect("requests"),
            attempts,
            "pace_ecs {pace_ecs}"
        );
    }
}

/// Issue 24: what one process described is kept in the data directory's
/// store, so a second process on it (a restart, or `serve` after the
/// boot's `pullauth prefetch`) describes nothing again: the same plan for
/// the list and describe calls of the services only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_data_dir_describes_nothing_again() {
    let td = "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:1";
    let digest = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&calls);
    let url = serve_json(move |headers, _body| {
        let op = target(headers);
        seen.lock().expect("calls").push(op.clone());
        match op.as_str() {
            "ListServices" => (200, format!(r#"{{"serviceArns":["{SERVICE_ARN}"]}}"#)),
            "DescribeServices" => (
                200,
                serde_json::json!({"services": [{"serviceName": "web", "status": "ACTIVE",
                    "taskDefinition": td,
                    "deployments": [{"id": "ecs-svc/1", "status": "PRIMARY", "taskDefinition": td}]}]})
                .to_string(),
            ),
            "DescribeTaskDefinition" => (200, web_task_definition(td)),
            "ListServiceDeployments" => (
                200,
                serde_json::json!({"serviceDeployments": [{"status": "SUCCESSFUL",
                    "targetServiceRevisionArn": "rev-1"}]})
                .to_string(),
            ),
            "DescribeServiceRevisions" => (
                200,
                serde_json::json!({"serviceRevisions": [{"serviceRevisionArn": "rev-1",
                    "taskDefinition": td, "containerImages": [{"containerName": "app",
                    "image": "registry.example.com/web:1", "imageDigest": digest}]}]})
                .to_string(),
            ),
            other => (
                400,
                format!(r#"{{"__type":"InvalidParameterException","message":"{other}"}}"#),
            ),
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("data dir");
    let host = Host::from_engine("x86_64", "linux");
    let process = |url: String| {
        let dir = dir.path().to_owned();
        async move {
            let records = pullauth_agent::ecs_records::StoreRecords::open(&dir).expect("store");
            aws_at_with(
                &url,
                pullauth_aws::AwsOptions {
                    ecs_records: Some(Arc::new(records)),
                    ..stub_options()
                },
            )
            .await
        }
    };
    let first = process(url.clone()).await;
    let plan = prefetch::plan(&first, CLUSTER, &Filters::default(), &host)
        .await
        .expect("a plan");
    assert_eq!(plan.wanted[0].digest.as_deref(), Some(digest));
    drop(first);
    let described = calls.lock().expect("calls").len();
    assert_eq!(described, 5, "{:?}", calls.lock().expect("calls"));

    let second = process(url.clone()).await;
    let again = prefetch::plan(&second, CLUSTER, &Filters::default(), &host)
        .await
        .expect("a plan");
    assert_eq!(again.wanted, plan.wanted);
    let calls = calls.lock().expect("calls");
    assert_eq!(
        calls[described..],
        ["ListServices", "DescribeServices"],
        "{calls:?}"
    );
}

/// Issue 24: a throttled `DescribeTaskDefinition` is a throttled read (the
/// poll backs off), not a problem beside a plan that looks complete; what
/// was described stays cached, so the next read resumes with the rest
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_describe_fails_the_read_and_the_next_resumes() {
    let arn = |name: &str| format!("arn:aws:ecs:eu-west-1:123456789012:task-definition/{name}:1");
    let names = ["a", "b", "c"];
    let services = serde_json::json!({"services": names.map(|n| serde_json::json!(
        {"serviceName": n, "status": "ACTIVE", "taskDefinition": arn(n)})), "failures": []})
    .to_string();
    let list = serde_json::json!({"serviceArns": names
        .map(|n| format!("arn:aws:ecs:eu-west-1:123456789012:service/prod/{n}"))})
    .to_string();
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&calls);
    // "b" is throttled the first time it is asked for.
    let throttled_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = serve_json(move |headers, body| match target(headers).as_str() {
        "ListServices" => (200, list.clone()),
        "DescribeServices" => (200, services.clone()),
        "DescribeTaskDefinition" => {
            let asked: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let reference = asked["taskDefinition"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            seen.lock().expect("calls").push(reference.clone());
            if reference.ends_with("/b:1")
                && !throttled_once.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                return (
                    400,
                    r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned(),
                );
            }
            let family = reference
                .rsplit('/')
                .next()
                .and_then(|r| r.split(':').next())
                .unwrap_or_default()
                .to_owned();
            (
                200,
                serde_json::json!({"taskDefinition": {"taskDefinitionArn": reference,
                    "family": family, "revision": 1, "containerDefinitions":
                    [{"name": "app", "image": format!("registry.example.com/{family}:1")}]}})
                .to_string(),
            )
        }
        other => (
            400,
            format!(r#"{{"__type":"InvalidParameterException","message":"not served: {other}"}}"#),
        ),
    })
    .await;
    let aws = aws_at(&url).await;
    let host = Host::from_engine("x86_64", "linux");
    let first = tokio::time::timeout(
        TEST_BOUND,
        prefetch::plan(&aws, CLUSTER, &Filters::default(), &host),
    )
    .await
    .expect("within the bound");
    let error = first.expect_err("a throttled read is no plan");
    assert_eq!(error.class(), ErrorClass::Throttled, "{error}");
    assert_eq!(calls.lock().expect("calls").len(), 3);

    let plan = tokio::time::timeout(
        TEST_BOUND,
        prefetch::plan(&aws, CLUSTER, &Filters::default(), &host),
    )
    .await
    .expect("within the bound")
    .expect("the resumed read");
    assert!(plan.problems.is_empty(), "{plan:?}");
    assert_eq!(plan.wanted.len(), 3, "{plan:?}");
    // Resumed: only "b" was described again.
    let described = calls.lock().expect("calls").clone();
    assert_eq!(described.len(), 4, "{described:?}");
    assert!(described[3].ends_with("/b:1"), "{described:?}");
}

/// Issue 24: a throttled read of a service's revisions (the digests ECS
/// pinned) is a throttled read, as a throttled describe is: the poll backs
/// off instead of planning the images by tag, and the next read resumes
/// (the task definition stays cached) and pins the digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_revision_read_fails_the_read_and_the_next_pins_the_digest() {
    let td = "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:1";
    let digest = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&calls);
    let throttled_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = serve_json(move |headers, _body| {
        let op = target(headers);
        seen.lock().expect("calls").push(op.clone());
        match op.as_str() {
            "ListServices" => (200, format!(r#"{{"serviceArns":["{SERVICE_ARN}"]}}"#)),
            "DescribeServices" => (
                200,
                serde_json::json!({"services": [{"serviceName": "web", "status": "ACTIVE",
                    "taskDefinition": td,
                    "deployments": [{"id": "ecs-svc/1", "status": "PRIMARY", "taskDefinition": td}]}]})
                .to_string(),
            ),
            "DescribeTaskDefinition" => (200, web_task_definition(td)),
            "ListServiceDeployments"
                if !throttled_once.swap(true, std::sync::atomic::Ordering::SeqCst) =>
            {
                (
                    400,
                    r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned(),
                )
            }
            "ListServiceDeployments" => (
                200,
                serde_json::json!({"serviceDeployments": [{"status": "SUCCESSFUL",
                    "targetServiceRevisionArn": "rev-1"}]})
                .to_string(),
            ),
            "DescribeServiceRevisions" => (
                200,
                serde_json::json!({"serviceRevisions": [{"serviceRevisionArn": "rev-1",
                    "taskDefinition": td, "containerImages": [{"containerName": "app",
                    "image": "registry.example.com/web:1", "imageDigest": digest}]}]})
                .to_string(),
            ),
            other => (
                400,
                format!(r#"{{"__type":"InvalidParameterException","message":"{other}"}}"#),
            ),
        }
    })
    .await;
    let aws = aws_at(&url).await;
    let host = Host::from_engine("x86_64", "linux");
    let first = tokio::time::timeout(
        TEST_BOUND,
        prefetch::plan(&aws, CLUSTER, &Filters::default(), &host),
    )
    .await
    .expect("within the bound");
    let error = first.expect_err("a throttled read is no plan");
    assert_eq!(error.class(), ErrorClass::Throttled, "{error}");
    assert!(
        error.to_string().contains("ecs:ListServiceDeployments"),
        "{error}"
    );

    let plan = tokio::time::timeout(
        TEST_BOUND,
        prefetch::plan(&aws, CLUSTER, &Filters::default(), &host),
    )
    .await
    .expect("within the bound")
    .expect("the resumed read");
    assert!(plan.warnings.is_empty(), "{plan:?}");
    assert_eq!(plan.wanted[0].digest.as_deref(), Some(digest), "{plan:?}");
    let calls = calls.lock().expect("calls");
    let count = |op: &str| calls.iter().filter(|c| *c == op).count();
    assert_eq!(count("DescribeTaskDefinition"), 1, "{calls:?}");
    assert_eq!(count("ListServiceDeployments"), 2, "{calls:?}");
}
