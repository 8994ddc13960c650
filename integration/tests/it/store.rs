//! The state file shared by two processes: `pullauth serve` and
//! `pullauth pull --pull-behavior once` read `ECS_DATADIR` from the same
//! ecs.config, so the CLI must work while the agent runs, and neither may
//! damage what the other wrote (issue #9).

use std::process::Command;
use std::time::Duration;

use pullauth_integration::agent::{
    AgentSpec, docker_auth_config, random_token, scratch_dir, taskdef,
};
use pullauth_integration::{Harness, Outcome, pullauth_bin};

/// A `pullauth pull` that takes longer than this is a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// `pullauth pull --pull-behavior once --json IMAGE` with the agent's env
/// file (and so its `ECS_DATADIR`) and a clean environment.
fn pull_once(spec: &AgentSpec, image: &str) -> Outcome {
    let mut cmd = Command::new(pullauth_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DOCKER_HOST", Harness::get().docker_host())
        .arg("pull")
        .arg("--env-file")
        .arg(spec.env_file())
        .args(["--pull-behavior", "once", "--json", image]);
    Outcome::run_bounded(&mut cmd, b"", RUN_TIMEOUT)
}

// Regression test for issue #9: redb held an exclusive lock on the state file
// for the agent's lifetime, so `pull --pull-behavior once` failed (exit 2)
// whenever `serve` ran on the same ECS_DATADIR. Proves both work at once:
// the CLI pulls, then answers from the shared image record ("cached"), the
// agent records and serves a task meanwhile, and after a restart the task
// reads back unchanged.
#[test]
fn pull_once_works_while_the_agent_runs() {
    let h = Harness::get();
    let alpha = &h.alpha;
    let repo = format!("shared-state/r{}", random_token(10).to_ascii_lowercase());
    h.push_fixture(alpha, &repo, "1", ("alice", alpha.password("alice")));
    let image = alpha.image_ref(&repo, "1");
    let other_repo = format!("shared-state/r{}", random_token(10).to_ascii_lowercase());
    h.push_fixture(alpha, &other_repo, "1", ("alice", alpha.password("alice")));
    let other = alpha.image_ref(&other_repo, "1");

    let data = scratch_dir("shared-state");
    let data_dir = data.path().to_str().expect("UTF-8 path");
    let auth = docker_auth_config(&[(&alpha.addr(), "alice", alpha.password("alice"))], &[]);
    // One ecs.config for both processes, as on a real host.
    let spec = AgentSpec::new()
        .data_dir(data.path())
        .env_file_text(&format!("{auth}\nECS_DATADIR={data_dir}\n"));
    let agent = spec.start();

    let first = pull_once(&spec, &image);
    first.assert_code(0).assert_no_panic();
    assert_eq!(first.single()["status"], "pulled", "{first:?}");
    let second = pull_once(&spec, &image);
    second.assert_code(0).assert_no_panic();
    assert_eq!(
        second.single()["status"],
        "cached",
        "the second `once` pull must answer from the record the first wrote: {second:?}"
    );

    let task = agent.submit(&taskdef("shared", &[("app", &other, true)]));
    let arn = task["Arn"].as_str().expect("Arn").to_string();
    let done = agent.wait_final(&arn);
    assert_eq!(done["KnownStatus"], "PULLED", "{done:#}");
    assert!(
        agent.tasks().iter().any(|t| t["Arn"] == arn.as_str()),
        "/v1/tasks does not list the task"
    );
    // The CLI still works after the agent wrote.
    pull_once(&spec, &image).assert_code(0);
    assert!(agent.terminate().success());

    let agent = spec.start();
    assert_eq!(
        agent.task(&arn),
        Some(done),
        "the task changed across a restart"
    );
    assert!(agent.terminate().success());
    assert!(!spec.logs().contains("panicked"), "{}", spec.log_tail(30));
}
