//! ECR end to end through a real engine: a `docker-registry` that accepts
//! only user `AWS` with the password moto's `GetAuthorizationToken` issues
//! (`<account>-auth-token`) listens on port 80 of a loopback address of its
//! own (127.x.y.z, so port 80 of 127.0.0.1 may be taken), and a test-owned
//! dockerd, in its own mount namespace, resolves the ECR host name
//! `123456789012.dkr.ecr.us-east-1.amazonaws.com` to that address and
//! treats it as an insecure registry. pullauth has no ecs.config entry for the
//! host and no AWS keys in its environment: its credentials come from an
//! instance metadata service, its token from moto, and the registry's log
//! shows who pulled.
//!
//! Also here: a task's `executionRoleArn` through the agent, with moto
//! enforcing IAM so that only the assumed role may get a token.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use pullauth_integration::agent::{
    AgentSpec, assert_no_secret, container, metric_value, random_token, scratch_dir,
};
use pullauth_integration::{
    Harness, Imds, ImdsCredentials, MOTO_ACCESS_KEY, Moto, PrivateEngine, Registry,
    pullauth_command,
};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// The password inside every token moto issues for [`ACCOUNT`].
const MOTO_ECR_PASSWORD: &str = "123456789012-auth-token";
const SOURCE: &str = "ecr account 123456789012 region us-east-1";

/// The registry posing as the ECR host, the engine that resolves the host
/// to it, and moto.
struct Ecr {
    registry: Registry,
    engine: PrivateEngine,
    moto: Moto,
}

fn ecr() -> &'static Ecr {
    static ECR: OnceLock<Ecr> = OnceLock::new();
    ECR.get_or_init(|| {
        // Port 80: an insecure registry named without a port is tried on
        // https://HOST (443, refused here) and then http://HOST (80). On a
        // loopback address of its own, so port 80 of 127.0.0.1 may be taken.
        let registry = Registry::start_on_own_loopback("ecr", &[("AWS", MOTO_ECR_PASSWORD)]);
        let engine = PrivateEngine::start_with_hosts(
            &[(ECR_HOST, &registry.ip().to_string())],
            &["--insecure-registry", ECR_HOST],
        );
        Ecr {
            registry,
            engine,
            moto: Moto::start(),
        }
    })
}

/// Pushes a fresh repository to the ECR registry (through its loopback
/// address) and returns the same image named by the ECR host.
fn push(ecr: &Ecr, what: &str) -> String {
    let repo = format!("team/{what}{}", random_token(8).to_ascii_lowercase());
    Harness::get().push_fixture(&ecr.registry, &repo, "1", ("AWS", MOTO_ECR_PASSWORD));
    format!("{ECR_HOST}/{repo}:1")
}

/// Instance credentials any non-enforcing moto accepts.
fn imds_for_moto() -> Imds {
    Imds::start(ImdsCredentials {
        role: "pullauth-instance".into(),
        access_key_id: MOTO_ACCESS_KEY.0.into(),
        secret_access_key: MOTO_ACCESS_KEY.1.into(),
        token: format!("imds-session-{}", random_token(16)),
    })
}

/// pullauth's AWS environment: moto's endpoint and the IMDS, no keys, and a
/// HOME without `~/.aws`.
fn aws_env(moto: &Moto, imds: &Imds, home: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("HOME", home.display().to_string()),
    ]
}

fn assert_clean(what: &str, haystack: &[u8], secrets: &[&str]) {
    for secret in secrets {
        assert_no_secret(what, haystack, secret);
    }
}

fn is_local(engine: &PrivateEngine, image: &str) -> bool {
    engine
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .expect("docker image inspect runs")
        .status
        .success()
}

/// Tests in this file share one registry on port 80; their registry-log
/// assertions must not see each other's pulls.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// Regression (issue 17, finding 1): `pullauth verify` of an ECR image sent
// no credentials (it never fetched ECR tokens) while `pull` sent the
// token. Now verify asks the pull's provider: the registry sees user AWS,
// the report names the ECR source, and nothing is pulled.
#[test]
fn verify_of_an_ecr_image_sends_the_ecr_token() {
    let ecr = ecr();
    let _serial = serial();
    let imds = imds_for_moto();
    let image = push(ecr, "verify");
    let dir = scratch_dir("ecr-verify");
    let env_file = dir.path().join("ecs.config");
    std::fs::write(&env_file, "").expect("env file");
    let env = aws_env(&ecr.moto, &imds, dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mark = ecr.registry.log_mark();
    let out = pullauth_command(
        "verify",
        ecr.engine.docker_host(),
        &env_file,
        &env,
        &["--json", &image],
    )
    .output()
    .expect("pullauth verify runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(line["result"], "accepted", "{line}");
    assert!(line["key"].is_null(), "{line}");
    assert_eq!(line["source"], "ecr", "{line}");
    assert_eq!(line["from"], SOURCE, "{line}");
    assert_eq!(line["username"], "AWS", "{line}");
    let users = ecr.registry.users_since(mark);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "AWS"),
        "the registry saw {users:?}"
    );
    assert!(!is_local(&ecr.engine, &image), "verify pulled {image}");
    assert_clean(
        "verify's output",
        &[out.stdout.as_slice(), out.stderr.as_slice()].concat(),
        &[MOTO_ECR_PASSWORD, MOTO_ACCESS_KEY.1],
    );
}

// Issue 16: a service whose task definition names an ECR image is
// prefetched with the ECR token ECS itself would use (no ecs.config key,
// instance credentials from IMDS): the registry sees user AWS, the report
// names the ECR source, and the image is in the engine afterwards.
#[test]
fn prefetch_of_a_service_on_an_ecr_image_pulls_it_with_the_ecr_token() {
    let ecr = ecr();
    let _serial = serial();
    let imds = imds_for_moto();
    let image = push(ecr, "prefetch");
    let token = random_token(6).to_ascii_lowercase();
    let (cluster, family) = (format!("ecr-{token}"), format!("ecrapp-{token}"));
    ecr.moto.boto3(
        &format!(
            "e = client('ecs')\n\
             e.create_cluster(clusterName='{cluster}')\n\
             e.register_task_definition(family='{family}', containerDefinitions=[\
             {{'name': 'app', 'image': '{image}', 'memory': 64}}])\n\
             e.create_service(cluster='{cluster}', serviceName='ecrsvc', \
             taskDefinition='{family}', desiredCount=0)\n"
        ),
        None,
    );
    let dir = scratch_dir("ecr-prefetch");
    let env_file = dir.path().join("ecs.config");
    std::fs::write(&env_file, "").expect("env file");
    let env = aws_env(&ecr.moto, &imds, dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mark = ecr.registry.log_mark();
    let out = pullauth_command(
        "prefetch",
        ecr.engine.docker_host(),
        &env_file,
        &env,
        &["--json", "--cluster", &cluster],
    )
    .output()
    .expect("pullauth prefetch runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(line["image"], image.as_str(), "{line}");
    assert_eq!(line["source"], "ecr", "{line}");
    assert_eq!(line["from"], SOURCE, "{line}");
    assert_eq!(line["key"], Value::Null, "{line}");
    assert_eq!(line["username"], "AWS", "{line}");
    assert_eq!(line["status"], "pulled", "{line}");
    let users = ecr.registry.users_since(mark);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "AWS"),
        "the registry saw {users:?}"
    );
    assert!(is_local(&ecr.engine, &image), "{image} was not prefetched");
    assert_clean(
        "prefetch's output",
        &[out.stdout.as_slice(), out.stderr.as_slice()].concat(),
        &[MOTO_ECR_PASSWORD, MOTO_ACCESS_KEY.1],
    );
}

#[test]
fn pull_of_an_ecr_image_gets_a_token_with_instance_credentials_and_pulls_as_aws() {
    let ecr = ecr();
    let _serial = serial();
    let imds = imds_for_moto();
    let image = push(ecr, "cli");
    let dir = scratch_dir("ecr-cli");
    let env_file = dir.path().join("ecs.config");
    std::fs::write(&env_file, "").expect("env file");
    let env = aws_env(&ecr.moto, &imds, dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // The control: with ECR off, the same pull is anonymous and refused.
    let mark = ecr.registry.log_mark();
    let mut off = env.clone();
    off.push(("PULLAUTH_ECR", "off"));
    let out = pullauth_command("pull", ecr.engine.docker_host(), &env_file, &off, &[&image])
        .output()
        .expect("pullauth pull runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        ecr.registry.users_since(mark).is_empty(),
        "an anonymous pull authenticated"
    );
    assert!(!is_local(&ecr.engine, &image));
    assert_eq!(imds.credential_requests(), 0, "PULLAUTH_ECR=off loaded AWS");

    let mark = ecr.registry.log_mark();
    let out = pullauth_command(
        "pull",
        ecr.engine.docker_host(),
        &env_file,
        &env,
        &["--json", &image],
    )
    .output()
    .expect("pullauth pull runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(line["source"], "ecr", "{line}");
    assert_eq!(line["from"], SOURCE, "{line}");
    assert_eq!(line["username"], "AWS", "{line}");
    let users = ecr.registry.users_since(mark);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "AWS"),
        "{users:?}"
    );
    assert!(is_local(&ecr.engine, &image), "{image} was not pulled");
    assert!(imds.credential_requests() >= 1, "IMDS was not asked");
    assert_clean(
        "pull's output",
        &[out.stdout.as_slice(), out.stderr.as_slice()].concat(),
        &[MOTO_ECR_PASSWORD, MOTO_ACCESS_KEY.1],
    );
}

#[test]
fn task_on_an_ecr_image_pulls_as_aws_and_keeps_no_token() {
    let ecr = ecr();
    let _serial = serial();
    let imds = imds_for_moto();
    let image = push(ecr, "task");
    let data = scratch_dir("ecr-task-data");
    let home = scratch_dir("ecr-task-home");
    let mut spec = AgentSpec::new()
        .data_dir(data.path())
        .env("DOCKER_HOST", ecr.engine.docker_host())
        .env("ECS_LOGLEVEL", "debug");
    for (k, v) in aws_env(&ecr.moto, &imds, home.path()) {
        spec = spec.env(k, &v);
    }
    let agent = spec.start();

    let mark = ecr.registry.log_mark();
    let task = agent.submit(&json!({
        "family": "ecr",
        "containerDefinitions": [
            {"name": "app", "image": image, "essential": true},
            {"name": "sidecar", "image": image, "essential": false},
        ]
    }));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    for name in ["app", "sidecar"] {
        let c = container(&task, name);
        assert_eq!(c["KnownStatus"], "PULLED", "{task:#}");
        assert_eq!(c["RegistryKey"], SOURCE, "{task:#}");
        assert_eq!(c["Username"], "AWS", "{task:#}");
    }
    let users = ecr.registry.users_since(mark);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "AWS"),
        "{users:?}"
    );
    assert!(is_local(&ecr.engine, &image));

    let metrics = agent.metrics();
    assert!(
        metric_value(&metrics, "pullauth_aws_ecr_token_fetches_total").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let tasks = agent.get("/v1/tasks").text();
    let registries = agent.get("/v1/registries").text();
    let secrets = [MOTO_ECR_PASSWORD, MOTO_ACCESS_KEY.1];
    assert_clean("/v1/tasks", tasks.as_bytes(), &secrets);
    assert_clean("/v1/registries", registries.as_bytes(), &secrets);
    assert_clean("/metrics", metrics.as_bytes(), &secrets);
    let state = std::fs::read(spec.state_file().expect("data dir")).expect("state file");
    assert_clean("the state file", &state, &secrets);
    assert_clean("the debug log", &spec.log_bytes(), &secrets);
}

/// The calls of the IAM setup script below, all allowed before moto starts
/// enforcing IAM (`INITIAL_NO_AUTH_ACTION_COUNT`).
const SETUP_CALLS: usize = 5;

#[test]
fn task_execution_role_gets_the_token_and_a_task_without_uses_the_instance_role() {
    let ecr = ecr();
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", &SETUP_CALLS.to_string())]);
    // The instance role may only assume roles; only the task's execution
    // role may get ECR tokens. So a pull that succeeds used the execution
    // role's credentials. The IMDS hands out the instance role's assumed
    // credentials, as EC2 does (moto matches a trust policy's principal
    // literally, hence the fixed session name).
    let creds = moto.boto3(
        &format!(
            "iam = client('iam')\n\
             iam.create_role(RoleName='instance', AssumeRolePolicyDocument=json.dumps(\
               {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Principal': {{'Service': 'ec2.amazonaws.com'}}, 'Action': 'sts:AssumeRole'}}]}}))\n\
             iam.put_role_policy(RoleName='instance', PolicyName='assume', PolicyDocument=json.dumps(\
               {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': 'sts:AssumeRole', 'Resource': '*'}}]}}))\n\
             iam.create_role(RoleName='task-exec', AssumeRolePolicyDocument=json.dumps(\
               {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Principal': {{'AWS': 'arn:aws:sts::{ACCOUNT}:assumed-role/instance/i-0pullauth'}}, 'Action': 'sts:AssumeRole'}}]}}))\n\
             iam.put_role_policy(RoleName='task-exec', PolicyName='pull', PolicyDocument=json.dumps(\
               {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': 'ecr:GetAuthorizationToken', 'Resource': '*'}}]}}))\n\
             c = client('sts').assume_role(RoleArn='arn:aws:iam::{ACCOUNT}:role/instance', \
               RoleSessionName='i-0pullauth')['Credentials']\n\
             print(c['AccessKeyId'], c['SecretAccessKey'], c['SessionToken'])\n"
        ),
        None,
    );
    let mut words = creds.split_whitespace();
    let mut word = |what: &str| {
        words
            .next()
            .unwrap_or_else(|| panic!("no {what}: {creds}"))
            .to_string()
    };
    let (key_id, secret_key, token) = (word("key id"), word("secret key"), word("session token"));
    let imds = Imds::start(ImdsCredentials {
        role: "instance".into(),
        access_key_id: key_id,
        secret_access_key: secret_key.clone(),
        token: token.clone(),
    });
    let _serial = serial();
    let image = push(ecr, "role");
    let data = scratch_dir("ecr-role-data");
    let home = scratch_dir("ecr-role-home");
    let mut spec = AgentSpec::new()
        .data_dir(data.path())
        .env("DOCKER_HOST", ecr.engine.docker_host());
    for (k, v) in aws_env(&moto, &imds, home.path()) {
        spec = spec.env(k, &v);
    }
    let agent = spec.start();
    let role = format!("arn:aws:iam::{ACCOUNT}:role/task-exec");

    let mark = ecr.registry.log_mark();
    let with_role = agent.submit(&json!({
        "family": "with-role",
        "executionRoleArn": role,
        "containerDefinitions": [{"name": "app", "image": image, "essential": true}]
    }));
    let with_role = agent.wait_final(with_role["Arn"].as_str().expect("Arn"));
    let app = container(&with_role, "app");
    assert_eq!(app["KnownStatus"], "PULLED", "{with_role:#}");
    assert_eq!(app["RegistryKey"], SOURCE, "{with_role:#}");
    let users = ecr.registry.users_since(mark);
    assert!(users.iter().any(|u| u == "AWS"), "{users:?}");

    // A second image, so that the task without a role cannot find the
    // first one already pulled.
    let other = push(ecr, "norole");
    let mark = ecr.registry.log_mark();
    let without = agent.submit(&json!({
        "family": "without-role",
        "containerDefinitions": [{"name": "app", "image": other, "essential": true}]
    }));
    let without = agent.wait_final(without["Arn"].as_str().expect("Arn"));
    let app = container(&without, "app");
    assert_eq!(app["KnownStatus"], "STOPPED", "{without:#}");
    let message = app["PullError"].as_str().unwrap_or_default();
    assert!(
        message.contains(ECR_HOST) && message.contains("the default credential chain"),
        "{message}"
    );
    assert!(
        message.to_ascii_lowercase().contains("denied")
            || message.to_ascii_lowercase().contains("not authorized"),
        "{message}"
    );
    assert!(
        ecr.registry.users_since(mark).is_empty(),
        "the registry was reached without a token"
    );
    assert!(!is_local(&ecr.engine, &other));

    let metrics = agent.metrics();
    assert!(
        metric_value(
            &metrics,
            "pullauth_aws_failures_total{class=\"access_denied\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let secrets = [MOTO_ECR_PASSWORD, secret_key.as_str(), token.as_str()];
    assert_clean(
        "/v1/tasks",
        agent.get("/v1/tasks").text().as_bytes(),
        &secrets,
    );
    assert_clean("the log", &spec.log_bytes(), &secrets);
    let state = std::fs::read(spec.state_file().expect("data dir")).expect("state file");
    assert_clean("the state file", &state, &secrets);
    drop(agent);
    drop(moto);
}

/// moto whose ECR tokens expire 12 hours from issue, as real ones do
/// (moto's own expire in 2015, so pullauth never caches them): a
/// `sitecustomize` module on the server's `PYTHONPATH` wraps moto's
/// `GetAuthorizationToken` and moves only `expiresAt`.
fn moto_with_real_token_lifetime(dir: &Path) -> Moto {
    std::fs::write(
        dir.join("sitecustomize.py"),
        "import datetime\n\
         from moto.ecr.responses import ECRResponse\n\
         _issue = ECRResponse.get_authorization_token\n\
         def _twelve_hours(self):\n\
         \x20   result = _issue(self)\n\
         \x20   expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=12)\n\
         \x20   for data in result.result['authorizationData']:\n\
         \x20       data['expiresAt'] = expires\n\
         \x20   return result\n\
         ECRResponse.get_authorization_token = _twelve_hours\n",
    )
    .expect("write sitecustomize.py");
    Moto::start_with(&[("PYTHONPATH", &dir.display().to_string())])
}

#[test]
fn a_valid_token_is_fetched_once_reused_by_later_tasks_and_listed_without_its_value() {
    let ecr = ecr();
    let fixture = scratch_dir("ecr-cache-moto");
    let moto = moto_with_real_token_lifetime(fixture.path());
    let imds = imds_for_moto();
    let _serial = serial();
    let first = push(ecr, "cached");
    let second = push(ecr, "cachedtoo");
    let data = scratch_dir("ecr-cache-data");
    let mut spec = AgentSpec::new()
        .data_dir(data.path())
        .env("DOCKER_HOST", ecr.engine.docker_host());
    for (k, v) in aws_env(&moto, &imds, fixture.path()) {
        spec = spec.env(k, &v);
    }
    let agent = spec.start();

    let mark = ecr.registry.log_mark();
    for (family, image) in [("first", &first), ("second", &second), ("again", &first)] {
        let task = agent.submit(&json!({
            "family": family,
            "containerDefinitions": [{"name": "app", "image": image, "essential": true}]
        }));
        let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
        assert_eq!(container(&task, "app")["KnownStatus"], "PULLED", "{task:#}");
    }
    let users = ecr.registry.users_since(mark);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "AWS"),
        "{users:?}"
    );

    let metrics = agent.metrics();
    assert_eq!(
        metric_value(&metrics, "pullauth_aws_ecr_token_fetches_total"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metric_value(&metrics, "pullauth_aws_ecr_cache_hits_total").is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    let registries = agent.get_json("/v1/registries");
    let listed = registries["EcrRegistries"]
        .as_array()
        .unwrap_or_else(|| panic!("no EcrRegistries: {registries:#}"));
    assert_eq!(listed.len(), 1, "{registries:#}");
    assert_eq!(listed[0]["Registry"], ECR_HOST, "{registries:#}");
    assert_eq!(listed[0]["Source"], SOURCE, "{registries:#}");
    let expires = listed[0]["TokenExpiresAt"].as_str().unwrap_or_default();
    let expires = humantime::parse_rfc3339(expires)
        .unwrap_or_else(|e| panic!("TokenExpiresAt {expires:?}: {e}"));
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > std::time::Duration::from_secs(11 * 3600),
        "the token expires in {left:?}: {registries:#}"
    );
    assert_clean(
        "/v1/registries",
        registries.to_string().as_bytes(),
        &[MOTO_ECR_PASSWORD, MOTO_ACCESS_KEY.1],
    );
}
