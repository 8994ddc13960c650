//! The engine and the paths around it, hardened (issue #8): an engine that
//! accepts connections and never answers fails pulls (and `serve`'s
//! startup) within a minute instead of hanging, and frees the agent's pull
//! slot; `DOCKER_HOST=tcp://` speaks TLS with `DOCKER_TLS_VERIFY`, and plain
//! TCP to another host is refused before credentials could cross the
//! network; a `--control-socket` path naming anything but a socket is
//! refused and left as it was; SIGHUP with nothing to re-read says so
//! instead of counting a reload.
//!
//! Engines that are wedged or need TLS are test-owned ([`PrivateEngine`])
//! or a [`Stall`]; the shared harness engine is never touched.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pullauth_integration::agent::{
    AgentSpec, READY_MESSAGE, RunningAgent, container, docker_auth_config, docker_auth_data,
    ecs_config, random_token, scratch_dir, secret_needles, taskdef, wait_for,
};
use pullauth_integration::{Harness, Outcome, PrivateEngine, Stall, free_port, pullauth_command};

/// What the issue allows a wedged engine to cost: a pull (or `serve`'s
/// startup) fails within a minute.
const WEDGED_BOUND: Duration = Duration::from_secs(60);
/// A refusal that needs no network must come at once; generous for a
/// loaded machine.
const REFUSAL_BOUND: Duration = Duration::from_secs(20);
/// Anything else that must finish (a real pull through a private engine).
const RUN_BOUND: Duration = Duration::from_secs(180);
/// A registry key nobody serves, for tests that never reach a registry.
const NOWHERE: &str = "registry.example:5000";

/// A repository name nobody else uses, under `prefix`.
fn fresh_repo(prefix: &str) -> String {
    format!("{prefix}/r{}", random_token(10).to_ascii_lowercase())
}

/// The container named `name` in a task.
/// `pullauth serve` arguments that keep everything in `dir`.
fn serve_args(dir: &Path) -> (String, PathBuf) {
    (
        format!("127.0.0.1:{}", free_port()),
        dir.join("control.sock"),
    )
}

/// Runs `cmd` to the end within `bound` (a longer run fails the test) and
/// reports how long it took.
fn run_within(what: &str, cmd: &mut Command, bound: Duration) -> Outcome {
    let started = Instant::now();
    let out = Outcome::run_bounded(cmd, b"", bound);
    eprintln!(
        "{what}: exit {:?} after {:?}; last line: {}",
        out.code,
        started.elapsed(),
        out.last_stderr_line()
    );
    out
}

// ---------------------------------------------------------------------------
// A wedged engine
// ---------------------------------------------------------------------------

// Proves an engine that accepts the connection and never answers fails `pullauth pull` (exit 1) and `pullauth serve` (exit 1, no control socket) within a minute, naming the address and saying it did not answer, without printing the configured password; a SIGHUP while serve waits for the engine does not end it (its exit is still the engine's 1, not the signal).
#[test]
fn wedged_engine_fails_pull_within_a_minute() {
    let stall = Stall::start();
    let docker_host = format!("tcp://{}", stall.addr());
    let password = format!("wanda-{}", random_token(20));
    let dir = scratch_dir("wedged");
    let config = ecs_config(
        dir.path(),
        &docker_auth_config(&[(NOWHERE, "wanda", &password)], &[]),
    );
    let image = format!("{NOWHERE}/team/app:1");
    let needles = secret_needles(&password);
    let said = [
        format!("cannot reach the Docker Engine at {docker_host}"),
        "did not answer".to_string(),
    ];
    let said: Vec<&str> = said.iter().map(String::as_str).collect();

    let out = run_within(
        "pull via a wedged engine",
        &mut pullauth_command("pull", &docker_host, &config, &[], &[&image]),
        WEDGED_BOUND,
    );
    out.assert_code(1)
        .assert_no_panic()
        .assert_no_secret(&needles)
        .assert_stderr_has(&said);
    assert!(
        stall.connections() >= 1,
        "pullauth never connected to the stall"
    );

    // A SIGHUP while serve is still starting (here: waiting for the engine)
    // is kept for later, not the signal's default end of the process.
    let before = stall.connections();
    let (listen, socket) = serve_args(dir.path());
    let socket_arg = socket.to_str().expect("UTF-8 path");
    let started = Instant::now();
    let out = Outcome::run_bounded_with(
        &mut pullauth_command(
            "serve",
            &docker_host,
            &config,
            &[],
            &["--listen", &listen, "--control-socket", socket_arg],
        ),
        b"",
        WEDGED_BOUND,
        |serve| {
            wait_for("serve to connect to the stalled engine", || {
                (stall.connections() > before).then_some(())
            });
            serve.hangup();
        },
    );
    eprintln!(
        "serve via a wedged engine, SIGHUP while it waits: exit {:?} after {:?}",
        out.code,
        started.elapsed()
    );
    out.assert_code(1)
        .assert_no_panic()
        .assert_no_secret(&needles)
        .assert_stderr_has(&said);
    assert!(stall.connections() > before, "serve never tried the engine");
    assert!(
        !socket.exists(),
        "serve created its control socket before finding the engine wedged"
    );
}

// Proves a SIGHUP that comes while serve starts (here: while it waits for a frozen engine) neither ends it nor is lost: once the engine answers and the agent is ready, the signal's reload runs (trigger=sighup, reloads_total 1) and applies the file as it is then.
#[test]
fn sighup_during_start_reloads_once_the_agent_is_ready() {
    let engine = PrivateEngine::start();
    let first = format!("una-{}", random_token(20));
    let second = format!("vic-{}", random_token(20));
    // --no-watch: the reload counted is the signal's.
    let spec = AgentSpec::new()
        .env("DOCKER_HOST", engine.docker_host())
        .arg("--no-watch")
        .env_file_text(&docker_auth_config(&[(NOWHERE, "una", &first)], &[]));
    let frozen = engine.freeze();
    let agent = spec.start_with(|serve| {
        // Logged just before serve asks the engine, which cannot answer.
        wait_for("serve to reach the engine", || {
            spec.logs().contains("state lives in memory").then_some(())
        });
        spec.write_env_file(&docker_auth_config(&[(NOWHERE, "vic", &second)], &[]));
        serve.hangup();
        frozen.thaw();
    });
    assert_eq!(agent.wait_metric("pullauth_config_reloads_total", 1.0), 1.0);
    let registries = agent.get_json("/v1/registries")["Registries"].clone();
    assert_eq!(registries[0]["Username"], "vic", "{registries}");
    let logs = spec.logs();
    let ready = logs.find(READY_MESSAGE).expect("the ready line");
    let reloaded = logs
        .find("configuration reloaded")
        .expect("the reload's line");
    assert!(ready < reloaded, "reloaded before ready:\n{logs}");
    assert!(
        logs[reloaded..]
            .lines()
            .next()
            .is_some_and(|l| l.contains("trigger=sighup")),
        "{logs}"
    );
    assert!(agent.terminate().success());
}

// Proves a dockerd that wedges (SIGSTOP) while the agent runs with one pull slot fails the task's pull as engine_unreachable (PullError naming the engine and "did not answer", not "stalled") instead of holding the slot, and that once dockerd runs again the next task gets the slot and is PULLED.
#[test]
fn engine_wedged_during_operation_fails_pulls_and_frees_slots() {
    let h = Harness::get();
    let engine = PrivateEngine::start();
    let alpha = &h.alpha;
    let repo = fresh_repo("wedged");
    h.push_fixture(alpha, &repo, "1", ("alice", alpha.password("alice")));
    h.push_fixture(alpha, &repo, "2", ("alice", alpha.password("alice")));
    let (first, second) = (alpha.image_ref(&repo, "1"), alpha.image_ref(&repo, "2"));
    let spec = AgentSpec::new()
        .env("DOCKER_HOST", engine.docker_host())
        .env("ECS_IMAGE_PULL_INACTIVITY_TIMEOUT", "3s")
        // No fallback to a cached image, whose lookup would also find the
        // engine wedged: only the check after the silent start can.
        .env("ECS_IMAGE_PULL_BEHAVIOR", "always")
        .arg("--max-concurrent-pulls")
        .arg("1")
        .env_file_text(&docker_auth_config(
            &[(&alpha.addr(), "alice", alpha.password("alice"))],
            &[],
        ));
    let agent = spec.start();

    let frozen = engine.freeze();
    let started = Instant::now();
    let task = agent.submit(&taskdef("wedged", &[("app", &first, true)]));
    let done = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    eprintln!(
        "wedged engine: task {} after {:?}",
        done["KnownStatus"],
        started.elapsed()
    );
    assert_eq!(done["KnownStatus"], "STOPPED", "{done:#}");
    let app = container(&done, "app");
    assert_eq!(app["KnownStatus"], "STOPPED", "{app}");
    let error = app["PullError"].as_str().expect("PullError");
    for needle in [
        &format!("cannot reach the Docker Engine at {}", engine.docker_host()) as &str,
        "did not answer",
    ] {
        assert!(
            error.contains(needle),
            "PullError lacks {needle:?}: {error}"
        );
    }
    assert_eq!(
        agent.metric("pullauth_pulls_failed_total{class=\"engine_unreachable\"}"),
        1.0
    );
    assert_eq!(
        agent.metric("pullauth_pulls_failed_total{class=\"stalled\"}"),
        0.0
    );
    frozen.thaw();

    // The one slot is free again: the next task pulls.
    let task = agent.submit(&taskdef("thawed", &[("app", &second, true)]));
    let done = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(
        done["KnownStatus"],
        "PULLED",
        "{done:#}\n{}",
        spec.log_tail(20)
    );
    assert!(agent.terminate().success());
    let logs = spec.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(
        !logs.contains(alpha.password("alice")),
        "the log leaks a password"
    );
}

// ---------------------------------------------------------------------------
// The control socket path
// ---------------------------------------------------------------------------

// Proves `serve --control-socket PATH` refuses (exit 2, naming PATH and what is there) a regular file, a directory and a symlink to a file, and leaves each as it was: content, type, symlink target, and nothing left next to it.
#[test]
fn control_socket_path_that_is_not_a_socket_is_refused_untouched() {
    let h = Harness::get();
    let dir = scratch_dir("socket-path");
    let config = ecs_config(dir.path(), "ECS_CLUSTER=socket-path\n");
    let things = dir.path().join("things");
    fs::create_dir(&things).expect("mkdir things");
    let file = things.join("precious.conf");
    fs::write(&file, "ECS_CLUSTER=prod\n").expect("write file");
    let directory = things.join("data");
    fs::create_dir(&directory).expect("mkdir data");
    fs::write(directory.join("keep"), "kept\n").expect("write keep");
    let target = things.join("target.conf");
    fs::write(&target, "the target\n").expect("write target");
    let link = things.join("pullauth.sock");
    symlink(&target, &link).expect("symlink");
    let entries = || {
        let mut names: Vec<String> = fs::read_dir(&things)
            .expect("read things")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = entries();

    for (path, kind) in [
        (&file, "a regular file"),
        (&directory, "a directory"),
        (&link, "a symbolic link"),
    ] {
        let listen = format!("127.0.0.1:{}", free_port());
        let out = run_within(
            &format!("serve --control-socket {kind}"),
            &mut pullauth_command(
                "serve",
                h.docker_host(),
                &config,
                &[],
                &[
                    "--listen",
                    &listen,
                    "--control-socket",
                    path.to_str().expect("UTF-8 path"),
                ],
            ),
            WEDGED_BOUND,
        );
        out.expect(
            kind,
            2,
            &[
                &format!("--control-socket {}", path.display()),
                kind,
                "not a socket",
            ],
        )
        .assert_no_panic();
    }

    assert_eq!(
        fs::read_to_string(&file).expect("the file is still there"),
        "ECS_CLUSTER=prod\n"
    );
    assert!(fs::symlink_metadata(&file).expect("stat").is_file());
    assert!(fs::symlink_metadata(&directory).expect("stat").is_dir());
    assert_eq!(
        fs::read_to_string(directory.join("keep")).expect("the directory keeps its file"),
        "kept\n"
    );
    assert_eq!(fs::read_dir(&directory).expect("read data").count(), 1);
    assert!(
        fs::symlink_metadata(&link)
            .expect("the link is still there")
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_link(&link).expect("readlink"), target);
    assert_eq!(fs::read_to_string(&target).expect("target"), "the target\n");
    assert_eq!(entries(), before, "something was added next to the paths");
}

// ---------------------------------------------------------------------------
// TCP engines: TLS, and plain TCP to another host
// ---------------------------------------------------------------------------

/// Runs `openssl ARGS` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for IP 127.0.0.1 and a client certificate,
/// written by the `openssl` CLI into `dir`: `ca.pem`, `server-cert.pem`,
/// `server-key.pem`, and `client/` laid out as `DOCKER_CERT_PATH` expects
/// (`ca.pem`, `cert.pem`, `key.pem`).
fn tls_material(dir: &Path) -> PathBuf {
    pullauth_integration::ensure_tools(&[("openssl", "openssl")]);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=pullauth-it CA",
        ],
    );
    let issue = |name: &str, cn: &str, extensions: &str| {
        let ext = format!("{name}.ext");
        fs::write(dir.join(&ext), extensions).expect("write extensions");
        let (key, csr, cert) = (
            format!("{name}-key.pem"),
            format!("{name}.csr"),
            format!("{name}-cert.pem"),
        );
        openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", cn,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
    };
    issue(
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    issue(
        "client",
        "/CN=pullauth-it client",
        "extendedKeyUsage=clientAuth\n",
    );
    let client = dir.join("client");
    fs::create_dir(&client).expect("mkdir client");
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("client-cert.pem", "cert.pem"),
        ("client-key.pem", "key.pem"),
    ] {
        fs::copy(dir.join(from), client.join(to)).expect("copy client material");
    }
    client
}

// Proves `DOCKER_HOST=tcp://` with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH pulls a private image through a --tlsverify dockerd as the configured user; without DOCKER_TLS_VERIFY the same pull fails (exit 1) before reaching the registry; a DOCKER_CERT_PATH without key.pem is exit 2 naming that file.
#[test]
fn tls_engine_is_used_with_docker_tls_verify() {
    let h = Harness::get();
    let certs = scratch_dir("tls");
    let client = tls_material(certs.path());
    let port = free_port();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let file = |name: &str| certs.path().join(name).display().to_string();
    let (ca, cert, key) = (
        file("ca.pem"),
        file("server-cert.pem"),
        file("server-key.pem"),
    );
    let engine = PrivateEngine::start_with(&[
        "--host",
        &tcp,
        "--tlsverify",
        "--tlscacert",
        &ca,
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
    ]);
    let alpha = &h.alpha;
    let repo = fresh_repo("tls");
    h.push_fixture(alpha, &repo, "1", ("alice", alpha.password("alice")));
    let image = alpha.image_ref(&repo, "1");
    let dir = scratch_dir("tls-config");
    let config = ecs_config(
        dir.path(),
        &docker_auth_config(&[(&alpha.addr(), "bob", alpha.password("bob"))], &[]),
    );
    let needles = secret_needles(alpha.password("bob"));
    let client_dir = client.to_str().expect("UTF-8 path");

    let mark = alpha.log_mark();
    let out = run_within(
        "pull over TLS",
        &mut pullauth_command(
            "pull",
            &tcp,
            &config,
            &[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", client_dir)],
            &[&image],
        ),
        RUN_BOUND,
    );
    out.assert_code(0)
        .assert_no_panic()
        .assert_no_secret(&needles);
    let users = alpha.users_since_in(mark, &repo);
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "bob"),
        "the registry saw {users:?}, not bob"
    );
    let inspect = engine
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &image])
        .output()
        .expect("docker image inspect");
    assert!(
        inspect.status.success(),
        "the TLS engine does not have {image}"
    );

    // The same engine without TLS: it answers plain HTTP with 400.
    let mark = alpha.log_mark();
    let out = run_within(
        "pull over plain TCP to a TLS port",
        &mut pullauth_command(
            "pull",
            &tcp,
            &config,
            &[("DOCKER_CERT_PATH", client_dir)],
            &["--pull-behavior", "always", &image],
        ),
        RUN_BOUND,
    );
    out.assert_code(1)
        .assert_no_panic()
        .assert_no_secret(&needles)
        .assert_stderr_has(&[&tcp, "status 400", "DOCKER_TLS_VERIFY"]);
    assert_eq!(
        alpha.users_since_in(mark, &repo),
        Vec::<String>::new(),
        "the registry saw a pull through the plain-TCP attempt"
    );

    // A certificate directory without the client key.
    let no_key = certs.path().join("no-key");
    fs::create_dir(&no_key).expect("mkdir no-key");
    for name in ["ca.pem", "cert.pem"] {
        fs::copy(client.join(name), no_key.join(name)).expect("copy");
    }
    let missing = no_key.join("key.pem");
    let out = run_within(
        "pull with a DOCKER_CERT_PATH lacking key.pem",
        &mut pullauth_command(
            "pull",
            &tcp,
            &config,
            &[
                ("DOCKER_TLS_VERIFY", "1"),
                ("DOCKER_CERT_PATH", no_key.to_str().expect("UTF-8 path")),
            ],
            &[&image],
        ),
        REFUSAL_BOUND,
    );
    out.assert_code(2)
        .assert_no_panic()
        .assert_no_secret(&needles)
        .assert_stderr_has(&[&missing.display().to_string(), "DOCKER_CERT_PATH"]);
}

// Proves plain TCP to another host (TEST-NET 192.0.2.1, never connected) with a key for the image's registry is refused at once, exit 2, by `pullauth pull` and by `pullauth serve`, with a message naming the address and DOCKER_TLS_VERIFY and never the password.
#[test]
fn plain_tcp_to_another_host_is_refused_when_credentials_would_be_sent() {
    let remote = "tcp://192.0.2.1:2375";
    let password = format!("pete-{}", random_token(20));
    let dir = scratch_dir("plain-remote");
    let config = ecs_config(
        dir.path(),
        &docker_auth_config(&[(NOWHERE, "pete", &password)], &[]),
    );
    let needles = secret_needles(&password);
    let said = [remote, "plain TCP", "DOCKER_TLS_VERIFY"];
    let image = format!("{NOWHERE}/team/app:1");

    let out = run_within(
        "pull over plain TCP to another host",
        &mut pullauth_command("pull", remote, &config, &[], &[&image]),
        REFUSAL_BOUND,
    );
    out.assert_code(2)
        .assert_no_panic()
        .assert_no_secret(&needles)
        .assert_stderr_has(&said);

    let (listen, socket) = serve_args(dir.path());
    let out = run_within(
        "serve over plain TCP to another host",
        &mut pullauth_command(
            "serve",
            remote,
            &config,
            &[],
            &[
                "--listen",
                &listen,
                "--control-socket",
                socket.to_str().expect("UTF-8 path"),
            ],
        ),
        REFUSAL_BOUND,
    );
    out.assert_code(2)
        .assert_no_panic()
        .assert_no_secret(&needles)
        .assert_stderr_has(&said);
    assert!(!socket.exists(), "serve created its control socket anyway");
}

// ---------------------------------------------------------------------------
// SIGHUP with nothing to re-read
// ---------------------------------------------------------------------------

const SIGHUP_IGNORED: &str =
    "SIGHUP ignored: the configuration comes only from the process environment";

/// Sends SIGHUP and waits until the agent's log has one more line saying
/// it was ignored.
fn sighup_is_ignored(spec: &AgentSpec, agent: &RunningAgent) {
    let count = || spec.logs().matches(SIGHUP_IGNORED).count();
    let before = count();
    agent.sighup();
    wait_for("the \"SIGHUP ignored\" warning", || {
        (count() > before).then_some(())
    });
}

// Proves SIGHUP to an agent configured only by its environment (no --env-file, or --env-file-optional naming an absent file) logs the "SIGHUP ignored" warning and counts no reload, keeping its keys; and that once the optional file exists, SIGHUP does reload it.
#[test]
fn sighup_without_a_file_warns_and_does_not_count_a_reload() {
    let password = format!("hugo-{}", random_token(20));
    let auth = docker_auth_data(&[(NOWHERE, "hugo", &password)]);
    let registries = |agent: &RunningAgent| agent.get_json("/v1/registries")["Registries"].clone();

    // No --env-file at all.
    let spec = AgentSpec::new()
        .no_env_file()
        .env("ECS_ENGINE_AUTH_TYPE", "docker")
        .env("ECS_ENGINE_AUTH_DATA", &auth);
    let agent = spec.start();
    assert_eq!(registries(&agent)[0]["Username"], "hugo");
    sighup_is_ignored(&spec, &agent);
    assert_eq!(agent.metric("pullauth_config_reloads_total"), 0.0);
    assert_eq!(agent.metric("pullauth_config_reload_failures_total"), 0.0);
    assert_eq!(registries(&agent)[0]["Username"], "hugo");
    assert_eq!(agent.get("/healthz").status, 200);
    assert!(agent.terminate().success());
    assert!(
        !spec.logs().contains(&password),
        "the log leaks the password"
    );

    // --env-file-optional naming a file that does not exist (yet).
    let optional = scratch_dir("optional");
    let absent = optional.path().join("ecs.config");
    // --no-watch: the file appearing would reload it too, and the count
    // below is SIGHUP's.
    let spec = AgentSpec::new()
        .no_env_file()
        .arg("--no-watch")
        .arg("--env-file")
        .arg(absent.to_str().expect("UTF-8 path"))
        .arg("--env-file-optional")
        .env("ECS_ENGINE_AUTH_TYPE", "docker")
        .env("ECS_ENGINE_AUTH_DATA", &auth);
    let agent = spec.start();
    sighup_is_ignored(&spec, &agent);
    assert_eq!(agent.metric("pullauth_config_reloads_total"), 0.0);
    assert_eq!(registries(&agent)[0]["Username"], "hugo");

    // The file appears: now there is something to reload.
    fs::write(
        &absent,
        docker_auth_config(
            &[(NOWHERE, "ida", &format!("ida-{}", random_token(20)))],
            &[],
        ),
    )
    .expect("write the optional file");
    agent.sighup();
    assert_eq!(agent.wait_metric("pullauth_config_reloads_total", 1.0), 1.0);
    assert_eq!(registries(&agent)[0]["Username"], "ida");
    assert!(agent.terminate().success());
}
