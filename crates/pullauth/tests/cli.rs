//! The binary's operator tools run as a subprocess, without an engine:
//! `resolve --explain`, `config from-docker`, `completions` and `man`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const CANARY: &str = "Canary7pw";

fn pullauth(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pullauth"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pullauth starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("stdin written");
    child.wait_with_output().expect("pullauth runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("file written");
    path.display().to_string()
}

#[test]
fn explain_json_gives_every_key_a_reason_and_no_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = format!(
        r#"{{"r.io":{{"username":"bob","password":"{CANARY}1"}},"r.io/team":{{"username":"alice","password":"{CANARY}2"}},"r.io:5000":{{"username":"carol","password":"{CANARY}3"}}}}"#
    );
    let env_file = write(
        dir.path(),
        "ecs.config",
        &format!("# comment\nECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={data}\n"),
    );
    let out = pullauth(
        &[
            "resolve",
            "--explain",
            "--json",
            "--env-file",
            &env_file,
            "r.io/team/app",
            "r.io/teammate/app",
        ],
        &[],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains(CANARY) && !text(&out.stderr).contains(CANARY));
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 2);
    let reasons = |line: &Value| -> Vec<(String, String, bool)> {
        line["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| {
                (
                    k["key"].as_str().expect("key").to_owned(),
                    k["reason"].as_str().expect("reason").to_owned(),
                    k["applies"].as_bool().expect("applies"),
                )
            })
            .collect()
    };
    assert_eq!(lines[0]["winner"], "r.io/team");
    assert_eq!(lines[0]["origin"], format!("{env_file}:3"));
    assert_eq!(
        reasons(&lines[0]),
        [
            ("r.io".into(), "beaten_by_longer_namespace".into(), false),
            ("r.io/team".into(), "applies".into(), true),
            ("r.io:5000".into(), "other_port".into(), false),
        ]
    );
    assert_eq!(lines[1]["winner"], "r.io");
    assert_eq!(reasons(&lines[1])[1].1, "namespace_boundary");
    for line in &lines {
        for key in line["keys"].as_array().expect("keys") {
            for field in ["normalized", "username", "detail"] {
                assert!(key[field].is_string(), "{field} in {key}");
            }
        }
    }
}

#[test]
fn explain_table_marks_the_winner_and_names_the_origin() {
    let data = format!(r#"{{"*.example.com":{{"username":"dave","password":"{CANARY}"}}}}"#);
    let out = pullauth(
        &[
            "resolve",
            "--explain",
            "a.example.com/app",
            "a.b.example.com/app",
        ],
        &[
            ("ECS_ENGINE_AUTH_TYPE", "docker"),
            ("ECS_ENGINE_AUTH_DATA", &data),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains(CANARY));
    assert!(stdout.contains("* *.example.com"), "{stdout}");
    assert!(stdout.contains("wildcard_depth:"), "{stdout}");
    assert!(stdout.contains("(process environment)"), "{stdout}");
}

#[test]
fn from_docker_prints_two_lines_and_names_stores_on_stderr() {
    let dir = tempfile::tempdir().expect("temp dir");
    // "user:Canary7pw"
    let auth = "dXNlcjpDYW5hcnk3cHc=";
    write(
        dir.path(),
        "config.json",
        &format!(
            r#"{{"auths": {{"r.io:5000": {{"auth": "{auth}"}}, "s.io": {{}}}}, "credsStore": "pass"}}"#
        ),
    );
    let docker_config = dir.path().display().to_string();
    let out = pullauth(
        &["config", "from-docker", "--check"],
        &[("DOCKER_CONFIG", &docker_config)],
        b"",
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        text(&out.stdout),
        format!(
            "ECS_ENGINE_AUTH_TYPE=dockercfg\nECS_ENGINE_AUTH_DATA={{\"r.io:5000\":{{\"auth\":\"{auth}\"}}}}\n"
        )
    );
    assert!(
        stderr.contains(
            r#"credsStore "pass" holds the credentials of: s.io; pullauth cannot read them inline"#
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains(auth) && !stderr.contains(CANARY),
        "{stderr}"
    );
}

#[test]
fn from_docker_rejects_bad_files_with_exit_2_naming_them_without_content() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.json").display().to_string();
    let not_json = write(dir.path(), "not.json", &format!("{{\"auths\": {CANARY}"));
    let bad_auth = write(
        dir.path(),
        "bad.json",
        &format!(r#"{{"auths": {{"r.io": {{"auth": "{CANARY}"}}}}}}"#),
    );
    for (args, file) in [
        (vec!["config", "from-docker", &missing], &missing),
        (vec!["config", "from-docker", &not_json], &not_json),
        (
            vec!["config", "from-docker", "--check", &bad_auth],
            &bad_auth,
        ),
    ] {
        let out = pullauth(&args, &[], b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(file.as_str()), "{stderr}");
        assert!(!stderr.contains(CANARY), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn completions_exit_0_for_every_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = pullauth(&["completions", shell], &[], b"");
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("pullauth"), "{shell}");
    }
}

#[test]
fn man_page_is_roff_that_man_can_read() {
    let out = pullauth(&["man"], &[], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(
        page.contains("\n.TH pullauth 1"),
        "{}",
        &page[..80.min(page.len())]
    );
    assert!(page.contains("\n.SH NAME\n") && page.contains("\n.SH SYNOPSIS\n"));
    let has_man = Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_man {
        return;
    }
    let mut child = Command::new("man")
        .args(["-P", "cat", "-l", "-"])
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(page.as_bytes())
        .expect("page written");
    let shown = child.wait_with_output().expect("man runs");
    assert!(shown.status.success(), "man: {}", text(&shown.stderr));
    let rendered = text(&shown.stdout);
    for section in [
        "PULLAUTH RESOLVE",
        "PULLAUTH CONFIG FROM-DOCKER",
        "PULLAUTH TASK RUN",
    ] {
        assert!(
            rendered.contains(section),
            "{section} missing from\n{rendered}"
        );
    }
}

#[test]
fn check_shows_every_setting_with_its_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env_file = write(
        dir.path(),
        "ecs.config",
        "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=90m\nPULLAUTH_ECR=off\nPULLAUTH_AWS_TIMEOUT=5s\n",
    );
    let out = pullauth(&["check", "--env-file", &env_file], &[], b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{stdout}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION"),
        format!("1h 30m {env_file}:1")
    );
    assert_eq!(row("PULLAUTH_ECR"), format!("off {env_file}:2"));
    assert_eq!(row("PULLAUTH_AWS_TIMEOUT"), format!("5s {env_file}:3"));
    assert_eq!(row("ECS_IMAGE_PULL_TIMEOUT"), "2h default");
}

// Regression (issue 17, finding 2): `resolve --explain` said "no key
// applies: anonymous" for an ECR image while `resolve --json` said ECR.
// For an ECR image, a helper image, a key image and an anonymous one, the
// explained source is the one `--json` reports, exactly one kind applies,
// and the losers say why (ECR lost to a key; a helper lost to inline auth).
#[test]
fn explain_and_json_agree_on_the_source() {
    const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    let data = format!(
        r#"{{"auths":{{"r.io":{{"username":"u","password":"{CANARY}"}},"{ECR}/team":{{"username":"u","password":"{CANARY}"}}}},"credHelpers":{{"helped.example.com":"pass","r.io":"pass"}}}}"#
    );
    let env = [
        ("ECS_ENGINE_AUTH_TYPE", "docker"),
        ("ECS_ENGINE_AUTH_DATA", data.as_str()),
        ("PULLAUTH_ECR", "true"),
    ];
    let images = [
        (
            format!("{ECR}/app:1"),
            "ecr",
            "ecr account 123456789012 region us-east-1",
        ),
        (
            format!("{ECR}/team/app:1"),
            "key",
            "key \"123456789012.dkr.ecr.us-east-1.amazonaws.com/team\"",
        ),
        ("helped.example.com/app".to_owned(), "helper", "helper pass"),
        ("r.io/app".to_owned(), "key", "key \"r.io\""),
        ("other.example/app".to_owned(), "anonymous", "anonymous"),
    ];
    let lines = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["resolve"];
        all.extend_from_slice(args);
        all.extend(images.iter().map(|(i, _, _)| i.as_str()));
        let out = pullauth(&all, &env, b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(!stdout.contains(CANARY) && !text(&out.stderr).contains(CANARY));
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect()
    };
    let plain = lines(&["--json"]);
    let explained = lines(&["--explain", "--json"]);
    assert_eq!(plain.len(), images.len());
    assert_eq!(explained.len(), images.len());
    for (((image, kind, label), plain), explained) in images.iter().zip(&plain).zip(&explained) {
        assert_eq!(plain["source"], *kind, "{image}");
        assert_eq!(plain["from"], *label, "{image}");
        assert_eq!(explained["source"], plain["source"], "{image}");
        assert_eq!(explained["from"], plain["from"], "{image}");
        let applying: Vec<&Value> = explained["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .filter(|s| s["applies"] == true)
            .collect();
        assert_eq!(applying.len(), 1, "{image}: {explained}");
        assert_eq!(applying[0]["kind"], *kind, "{image}");
        assert_eq!(applying[0]["source"], *label, "{image}");
    }
    let reason = |line: &Value, kind: &str| {
        line["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .find(|s| s["kind"] == kind)
            .map(|s| s["reason"].as_str().expect("reason").to_owned())
            .expect("a verdict per kind")
    };
    assert_eq!(reason(&explained[1], "ecr"), "outranked");
    assert_eq!(reason(&explained[3], "helper"), "outranked");
    assert_eq!(reason(&explained[4], "ecr"), "not_ecr_host");
    // The table view names the source too.
    let mut args = vec!["resolve", "--explain"];
    args.push(images[0].0.as_str());
    let out = pullauth(&args, &env, b"");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("source ecr account 123456789012 region us-east-1"),
        "{stdout}"
    );
    assert!(!stdout.contains("anonymous,") && !stdout.contains("no key applies: anonymous"));
}

/// `check` beside the ECS agent: each combination of the ECS agent's own
/// settings that makes prefetch useless or loop, and each value the ECS
/// agent ignores, is a warning on stdout, given once, naming the variables
/// and where they are written; the exit status stays 0 and no secret of the
/// same file is printed.
#[rstest::rstest]
#[case::default_behavior_pulls_again(
    "",
    &["warning: ECS_IMAGE_PULL_BEHAVIOR=default (default): the ECS agent pulls every image again \
       when a task starts"]
)]
#[case::untracked_cleanup_loops(
    "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true\n",
    &["warning: ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true ({file}:4): every 30m \
       … pullauth pulls it again, in a loop. ECS_EXCLUDE_UNTRACKED_IMAGE is unset."]
)]
#[case::prefer_cached_turns_cleanup_off(
    "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached\n",
    &["warning: the ECS agent's automated image cleanup does not run \
       (ECS_IMAGE_PULL_BEHAVIOR=prefer-cached ({file}:3), which turns it off)"]
)]
#[case::cleanup_disabled(
    "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_DISABLE_IMAGE_CLEANUP=true\n",
    &["warning: the ECS agent's automated image cleanup does not run \
       (ECS_DISABLE_IMAGE_CLEANUP=true ({file}:4)): nothing on this instance removes images"]
)]
#[case::invalid_interval(
    "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached\nECS_IMAGE_CLEANUP_INTERVAL=1d\n",
    &["warning: ECS_IMAGE_CLEANUP_INTERVAL=\"1d\" ({file}:4) is not a duration in Go's syntax; \
       the ECS agent ignores it and uses 30m",
      "warning: the ECS agent's automated image cleanup does not run"]
)]
#[case::invalid_task_cleanup_wait(
    "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=0s\n",
    &["warning: ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=\"0s\" ({file}:4) is below the ECS agent's \
       minimum of 1s; the ECS agent ignores it and uses 3h"]
)]
#[case::pasted_secret_in_the_exclusion_list(
    "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_EXCLUDE_UNTRACKED_IMAGE=a:1 ECS_ENGINE_AUTH_DATA={\"r.io\":{\"password\":\"Canary7pw0\"}}\n",
    &["warning: ECS_EXCLUDE_UNTRACKED_IMAGE ({file}:4) holds ECS_ENGINE_AUTH_DATA=... after its value"]
)]
#[case::secret_in_a_number(
    "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_NUM_IMAGES_DELETE_PER_CYCLE=u:Canary7pw0\n",
    &["warning: ECS_NUM_IMAGES_DELETE_PER_CYCLE ({file}:4) is not an integer (12 characters, not \
       shown); the ECS agent ignores it and uses 5"]
)]
#[case::nothing_to_say("ECS_IMAGE_PULL_BEHAVIOR=once\n", &[])]
fn check_warns_about_the_ecs_agents_settings(#[case] lines: &str, #[case] expected: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ecs.config");
    let file = path.display().to_string();
    write(
        dir.path(),
        "ecs.config",
        &format!(
            "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={{\"r.io\":{{\"username\":\"u\",\"password\":\"{CANARY}\"}}}}\n{lines}"
        ),
    );
    let out = pullauth(&["check", "--env-file", &file], &[], b"");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.ends_with("configuration is valid\n"), "{stdout}");
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), expected.len(), "{stdout}");
    // Each row: the fragments of one warning, in order, separated by " … ".
    for (warning, needles) in warnings.iter().zip(expected) {
        for needle in needles.split(" … ") {
            let needle = needle.replace("{file}", &file);
            assert!(warning.contains(&needle), "{needle}\nnot in\n{warning}");
        }
    }
    // Once: on stdout only, not logged again on stderr.
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(
        !stdout.contains(CANARY) && !stderr.contains(CANARY),
        "{stdout}{stderr}"
    );
}

#[test]
fn check_shows_the_ecs_agents_cleanup_settings_with_their_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env_file = write(
        dir.path(),
        "ecs.config",
        "ECS_IMAGE_CLEANUP_INTERVAL=1h30m\nECS_NUM_IMAGES_DELETE_PER_CYCLE=2\n\
         ECS_EXCLUDE_UNTRACKED_IMAGE=a:1,r.io/b:2\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=True\n\
         ECS_IMAGE_MINIMUM_CLEANUP_AGE=5m\nECS_INSTANCE_ATTRIBUTES={\"stack\": \"prod\", \"team\": \"payments\"}\n",
    );
    let out = pullauth(&["check", "--env-file", &env_file], &[], b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{stdout}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("ECS_IMAGE_CLEANUP_INTERVAL"),
        format!("1h 30m {env_file}:1")
    );
    assert_eq!(
        row("ECS_NUM_IMAGES_DELETE_PER_CYCLE"),
        format!("2 {env_file}:2")
    );
    assert_eq!(
        row("ECS_EXCLUDE_UNTRACKED_IMAGE"),
        format!("2 images {env_file}:3")
    );
    assert_eq!(
        row("ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP"),
        format!("true {env_file}:4")
    );
    assert_eq!(
        row("ECS_IMAGE_MINIMUM_CLEANUP_AGE"),
        format!("5m {env_file}:5")
    );
    assert_eq!(row("NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE"), "1h default");
    assert_eq!(
        row("ECS_INSTANCE_ATTRIBUTES"),
        format!("stack,team {env_file}:6")
    );
    assert_eq!(row("ECS_DISABLE_IMAGE_CLEANUP"), "false default");
    // The list's items are never printed.
    assert!(!stdout.contains("r.io/b:2"), "{stdout}");
}

// Regression (issue 25): `resolve --explain` told people to pass
// `--repository-credentials`, a flag `resolve` does not have. Every flag its
// explanation mentions, in text and JSON, must be one `resolve` accepts.
#[test]
fn resolve_explain_advises_no_flag_resolve_lacks() {
    let env = [
        ("ECS_ENGINE_AUTH_TYPE", "docker"),
        (
            "ECS_ENGINE_AUTH_DATA",
            r#"{"r.io":{"username":"u","password":"p"}}"#,
        ),
        ("PULLAUTH_ECR", "false"),
    ];
    let images = [
        "r.io/app",
        "other.example/app",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/app",
        "public.ecr.aws/team/app",
    ];
    let help = pullauth(&["resolve", "--help"], &[], b"");
    assert!(help.status.success());
    let help = text(&help.stdout);
    for json in [false, true] {
        let mut args = vec!["resolve", "--explain"];
        if json {
            args.push("--json");
        }
        args.extend(images);
        let out = pullauth(&args, &env, b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(shown.contains("repositoryCredentials"), "{shown}");
        let flags: Vec<&str> = shown
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|word| word.starts_with("--") && word.len() > 2)
            .collect();
        for flag in flags {
            assert!(
                help.contains(flag),
                "resolve --explain mentions {flag}, which resolve lacks:\n{shown}"
            );
        }
    }
}
