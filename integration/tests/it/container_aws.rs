//! The `FROM scratch` image reaches AWS: the statically linked binary in
//! the test image (built as the Dockerfile builds it, see
//! `agent::agent_image`) fetches an ECR token from moto served over TLS
//! with a certificate from a CA generated here, by host name
//! (`--add-host`, so through the image's static glibc resolver and
//! Docker's /etc/hosts), trusting the CA through `AWS_CA_BUNDLE`. Without
//! the variable the same call fails with an error naming the untrusted
//! certificate and the variable; a bundle that does not exist stops the
//! command before any AWS call (exit 2). No output holds the secret key or
//! the token.
//!
//! The pulled image's registry (`123456789012.dkr.ecr.us-east-1...`) does
//! not exist here, so each pull ends in a registry-side failure after the
//! token: what is asserted is that the token was fetched.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pullauth_integration::agent::{
    AgentImage, ContainerGuard, agent_image, random_token, scratch_dir, secret_needles,
};
use pullauth_integration::{Harness, MOTO_ACCESS_KEY, Moto, ensure_tools, pullauth_aws_env};

/// The name moto's certificate is issued for; `--add-host` maps it to
/// 127.0.0.1 inside the container.
const MOTO_HOST: &str = "moto.pullauth.test";
const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:latest";
/// moto's ECR password for account 123456789012.
const MOTO_ECR_PASSWORD: &str = "123456789012-auth-token";
/// Where the container sees the generated CA.
const CA_IN_CONTAINER: &str = "/etc/pullauth-test/ca.pem";
/// Upper bound for one `docker run` of the image (the engine's pull of the
/// nonexistent registry is bounded by `ECS_IMAGE_PULL_TIMEOUT` below).
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A CA and a certificate for [`MOTO_HOST`] signed by it, made with the
/// openssl CLI in `dir`: returns (ca.pem, server.pem, server.key).
fn make_certificates(dir: &Path) -> [std::path::PathBuf; 3] {
    ensure_tools(&[("openssl", "openssl")]);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=pullauth-it test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                &format!("/CN={MOTO_HOST}"),
            ],
        ]
        .concat(),
    );
    fs::write(
        dir.join("server.ext"),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{MOTO_HOST}\n"
        ),
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    ["ca.pem", "server.pem", "server.key"].map(|f| dir.join(f))
}

/// `docker run` of `image` as `pullauth ARGS` with host networking,
/// [`MOTO_HOST`] mapped to 127.0.0.1, the engine's socket, `ca` mounted at
/// [`CA_IN_CONTAINER`] and `env` passed by name (values stay out of the
/// command line). Killed and removed after [`RUN_LIMIT`].
fn run_image(image: &AgentImage, ca: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    let h = Harness::get();
    let engine_socket = h.engine_socket();
    let name = format!("pullauth-it-aws-{}", random_token(8).to_ascii_lowercase());
    let _guard = ContainerGuard { name: name.clone() };
    let dir = scratch_dir("container-aws-run");
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = h.docker();
    cmd.args([
        "run",
        "--pull",
        "never",
        "--name",
        &name,
        "--network",
        "host",
    ])
    .args(["--add-host", &format!("{MOTO_HOST}:127.0.0.1")])
    .args(["--volume", &format!("{engine_socket}:/var/run/docker.sock")])
    .args([
        "--volume",
        &format!("{}:{CA_IN_CONTAINER}:ro", ca.display()),
    ])
    .args(["--entrypoint", "/pullauth"]);
    for (key, value) in env {
        cmd.args(["--env", key]).env(key, value);
    }
    let mut child = cmd
        .arg(&image.tag)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).expect("create stdout file"))
        .stderr(fs::File::create(&stderr).expect("create stderr file"))
        .spawn()
        .expect("cannot run docker");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for docker run") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "docker run pullauth {args:?} did not end within {RUN_LIMIT:?}:\n{}",
                fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: fs::read(&stdout).unwrap_or_default(),
        stderr: fs::read(&stderr).unwrap_or_default(),
    }
}

/// The container's environment: moto's static keys, its TLS endpoint by
/// host name, no IMDS, a short pull timeout; plus `extra`.
fn env(moto: &Moto, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = pullauth_aws_env(&moto.https_endpoint(MOTO_HOST));
    env.push(("ECS_IMAGE_PULL_TIMEOUT", "30s".into()));
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_string())));
    env
}

fn assert_no_secret(what: &str, out: &Output) {
    let token = format!("AWS:{MOTO_ECR_PASSWORD}");
    let needles: Vec<String> = [MOTO_ACCESS_KEY.1, MOTO_ECR_PASSWORD, token.as_str()]
        .iter()
        .flat_map(|s| secret_needles(s))
        .collect();
    for stream in [&out.stdout, &out.stderr] {
        for needle in &needles {
            assert!(
                !stream.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{what}: the output holds a secret (as {needle:?})"
            );
        }
    }
}

/// moto's request lines (`"POST / HTTP/1.1" 200`) so far: every ECR call
/// is a POST to `/`.
fn ecr_answers(moto: &Moto, status: u16) -> usize {
    moto.log()
        .lines()
        .filter(|l| l.contains(&format!("\"POST / HTTP/1.1\" {status}")))
        .count()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_scratch_image_fetches_an_ecr_token_over_tls_by_host_name() {
    let certs = scratch_dir("container-aws-certs");
    let [ca, server_cert, server_key] = make_certificates(certs.path());
    let moto = Moto::start_tls(&server_cert, &server_key);
    let image = agent_image();
    let pull = ["pull", "--json", IMAGE];

    // Trusted through AWS_CA_BUNDLE: the token is fetched (moto answers
    // 200, pullauth warns about moto's long-expired token, which it uses
    // once), and the pull then fails at the registry, not at AWS.
    let before = ecr_answers(&moto, 200);
    let out = run_image(
        &image,
        &ca,
        &env(&moto, &[("AWS_CA_BUNDLE", CA_IN_CONTAINER)]),
        &pull,
    );
    let stderr = text(&out.stderr);
    eprintln!("with AWS_CA_BUNDLE: {}\n{stderr}", out.status);
    assert_no_secret("with AWS_CA_BUNDLE", &out);
    assert!(
        ecr_answers(&moto, 200) > before,
        "moto answered no ECR call:\n{}\n{stderr}",
        moto.log()
    );
    assert!(
        stderr.contains("ECR returned a token that has already expired"),
        "no sign of the fetched token:\n{stderr}"
    );
    assert!(
        !stderr.contains("ecr:GetAuthorizationToken"),
        "an AWS failure:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
        "the failure does not name the registry:\n{stderr}"
    );

    // Without it the CA is unknown: a TLS error that says what to do, and
    // no request reaches moto's handler.
    let before = ecr_answers(&moto, 200);
    let out = run_image(&image, &ca, &env(&moto, &[]), &pull);
    let stderr = text(&out.stderr);
    eprintln!("without AWS_CA_BUNDLE: {}\n{stderr}", out.status);
    assert_no_secret("without AWS_CA_BUNDLE", &out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        "ecr:GetAuthorizationToken for registry 123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "endpoint unreachable",
        "invalid peer certificate: UnknownIssuer",
        "name that CA's PEM file in AWS_CA_BUNDLE",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
    assert_eq!(
        ecr_answers(&moto, 200),
        before,
        "an untrusted call was answered"
    );

    // A bundle that is not there: a configuration error before any call.
    let requests = moto.log().lines().count();
    let missing = "/etc/pullauth-test/missing.pem";
    let out = run_image(
        &image,
        &ca,
        &env(&moto, &[("AWS_CA_BUNDLE", missing)]),
        &pull,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("AWS_CA_BUNDLE={missing:?}: cannot read it")),
        "{stderr}"
    );
    assert_eq!(moto.log().lines().count(), requests, "{}", moto.log());
}
