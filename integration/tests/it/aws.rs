//! pullauth-aws against moto: ECR tokens (static keys and IMDSv2), Secrets
//! Manager, S3 (env files, conditional reads and writes), AssumeRole with
//! IAM enforced, and no secret in the SDK's debug log.
//!
//! Every call runs in a child process (this test binary re-executed on the
//! ignored test `probe_child`) with an environment built from nothing, so
//! `Aws::from_env` sees exactly the variables a test sets, as the agent
//! will (`std::env::set_var` would race with parallel tests). The child
//! writes its answer as JSON to a file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pullauth_aws::{Aws, AwsOptions, EcrRegistry, PutCondition, RoleArn, S3Fetch, S3Location};
use pullauth_integration::agent::{random_token, scratch_dir, secret_needles, wait_for};
use pullauth_integration::{
    Imds, ImdsCredentials, MOTO_ACCESS_KEY, Moto, Outcome, S3Mode, S3Stub, free_port,
    pullauth_aws_env, pullauth_command,
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const REGISTRY: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
/// moto's ECR password for [`ACCOUNT`] (`AWS:<account>-auth-token`).
const MOTO_ECR_PASSWORD: &str = "123456789012-auth-token";
/// A password that must never appear in a log or an error.
const CANARY: &str = "canary-9f2c1e-Pa55w0rd";

/// Environment for a child with the static `keys`, region us-east-1 and
/// `more` (an endpoint, say).
fn keys_and(keys: (&str, &str), more: &[(&str, &str)]) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", keys.0),
        ("AWS_SECRET_ACCESS_KEY", keys.1),
        ("AWS_REGION", "us-east-1"),
    ]
    .iter()
    .chain(more)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// [`keys_and`] with moto's own keys.
fn moto_keys_and(more: &[(&str, &str)]) -> Vec<(String, String)> {
    keys_and(MOTO_ACCESS_KEY, more)
}

/// Environment for a child using moto with static keys.
fn keys_env(moto: &Moto, keys: (&str, &str)) -> Vec<(String, String)> {
    keys_and(keys, &[("AWS_ENDPOINT_URL", &moto.endpoint())])
}

/// Runs `action` in a child process with exactly `env` (plus PATH and an
/// empty HOME) and returns its JSON answer.
fn probe(env: &[(String, String)], action: Value) -> Value {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("answer.json");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "aws::probe_child",
            "--ignored",
            "--test-threads=1",
            "-q",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", scratch.path())
        .env("PULLAUTH_AWS_PROBE", action.to_string())
        .env("PULLAUTH_AWS_PROBE_OUT", &out)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("cannot re-run the test binary");
    assert!(
        child.status.success(),
        "probe {action} failed: {}\n{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        panic!(
            "probe {action} wrote no answer ({e}): {}",
            String::from_utf8_lossy(&child.stderr)
        )
    });
    serde_json::from_str(&text).expect("probe answer is JSON")
}

fn ok(answer: &Value) -> &Value {
    answer
        .get("ok")
        .unwrap_or_else(|| panic!("expected success, got {answer}"))
}

/// The error's class and message.
fn err(answer: &Value) -> (String, String) {
    let e = answer
        .get("err")
        .unwrap_or_else(|| panic!("expected an error, got {answer}"));
    (
        e["class"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

// ---------------------------------------------------------------------------
// The child side.

/// Not a test by itself: the child process of [`probe`]. Does nothing
/// unless `PULLAUTH_AWS_PROBE` is set.
#[test]
#[ignore = "run by the other tests in a child process"]
fn probe_child() {
    let Ok(action) = std::env::var("PULLAUTH_AWS_PROBE") else {
        return;
    };
    let action: Value = serde_json::from_str(&action).expect("action JSON");
    let out = std::env::var("PULLAUTH_AWS_PROBE_OUT").expect("PULLAUTH_AWS_PROBE_OUT");
    let log = LogBuffer::default();
    let level = match action["log"].as_str() {
        Some("trace") => Some(tracing::Level::TRACE),
        Some("debug") => Some(tracing::Level::DEBUG),
        _ => None,
    };
    let _guard = level.map(|level| {
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(level)
                .with_ansi(false)
                .with_writer(log.clone())
                .finish(),
        )
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut answer = runtime.block_on(run_action(&action));
    answer["log"] = Value::String(log.text());
    std::fs::write(&out, answer.to_string()).expect("write the answer");
}

async fn run_action(action: &Value) -> Value {
    // Shorter bounds, where a test asks for them.
    let millis = |name: &str| action[name].as_u64().map(Duration::from_millis);
    let defaults = AwsOptions::default();
    let options = AwsOptions {
        attempt_timeout: millis("attempt_timeout_ms").unwrap_or(defaults.attempt_timeout),
        operation_timeout: millis("operation_timeout_ms").unwrap_or(defaults.operation_timeout),
        ..defaults
    };
    let aws = Aws::from_env(options).await;
    let role = action["role"]
        .as_str()
        .map(|r| RoleArn::parse(r).expect("valid role ARN"));
    let repeat = action["repeat"].as_u64().unwrap_or(1);
    let mut latencies = Vec::new();
    let mut result = json!(null);
    for _ in 0..repeat {
        let started = Instant::now();
        result = match action["op"].as_str() {
            Some("ecr") => {
                let registry = EcrRegistry::parse(action["host"].as_str().unwrap_or_default())
                    .expect("ECR host");
                aws.ecr_credentials(&registry, role.as_ref())
                    .await
                    .map(|c| {
                        json!({
                            "username": c.username,
                            "password": c.password.expose_secret(),
                            "proxy_endpoint": c.proxy_endpoint,
                        })
                    })
            }
            Some("secret") => aws
                .secret_credentials(action["secret"].as_str().unwrap_or_default(), role.as_ref())
                .await
                .map(|c| json!({"username": c.username, "password": c.password.expose_secret()})),
            Some("s3") => {
                let location =
                    S3Location::parse(action["url"].as_str().unwrap_or_default()).expect("S3 URL");
                aws.get_object(&location)
                    .await
                    .map(|bytes| json!({"content": String::from_utf8_lossy(&bytes)}))
            }
            Some("s3_get_if_changed") => {
                let location =
                    S3Location::parse(action["url"].as_str().unwrap_or_default()).expect("S3 URL");
                let max_bytes = action["max_bytes"].as_u64().unwrap_or(1024 * 1024);
                aws.s3_get_if_changed(
                    &location,
                    action["etag"].as_str(),
                    usize::try_from(max_bytes).expect("a size"),
                )
                .await
                .map(|fetch| match fetch {
                    S3Fetch::NotModified => json!({"not_modified": true}),
                    S3Fetch::Object {
                        etag,
                        body,
                        last_modified,
                    } => json!({
                        "etag": etag,
                        "content": String::from_utf8_lossy(&body),
                        "last_modified": last_modified
                            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                            .map(|since| since.as_secs()),
                    }),
                })
            }
            Some("s3_put_if") => {
                let location =
                    S3Location::parse(action["url"].as_str().unwrap_or_default()).expect("S3 URL");
                let condition = match action["if_match"].as_str() {
                    Some(etag) => PutCondition::IfMatch(etag.to_owned()),
                    None => PutCondition::IfNoneMatch,
                };
                aws.s3_put_if(
                    &location,
                    action["body"]
                        .as_str()
                        .unwrap_or_default()
                        .as_bytes()
                        .to_vec(),
                    condition,
                    action["content_type"].as_str(),
                )
                .await
                .map(|etag| json!({ "etag": etag }))
            }
            other => panic!("unknown op {other:?}"),
        }
        .map_or_else(
            |e| {
                json!({"err": {
                    "class": e.class().name(),
                    "message": e.to_string(),
                    "debug": format!("{e:?}"),
                    "precondition_failed": e.is_precondition_failed(),
                }})
            },
            |v| json!({ "ok": v }),
        );
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let counters = aws.counters();
    result["latencies_ms"] = json!(latencies);
    result["counters"] = json!({
        "ecr_token_fetches": counters.ecr_token_fetches,
        "role_assumptions": counters.role_assumptions,
        "secret_fetches": counters.secret_fetches,
    });
    result
}

#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

// ---------------------------------------------------------------------------
// ECR

#[test]
fn ecr_token_with_static_keys_and_the_service_specific_endpoint() {
    let moto = Moto::shared();
    // Only AWS_ENDPOINT_URL_ECR: proves the standard per-service setting.
    let env = moto_keys_and(&[("AWS_ENDPOINT_URL_ECR", &moto.endpoint())]);
    let n = 20;
    let answer = probe(&env, json!({"op": "ecr", "host": REGISTRY, "repeat": n}));
    let creds = ok(&answer);
    assert_eq!(creds["username"], "AWS");
    assert_eq!(creds["password"], MOTO_ECR_PASSWORD);
    assert_eq!(creds["proxy_endpoint"], format!("https://{REGISTRY}"));
    // moto's tokens expire at issue, so none is cached: every call fetched.
    assert_eq!(answer["counters"]["ecr_token_fetches"], n);
    let mut ms: Vec<f64> = answer["latencies_ms"]
        .as_array()
        .expect("latencies")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "ecr:GetAuthorizationToken against moto: median {:.1} ms, first {:.1} ms, max {:.1} ms (n={n})",
        ms[ms.len() / 2],
        answer["latencies_ms"][0].as_f64().unwrap_or_default(),
        ms[ms.len() - 1]
    );
}

#[test]
fn ecr_token_with_imdsv2_credentials_and_no_keys_in_the_environment() {
    let moto = Moto::shared();
    let imds = Imds::start(ImdsCredentials {
        role: "pullauth-instance-role".into(),
        access_key_id: "ASIAIMDSTESTKEY00001".into(),
        secret_access_key: "imds-secret-key".into(),
        token: "imds-session-token".into(),
    });
    let env = vec![
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_string(),
            imds.endpoint(),
        ),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL".to_string(), moto.endpoint()),
    ];
    let answer = probe(&env, json!({"op": "ecr", "host": REGISTRY}));
    assert_eq!(ok(&answer)["password"], MOTO_ECR_PASSWORD);
    assert!(
        imds.credential_requests() >= 1,
        "the credentials did not come from IMDS"
    );
}

/// A malformed endpoint override is a configuration error at start (exit
/// 2) naming the variable, for `check`, `pull` and `serve`, before the
/// engine (there is none here) or AWS is asked anything; the password in it
/// is never shown. Before, the SDK found it at the first AWS call (exit 1).
#[test]
fn a_malformed_endpoint_override_is_a_configuration_error_at_start() {
    let dir = scratch_dir("endpoint");
    let env_file = dir.path().join("ecs.config");
    std::fs::write(&env_file, "ECS_CLUSTER=endpoints\n").expect("env file");
    let password = format!("endpoint-{}", random_token(16));
    let bad = format!("http://user:{password}@bad host:4566");
    let env = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_ECR", bad.as_str()),
    ];
    let image = format!("{REGISTRY}/app:1");
    let listen = format!("127.0.0.1:{}", free_port());
    let socket = dir.path().join("control.sock");
    let socket = socket.to_str().expect("UTF-8 path");
    let engine = format!("unix://{}/no-engine.sock", dir.path().display());
    for (subcommand, args) in [
        ("check", vec![]),
        ("pull", vec![image.as_str()]),
        (
            "serve",
            vec!["--listen", &listen, "--control-socket", socket],
        ),
    ] {
        let out = Outcome::run_bounded(
            &mut pullauth_command(subcommand, &engine, &env_file, &env, &args),
            b"",
            Duration::from_secs(60),
        );
        out.assert_code(2)
            .assert_no_panic()
            .assert_no_secret(&secret_needles(&password))
            .assert_stderr_has(&["AWS_ENDPOINT_URL_ECR: not a usable endpoint: not a URL"]);
    }
}

/// Pins what the start-up check of endpoint overrides (pullauth-aws's
/// endpoint_env.rs) relies on: the linked SDK still sends a service's calls
/// to `AWS_ENDPOINT_URL_<SERVICE>`, or to `AWS_ENDPOINT_URL`, when
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`, so pullauth checks them
/// whatever that switch says. An SDK that honours the switch fails this
/// test, and the check can then honour it too.
#[test]
fn the_linked_sdk_uses_endpoint_overrides_even_when_told_to_ignore_them() {
    for var in ["AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL"] {
        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let env = moto_keys_and(&[
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
            (var, &endpoint),
        ]);
        let answer = probe(&env, json!({"op": "ecr", "host": REGISTRY}));
        let (class, message) = err(&answer);
        assert_eq!(class, "unreachable", "{var}: {message}");
        assert!(
            message.contains(&format!("endpoint unreachable: 127.0.0.1:{port}: ")),
            "{var}: {message}"
        );
    }
}

#[test]
fn unreachable_endpoint_is_a_prompt_classified_error() {
    let port = free_port();
    let dead = format!("http://127.0.0.1:{port}");
    let env = moto_keys_and(&[("AWS_ENDPOINT_URL", &dead)]);
    let started = Instant::now();
    let answer = probe(&env, json!({"op": "ecr", "host": REGISTRY}));
    let (class, message) = err(&answer);
    assert_eq!(class, "unreachable", "{message}");
    assert!(message.contains(REGISTRY), "{message}");
    // Regression (issue 25): connect and DNS failures name the endpoint's
    // host and port, not only the call.
    assert!(
        message.contains(&format!("endpoint unreachable: 127.0.0.1:{port}: ")),
        "{message}"
    );
    // Secrets Manager, and STS for a role, the same way.
    for action in [
        json!({"op": "secret", "secret": "registry/good"}),
        json!({"op": "secret", "secret": "registry/good",
               "role": "arn:aws:iam::123456789012:role/pull"}),
    ] {
        let answer = probe(&env, action);
        let (class, message) = err(&answer);
        assert_eq!(class, "unreachable", "{message}");
        assert!(
            message.contains(&format!("endpoint unreachable: 127.0.0.1:{port}: ")),
            "{message}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

// ---------------------------------------------------------------------------
// Secrets Manager

fn create_secrets(moto: &Moto) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        moto.boto3(
            &format!(
                "sm = client('secretsmanager')\n\
                 sm.create_secret(Name='registry/good', SecretString=json.dumps(\
                 {{'username': 'robot', 'password': {CANARY:?}, 'note': 'ignored'}}))\n\
                 sm.create_secret(Name='registry/no-password', SecretString=json.dumps(\
                 {{'username': 'robot', 'pass': {CANARY:?}}}))\n\
                 sm.create_secret(Name='registry/not-json', SecretString={CANARY:?})\n\
                 sm.create_secret(Name='registry/binary', SecretBinary={CANARY:?}.encode())\n"
            ),
            None,
        );
    });
}

#[test]
fn secret_with_username_and_password_gives_credentials() {
    let moto = Moto::shared();
    create_secrets(moto);
    let answer = probe(
        &keys_env(moto, MOTO_ACCESS_KEY),
        json!({"op": "secret", "secret": "registry/good"}),
    );
    assert_eq!(ok(&answer)["username"], "robot");
    assert_eq!(ok(&answer)["password"], CANARY);
}

#[test]
fn bad_secrets_are_errors_that_name_the_secret_and_problem_but_no_value() {
    let moto = Moto::shared();
    create_secrets(moto);
    let cases = [
        ("registry/missing", "not_found", "no such secret"),
        (
            "registry/no-password",
            "bad_secret",
            "no \"password\" field",
        ),
        ("registry/not-json", "bad_secret", "not valid JSON"),
        ("registry/binary", "bad_secret", "binary"),
    ];
    for (secret, class, problem) in cases {
        let answer = probe(
            &keys_env(moto, MOTO_ACCESS_KEY),
            json!({"op": "secret", "secret": secret}),
        );
        let (got_class, message) = err(&answer);
        assert_eq!(got_class, class, "{secret}: {message}");
        assert!(message.contains(secret), "{secret}: {message}");
        assert!(message.contains(problem), "{secret}: {message}");
        assert!(!message.contains(CANARY), "{secret}: {message}");
    }
}

// ---------------------------------------------------------------------------
// S3

/// Creates `bucket` in moto with one object, `key`, holding `body`.
fn bucket_with(moto: &Moto, bucket: &str, key: &str, body: &str) {
    moto.boto3(
        &format!(
            "s3 = client('s3')\n\
             s3.create_bucket(Bucket={bucket:?})\n\
             s3.put_object(Bucket={bucket:?}, Key={key:?}, Body={body:?}.encode())\n"
        ),
        None,
    );
}

#[test]
fn s3_object_is_read_back_and_missing_key_or_bucket_are_distinct_errors() {
    let moto = Moto::shared();
    bucket_with(
        moto,
        "pullauth-env",
        "dir/ecs.env",
        &format!("ECS_ENGINE_AUTH_TYPE=docker\nPASSWORD={CANARY}\n"),
    );
    let env = keys_env(moto, MOTO_ACCESS_KEY);
    let answer = probe(
        &env,
        json!({"op": "s3", "url": "s3://pullauth-env/dir/ecs.env"}),
    );
    assert_eq!(
        ok(&answer)["content"],
        format!("ECS_ENGINE_AUTH_TYPE=docker\nPASSWORD={CANARY}\n")
    );

    let answer = probe(
        &env,
        json!({"op": "s3", "url": "s3://pullauth-env/dir/missing.env"}),
    );
    let (class, message) = err(&answer);
    assert_eq!(class, "not_found", "{message}");
    assert!(
        message.contains("no such key \"dir/missing.env\""),
        "{message}"
    );

    let answer = probe(
        &env,
        json!({"op": "s3", "url": "s3://pullauth-nobucket/ecs.env"}),
    );
    let (class, message) = err(&answer);
    assert_eq!(class, "not_found", "{message}");
    assert!(
        message.contains("no such bucket \"pullauth-nobucket\""),
        "{message}"
    );
}

/// Creates the IAM user `name` with an access key and a policy allowing
/// `actions` (a Python list's items) on everything, then runs `then` (more
/// setup, with `iam` and `client` at hand), and returns the user's access
/// key id and secret key. Three calls, plus those of `then`.
fn iam_user(moto: &Moto, name: &str, actions: &str, then: &str) -> (String, String) {
    let out = moto.boto3(
        &format!(
            "iam = client('iam')\n\
             iam.create_user(UserName={name:?})\n\
             k = iam.create_access_key(UserName={name:?})['AccessKey']\n\
             iam.put_user_policy(UserName={name:?}, PolicyName='allowed', PolicyDocument=json.dumps(\
               {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': [{actions}], 'Resource': '*'}}]}}))\n\
             {then}\
             print(k['AccessKeyId'], k['SecretAccessKey'])\n"
        ),
        None,
    );
    let mut words = out.split_whitespace();
    match (words.next(), words.next()) {
        (Some(id), Some(secret)) => (id.to_string(), secret.to_string()),
        _ => panic!("no access key in {out:?}"),
    }
}

/// S3 checks every request's SigV4 signature; moto does too once it
/// enforces IAM. A key with a space, a plus, non-ASCII letters and slashes
/// is read back (its path is encoded once and signed as sent), and a wrong
/// secret key is refused as access denied.
#[test]
fn s3_reads_are_signed_as_s3_checks_them() {
    // Every call of the setup script below, all allowed before enforcement.
    const S3_SETUP_CALLS: usize = 5;
    const KEY: &str = "dir/with space/ünïcode+plus.env";
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", &S3_SETUP_CALLS.to_string())]);
    let keys = iam_user(
        &moto,
        "reader",
        "'s3:GetObject'",
        &format!(
            "s3 = client('s3')\n\
             s3.create_bucket(Bucket='signed-env')\n\
             s3.put_object(Bucket='signed-env', Key={KEY:?}, Body=b'ECS_CLUSTER=signed\\n')\n"
        ),
    );
    let reader = (keys.0.as_str(), keys.1.as_str());
    let url = format!("s3://signed-env/{KEY}");

    let answer = probe(&keys_env(&moto, reader), json!({"op": "s3", "url": url}));
    assert_eq!(ok(&answer)["content"], "ECS_CLUSTER=signed\n");

    let wrong = (reader.0, "wrong-secret-access-key-0000000000000000");
    let answer = probe(&keys_env(&moto, wrong), json!({"op": "s3", "url": url}));
    let (class, message) = err(&answer);
    assert_eq!(class, "access_denied", "{message}");
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(!message.contains(wrong.1), "{message}");

    // Writes are signed as S3 checks them too: the reader's key gets past
    // the signature and is refused by its policy, which allows reads only.
    // The error names the permission and the object it is needed on.
    let answer = probe(
        &keys_env(&moto, reader),
        json!({"op": "s3_put_if", "url": url, "body": "ECS_CLUSTER=mine\n", "if_match": "\"any\""}),
    );
    let (class, message) = err(&answer);
    assert_eq!(class, "access_denied", "{message}");
    assert!(
        message.contains(&format!(
            "the principal needs s3:PutObject on arn:aws:s3:::signed-env/{KEY}"
        )),
        "{message}"
    );
    assert!(!message.contains(reader.1), "{message}");
}

/// A secret access key that must never appear in an error or a log: moto
/// without IAM enforcement accepts any key.
const CANARY_SECRET_KEY: &str = "canary-secret-key-5e1f0a-wJalrXUtnFEMI";

/// The environment of a probe using moto with [`CANARY_SECRET_KEY`].
fn canary_env(moto: &Moto) -> Vec<(String, String)> {
    keys_env(moto, (MOTO_ACCESS_KEY.0, CANARY_SECRET_KEY))
}

/// A fresh bucket in moto; returns its name.
fn fresh_bucket(moto: &Moto, prefix: &str) -> String {
    let bucket = format!("{prefix}-{}", random_token(10).to_ascii_lowercase());
    moto.boto3(
        &format!("client('s3').create_bucket(Bucket={bucket:?})\n"),
        None,
    );
    bucket
}

/// The error of `answer`, checked to hold no credential material.
fn err_without_secrets(answer: &Value) -> (String, String) {
    let e = &answer["err"];
    for shown in [&e["message"], &e["debug"], &answer["log"]] {
        let shown = shown.as_str().unwrap_or_default();
        assert!(!shown.contains(CANARY_SECRET_KEY), "{shown}");
    }
    err(answer)
}

/// A read naming the object's current ETag is answered "not modified"
/// without a body; one naming another ETag (or none) gets the object,
/// its ETag and its `Last-Modified`.
#[test]
fn s3_conditional_reads_answer_not_modified_for_the_current_etag() {
    let moto = Moto::shared();
    let bucket = fresh_bucket(moto, "pullauth-cond");
    let url = format!("s3://{bucket}/state/leases.json");
    let env = canary_env(moto);
    let put = probe(
        &env,
        json!({"op": "s3_put_if", "url": url, "body": "{\"v\":1}"}),
    );
    let etag = ok(&put)["etag"].as_str().expect("an ETag").to_owned();

    let answer = probe(&env, json!({"op": "s3_get_if_changed", "url": url}));
    let object = ok(&answer);
    assert_eq!(object["etag"], etag.as_str());
    assert_eq!(object["content"], "{\"v\":1}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let modified = object["last_modified"].as_u64().expect("Last-Modified");
    assert!(now.abs_diff(modified) < 3600, "{modified} vs {now}");

    let answer = probe(
        &env,
        json!({"op": "s3_get_if_changed", "url": url, "etag": etag}),
    );
    assert_eq!(ok(&answer)["not_modified"], true, "{answer}");

    let answer = probe(
        &env,
        json!({"op": "s3_get_if_changed", "url": url, "etag": "\"0123456789abcdef0123456789abcdef\""}),
    );
    assert_eq!(ok(&answer)["etag"], etag.as_str(), "{answer}");
    assert_eq!(ok(&answer)["content"], "{\"v\":1}");
}

/// `If-None-Match: *` creates once; `If-Match` replaces only the version
/// it names. Every lost race is told apart as "precondition failed".
#[test]
fn s3_conditional_writes_create_once_and_replace_only_the_version_read() {
    let moto = Moto::shared();
    let bucket = fresh_bucket(moto, "pullauth-cond");
    let url = format!("s3://{bucket}/leases.json");
    let env = canary_env(moto);
    let put = |body: &str, if_match: Option<&str>| {
        let mut action = json!({"op": "s3_put_if", "url": url, "body": body,
                                "content_type": "application/json"});
        if let Some(etag) = if_match {
            action["if_match"] = json!(etag);
        }
        probe(&env, action)
    };
    let lost = |answer: &Value| {
        let (class, message) = err_without_secrets(answer);
        assert_eq!(class, "precondition_failed", "{message}");
        assert_eq!(answer["err"]["precondition_failed"], true, "{answer}");
        assert!(message.contains(&url), "{message}");
        assert!(message.contains("s3:PutObject"), "{message}");
    };

    let first = put("{\"owner\":\"a\"}", None);
    let first = ok(&first)["etag"].as_str().expect("an ETag").to_owned();
    lost(&put("{\"owner\":\"b\"}", None));
    lost(&put(
        "{\"owner\":\"b\"}",
        Some("\"0123456789abcdef0123456789abcdef\""),
    ));

    let second = put("{\"owner\":\"c\"}", Some(&first));
    let second = ok(&second)["etag"].as_str().expect("an ETag").to_owned();
    assert_ne!(second, first);
    // The version read first is gone: writing over it again loses.
    lost(&put("{\"owner\":\"d\"}", Some(&first)));

    let answer = probe(&env, json!({"op": "s3_get_if_changed", "url": url}));
    assert_eq!(ok(&answer)["content"], "{\"owner\":\"c\"}");
    assert_eq!(ok(&answer)["etag"], second.as_str());
    let stored = moto.boto3(
        &format!(
            "print(client('s3').head_object(Bucket={bucket:?}, Key='leases.json')['ContentType'])\n"
        ),
        None,
    );
    assert_eq!(stored.trim(), "application/json");
}

/// A conditional read stops at the caller's limit, with an error naming
/// the object and the limit.
#[test]
fn s3_conditional_reads_refuse_an_object_over_their_limit() {
    let moto = Moto::shared();
    let bucket = fresh_bucket(moto, "pullauth-cond");
    moto.boto3(
        &format!("client('s3').put_object(Bucket={bucket:?}, Key='big', Body=b'x' * 65536)\n"),
        None,
    );
    let url = format!("s3://{bucket}/big");
    let answer = probe(
        &canary_env(moto),
        json!({"op": "s3_get_if_changed", "url": url, "max_bytes": 4096}),
    );
    let (class, message) = err_without_secrets(&answer);
    assert_eq!(class, "bad_response", "{message}");
    assert!(message.contains(&url), "{message}");
    assert!(
        message.contains("the object has 65536 bytes, more than the 4096 allowed"),
        "{message}"
    );
    let answer = probe(
        &canary_env(moto),
        json!({"op": "s3_get_if_changed", "url": url, "max_bytes": 65536}),
    );
    assert_eq!(ok(&answer)["content"].as_str().map(str::len), Some(65536));
}

/// A missing bucket or key is named, for reads and writes alike, and no
/// error or debug log shows the secret key.
#[test]
fn s3_conditional_calls_name_a_missing_bucket_or_key_and_never_the_secret_key() {
    let moto = Moto::shared();
    let bucket = fresh_bucket(moto, "pullauth-cond");
    let env = canary_env(moto);
    let missing_key = format!("s3://{bucket}/missing.json");
    let missing_bucket = format!("s3://{bucket}-nope/leases.json");
    let cases = [
        (
            json!({"op": "s3_get_if_changed", "url": missing_key, "log": "debug"}),
            missing_key.clone(),
            format!("no such key \"missing.json\" in bucket \"{bucket}\""),
        ),
        (
            json!({"op": "s3_get_if_changed", "url": missing_bucket, "etag": "\"x\""}),
            missing_bucket.clone(),
            format!("no such bucket \"{bucket}-nope\""),
        ),
        (
            json!({"op": "s3_put_if", "url": missing_key, "body": "{}", "if_match": "\"x\"",
                   "log": "debug"}),
            missing_key.clone(),
            format!("no such key \"missing.json\" in bucket \"{bucket}\""),
        ),
        (
            json!({"op": "s3_put_if", "url": missing_bucket, "body": "{}"}),
            missing_bucket.clone(),
            format!("no such bucket \"{bucket}-nope\""),
        ),
    ];
    for (action, url, what) in cases {
        let answer = probe(&env, action.clone());
        let (class, message) = err_without_secrets(&answer);
        assert_eq!(class, "not_found", "{action}: {message}");
        assert!(message.contains(&url), "{action}: {message}");
        assert!(message.ends_with(&what), "{action}: {message}");
        assert_eq!(answer["err"]["precondition_failed"], false, "{answer}");
    }
}

/// The environment of a probe whose S3 calls go to `stub`.
fn stub_env(stub: &S3Stub) -> Vec<(String, String)> {
    pullauth_aws_env(&stub.endpoint())
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The configuration's retries apply to S3 reads: two 503 SlowDown answers,
/// then the object, is a success after three signed attempts.
#[test]
fn s3_reads_retry_slow_down_with_a_signature_per_attempt() {
    let stub = S3Stub::start(S3Mode::FailThenServe {
        failures: 2,
        body: b"ECS_CLUSTER=third-time\n".to_vec(),
    });
    let answer = probe(
        &stub_env(&stub),
        json!({"op": "s3", "url": "s3://stub-bucket/ecs.config"}),
    );
    assert_eq!(ok(&answer)["content"], "ECS_CLUSTER=third-time\n");
    let heads = stub.heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nauthorization: aws4-hmac-sha256 "),
            "{head}"
        );
        assert!(lower.contains("\r\nx-amz-date: "), "{head}");
    }
}

/// The configuration's per-attempt limit and attempts apply to S3 reads:
/// an endpoint that never answers gets three attempts of 1 s each, well
/// inside the call's own limit, and the error says so.
///
/// 1 s, not less: the first attempt's time includes building the SDK's
/// HTTP client (with the system's root certificates), which a busy machine
/// can stretch to a few hundred milliseconds before the connection is made.
#[test]
fn s3_reads_give_up_on_a_silent_endpoint_after_three_bounded_attempts() {
    let stub = S3Stub::start(S3Mode::Stall);
    let answer = probe(
        &stub_env(&stub),
        json!({"op": "s3", "url": "s3://stub-bucket/ecs.config",
               "attempt_timeout_ms": 1_000, "operation_timeout_ms": 10_000}),
    );
    let (class, message) = err(&answer);
    assert_eq!(class, "timeout", "{message}");
    assert!(
        message.contains("3 attempts of at most 1s each"),
        "{message}"
    );
    // The stub counts a connection once it has read its request, on a
    // thread of its own: the last may be counted just after the probe ends.
    wait_for("the stub to count three held connections", || {
        (stub.stalled() >= 3).then_some(())
    });
    assert_eq!(stub.stalled(), 3, "one held connection per attempt");
}

/// A body that stops flowing fails as a broken transfer after the SDK's
/// grace period, not as a timeout of the whole call.
#[test]
fn s3_reads_fail_a_body_that_stops_flowing() {
    let stub = S3Stub::start(S3Mode::StallBody(b"ECS_CLUSTER=half".to_vec()));
    let answer = probe(
        &stub_env(&stub),
        json!({"op": "s3", "url": "s3://stub-bucket/ecs.config",
               "operation_timeout_ms": 60_000}),
    );
    let (class, message) = err(&answer);
    assert_eq!(class, "unreachable", "{message}");
    assert!(
        message.contains("the connection failed while reading the object"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------
// AssumeRole, with moto enforcing IAM

/// The calls of the setup script below, all allowed before enforcement
/// starts (moto's `INITIAL_NO_AUTH_ACTION_COUNT`).
const SETUP_CALLS: usize = 6;

#[test]
fn calls_for_a_role_use_its_assumed_credentials_and_calls_without_use_the_default_chain() {
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", &SETUP_CALLS.to_string())]);
    // The agent's own user may only assume roles; the role may read the
    // secret and get ECR tokens. (moto matches the trust policy's principal
    // literally, so it names the user rather than the account root.)
    let keys = iam_user(
        &moto,
        "agent",
        "'sts:AssumeRole'",
        &format!(
            "iam.create_role(RoleName='puller', AssumeRolePolicyDocument=json.dumps(\
               {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Principal': {{'AWS': 'arn:aws:iam::{ACCOUNT}:user/agent'}}, 'Action': 'sts:AssumeRole'}}]}}))\n\
             iam.put_role_policy(RoleName='puller', PolicyName='pull', PolicyDocument=json.dumps(\
               {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': ['secretsmanager:GetSecretValue', 'ecr:GetAuthorizationToken'], 'Resource': '*'}}]}}))\n\
             client('secretsmanager').create_secret(Name='registry/role-only', SecretString=json.dumps(\
               {{'username': 'robot', 'password': {CANARY:?}}}))\n"
        ),
    );
    let agent = (keys.0.as_str(), keys.1.as_str());
    let env = keys_env(&moto, agent);
    let role = format!("arn:aws:iam::{ACCOUNT}:role/puller");

    // Without a role: the agent's own (default chain) credentials, denied.
    let answer = probe(
        &env,
        json!({"op": "secret", "secret": "registry/role-only"}),
    );
    let (class, message) = err(&answer);
    assert_eq!(class, "access_denied", "{message}");
    assert!(
        message.contains("the default credential chain"),
        "{message}"
    );
    assert!(
        !message.contains(CANARY) && !message.contains(agent.1),
        "{message}"
    );
    let answer = probe(&env, json!({"op": "ecr", "host": REGISTRY}));
    assert_eq!(err(&answer).0, "access_denied", "{answer}");

    // With the role: allowed, so the assumed credentials were used.
    let answer = probe(
        &env,
        json!({"op": "secret", "secret": "registry/role-only", "role": role}),
    );
    assert_eq!(ok(&answer)["password"], CANARY);
    assert_eq!(answer["counters"]["role_assumptions"], 1);
    let answer = probe(
        &env,
        json!({"op": "ecr", "host": REGISTRY, "role": role, "repeat": 3}),
    );
    assert_eq!(ok(&answer)["password"], MOTO_ECR_PASSWORD);
    // Three token fetches, one AssumeRole: the role's credentials are cached.
    assert_eq!(answer["counters"]["ecr_token_fetches"], 3);
    assert_eq!(answer["counters"]["role_assumptions"], 1);
}

// ---------------------------------------------------------------------------
// Secret hygiene of the SDK's own logging

#[test]
fn debug_logging_of_every_crate_never_shows_a_token_or_secret() {
    let moto = Moto::shared();
    create_secrets(moto);
    // An env file is full of secrets too.
    bucket_with(
        moto,
        "pullauth-hygiene",
        "ecs.env",
        &format!("PASSWORD={CANARY}\n"),
    );
    let env = keys_env(moto, MOTO_ACCESS_KEY);
    for action in [
        json!({"op": "ecr", "host": REGISTRY, "log": "debug"}),
        json!({"op": "secret", "secret": "registry/good", "log": "debug"}),
        json!({"op": "secret", "secret": "registry/good", "log": "trace"}),
        json!({"op": "s3", "url": "s3://pullauth-hygiene/ecs.env", "log": "debug"}),
        json!({"op": "s3_get_if_changed", "url": "s3://pullauth-hygiene/ecs.env", "log": "debug"}),
        json!({"op": "s3_put_if", "url": format!("s3://pullauth-hygiene/{}", random_token(12)),
               "body": format!("PASSWORD={CANARY}\n"), "log": "debug"}),
    ] {
        let answer = probe(&env, action.clone());
        ok(&answer);
        let log = answer["log"].as_str().unwrap_or_default();
        assert!(
            log.contains("aws_smithy_runtime"),
            "{action}: the SDK's log was not captured:\n{log}"
        );
        for secret in [CANARY, MOTO_ECR_PASSWORD, MOTO_ACCESS_KEY.1] {
            assert!(
                !log.contains(secret),
                "{action}: {secret} in the log:\n{log}"
            );
        }
    }
}

/// Pins why the binary must cap the SDK's targets below trace
/// (`pullauth_aws::SDK_MAX_SAFE_LEVEL`): GetAuthorizationToken is not a
/// sensitive operation to the SDK, and at trace it logs the token. If this
/// starts failing, the SDK redacts it now and the cap could be relaxed.
#[test]
fn trace_logging_of_the_sdk_shows_ecr_tokens() {
    let moto = Moto::shared();
    let env = keys_env(moto, MOTO_ACCESS_KEY);
    let answer = probe(&env, json!({"op": "ecr", "host": REGISTRY, "log": "trace"}));
    ok(&answer);
    let log = answer["log"].as_str().unwrap_or_default();
    let encoded = "QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu"; // base64 of AWS:<password>
    assert!(
        log.contains(encoded),
        "the SDK no longer logs ECR tokens at trace"
    );
}

#[test]
fn harness_venv_is_reused() {
    // The second lookup must not reinstall: the venv is keyed by version.
    let a = pullauth_integration::venv_python();
    let b = pullauth_integration::venv_python();
    assert_eq!(a, b);
    assert!(Path::new(&a).is_file());
}
