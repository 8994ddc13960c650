//! Reloading on file change (issue #11): `pullauth serve` notices, without
//! SIGHUP, an in-place write of `--env-file`, a new file renamed into place,
//! and a Kubernetes-style ConfigMap symlink swap; validates, logs and
//! counts the reload as SIGHUP does (`trigger=file`); keeps the old
//! configuration on a bad edit without printing its secrets; counts nothing
//! for unrelated files in the same directory; and with `--no-watch` leaves
//! reloads to SIGHUP. Every agent is stopped with SIGTERM at the end, which
//! proves the watcher does not keep it alive.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pullauth_integration::agent::{
    AgentSpec, RunningAgent, docker_auth_config, random_token, repo_requests, scratch_dir,
    secret_needles, taskdef, wait_for,
};
use pullauth_integration::{Harness, Registry};
use serde_json::Value;

/// Logged (at debug) when a file event led to a check that found the same
/// bytes.
const UNCHANGED: &str = "configuration files unchanged; not reloading";

/// Pushes a fresh fixture as `user` and returns (repository, image ref).
fn push(registry: &Registry, prefix: &str, user: &str) -> (String, String) {
    let repo = format!("{prefix}/r{}", random_token(10).to_ascii_lowercase());
    Harness::get().push_fixture(registry, &repo, "1", (user, registry.password(user)));
    let image = registry.image_ref(&repo, "1");
    (repo, image)
}

/// An ecs.config giving `user` (with their harness password) for `registry`.
fn config_for(registry: &Registry, user: &str) -> String {
    docker_auth_config(
        &[(&registry.addr(), user, registry.password(user))],
        &[("ECS_CLUSTER", "watch")],
    )
}

/// The username `/v1/registries` shows for the only key.
fn username(agent: &RunningAgent) -> Value {
    let registries = agent.get_json("/v1/registries")["Registries"].clone();
    assert_eq!(registries.as_array().map(Vec::len), Some(1), "{registries}");
    registries[0]["Username"].clone()
}

/// Waits until the agent has applied `n` reloads and shows `user`.
fn wait_reloaded(agent: &RunningAgent, n: f64, user: &str) {
    assert_eq!(agent.wait_metric("pullauth_config_reloads_total", n), n);
    assert_eq!(username(agent), user);
    assert_eq!(agent.metric("pullauth_config_reload_failures_total"), 0.0);
}

/// Pulls `image` in a task and asserts that the registry saw only `user`.
fn pull_as(agent: &RunningAgent, registry: &Registry, repo: &str, image: &str, user: &str) {
    let mark = registry.log_mark();
    let task = agent.submit(&taskdef("watch", &[("app", image, true)]));
    let task = agent.wait_final(task["Arn"].as_str().expect("Arn"));
    assert_eq!(task["KnownStatus"], "PULLED", "{task:#}");
    let users: BTreeSet<String> = repo_requests(registry, mark, repo)
        .iter()
        .map(|r| r.user.clone().unwrap_or_else(|| "<anonymous>".into()))
        .collect();
    assert_eq!(users, BTreeSet::from([user.to_string()]));
}

/// The log lines that contain `message`.
fn lines_with(spec: &AgentSpec, message: &str) -> Vec<String> {
    spec.logs()
        .lines()
        .filter(|l| l.contains(message))
        .map(String::from)
        .collect()
}

/// An agent reading `file` with `--env-file` (not the spec's own file).
fn agent_reading(file: &Path) -> AgentSpec {
    AgentSpec::new()
        .no_env_file()
        .arg("--env-file")
        .arg(file.to_str().expect("UTF-8 path"))
}

/// Writes `text` next to `file` and renames it over `file`.
fn replace_by_rename(file: &Path, text: &str) {
    let tmp = file.with_file_name(format!(".{}.tmp", random_token(6)));
    fs::write(&tmp, text).expect("write the new file");
    fs::rename(&tmp, file).expect("rename it into place");
}

#[test]
fn an_in_place_write_reloads_and_the_next_pull_uses_the_new_user() {
    let alpha = &Harness::get().alpha;
    let (repo, image) = push(alpha, "watch", "alice");
    let spec = AgentSpec::new().env_file_text(&config_for(alpha, "alice"));
    let agent = spec.start();
    assert!(
        !lines_with(&spec, "watching the configuration files").is_empty(),
        "{}",
        spec.log_tail(10)
    );
    assert_eq!(username(&agent), "alice");

    spec.write_env_file(&config_for(alpha, "bob"));
    wait_reloaded(&agent, 1.0, "bob");
    let reloaded = lines_with(&spec, "configuration reloaded");
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert!(reloaded[0].contains("trigger=file"), "{}", reloaded[0]);
    pull_as(&agent, alpha, &repo, &image, "bob");
    assert!(agent.terminate().success());
}

#[test]
fn a_file_renamed_into_place_reloads() {
    let alpha = &Harness::get().alpha;
    let spec = AgentSpec::new().env_file_text(&config_for(alpha, "alice"));
    let agent = spec.start();
    replace_by_rename(spec.env_file(), &config_for(alpha, "bob"));
    wait_reloaded(&agent, 1.0, "bob");
    // And again: the watch is on the directory, not the replaced inode.
    replace_by_rename(spec.env_file(), &config_for(alpha, "alice"));
    wait_reloaded(&agent, 2.0, "alice");
    assert!(agent.terminate().success());
}

/// Lays out `dir` as kubelet mounts a ConfigMap: `ecs.config ->
/// ..data/ecs.config`, `..data -> ..<version>`; returns the `ecs.config` path.
fn configmap(dir: &Path, version: &str, text: &str) -> PathBuf {
    let data = dir.join(format!("..{version}"));
    fs::create_dir(&data).expect("mkdir");
    fs::write(data.join("ecs.config"), text).expect("write");
    symlink(format!("..{version}"), dir.join("..data")).expect("symlink ..data");
    symlink("..data/ecs.config", dir.join("ecs.config")).expect("symlink ecs.config");
    dir.join("ecs.config")
}

/// Updates the ConfigMap as kubelet does: a new versioned directory, a new
/// `..data` symlink renamed over the old one, the old directory removed.
fn configmap_update(dir: &Path, old: &str, new: &str, text: &str) {
    let data = dir.join(format!("..{new}"));
    fs::create_dir(&data).expect("mkdir");
    fs::write(data.join("ecs.config"), text).expect("write");
    symlink(format!("..{new}"), dir.join("..data_tmp")).expect("symlink");
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    fs::remove_dir_all(dir.join(format!("..{old}"))).expect("remove the old version");
}

#[test]
fn a_kubernetes_configmap_symlink_swap_reloads() {
    let alpha = &Harness::get().alpha;
    let (repo, image) = push(alpha, "watchk8s", "alice");
    let mount = scratch_dir("configmap");
    let file = configmap(mount.path(), "2026_12_01_a", &config_for(alpha, "alice"));
    let spec = agent_reading(&file);
    let agent = spec.start();
    assert_eq!(username(&agent), "alice");

    configmap_update(
        mount.path(),
        "2026_12_01_a",
        "2026_12_01_b",
        &config_for(alpha, "bob"),
    );
    wait_reloaded(&agent, 1.0, "bob");
    pull_as(&agent, alpha, &repo, &image, "bob");
    // A second update: the watches followed the swap.
    configmap_update(
        mount.path(),
        "2026_12_01_b",
        "2026_12_01_c",
        &config_for(alpha, "alice"),
    );
    wait_reloaded(&agent, 2.0, "alice");
    assert!(agent.terminate().success());
}

#[test]
fn a_bad_edit_keeps_the_old_configuration_and_prints_no_secret() {
    let alpha = &Harness::get().alpha;
    let (repo, image) = push(alpha, "watchbad", "alice");
    let spec = AgentSpec::new().env_file_text(&config_for(alpha, "alice"));
    let agent = spec.start();

    // Invalid JSON that would switch to bob if it were applied.
    let key = alpha.addr();
    let bob_password = alpha.password("bob");
    replace_by_rename(
        spec.env_file(),
        &format!(
            "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={{\"{key}\": {{\"username\": \
             \"bob\", \"password\": \"{bob_password}\"\n"
        ),
    );
    assert_eq!(
        agent.wait_metric("pullauth_config_reload_failures_total", 1.0),
        1.0
    );
    let rejected = lines_with(&spec, "configuration reload rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].contains("trigger=file"), "{}", rejected[0]);
    assert_eq!(agent.metric("pullauth_config_reloads_total"), 0.0);
    assert_eq!(agent.get("/healthz").status, 200);
    assert_eq!(username(&agent), "alice");
    pull_as(&agent, alpha, &repo, &image, "alice");

    assert!(agent.terminate().success());
    let log = spec.log_bytes();
    for needle in secret_needles(bob_password)
        .iter()
        .chain(&secret_needles(alpha.password("alice")))
    {
        assert!(
            !log.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "the log shows a password (a form of it)"
        );
    }
}

/// Something done to the watched directory, and what to call it.
type Step<'a> = (&'static str, Box<dyn Fn() + 'a>);

#[test]
fn unrelated_files_and_unchanged_bytes_count_no_reload() {
    let alpha = &Harness::get().alpha;
    let text = config_for(alpha, "alice");
    let spec = AgentSpec::new()
        .env("ECS_LOGLEVEL", "debug")
        .env_file_text(&text);
    let agent = spec.start();
    let dir = spec.env_file().parent().expect("a parent").to_path_buf();
    // The check made at the start, for changes made while starting.
    wait_for("the first check", || {
        (!lines_with(&spec, UNCHANGED).is_empty()).then_some(())
    });
    // Other files in the watched directory (an editor's swap file, another
    // config renamed into place) are not the watcher's business: they
    // cause no check at all (the watcher's unit test pins that with real
    // inotify), and certainly no reload, as the steps below show.
    fs::write(dir.join(".ecs.config.swp"), "swap").expect("write");
    replace_by_rename(&dir.join("other.config"), "ECS_CLUSTER=other\n");
    // Events on the file itself that change nothing: each is checked and
    // found unchanged.
    let steps: [Step<'_>; 2] = [
        (
            "a chmod of the file",
            Box::new(|| {
                fs::set_permissions(spec.env_file(), fs::Permissions::from_mode(0o640))
                    .expect("chmod")
            }),
        ),
        (
            "the same bytes written again",
            Box::new(|| spec.write_env_file(&text)),
        ),
    ];
    for (what, step) in &steps {
        let before = lines_with(&spec, UNCHANGED).len();
        step();
        wait_for(&format!("the check after {what}"), || {
            (lines_with(&spec, UNCHANGED).len() > before).then_some(())
        });
        assert_eq!(agent.metric("pullauth_config_reloads_total"), 0.0, "{what}");
        assert_eq!(
            agent.metric("pullauth_config_reload_failures_total"),
            0.0,
            "{what}"
        );
    }
    // The watcher is still alive: a real change still counts, once.
    spec.write_env_file(&config_for(alpha, "bob"));
    wait_reloaded(&agent, 1.0, "bob");
    assert!(agent.terminate().success());
}

#[test]
fn no_watch_leaves_reloads_to_sighup() {
    let alpha = &Harness::get().alpha;
    let spec = AgentSpec::new()
        .arg("--no-watch")
        .env_file_text(&config_for(alpha, "alice"));
    let agent = spec.start();
    assert!(
        !lines_with(&spec, "--no-watch").is_empty(),
        "{}",
        spec.log_tail(10)
    );
    spec.write_env_file(&config_for(alpha, "bob"));
    // Several debounce periods: a watcher would have reloaded by now.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.metric("pullauth_config_reloads_total"), 0.0);
    assert_eq!(username(&agent), "alice");
    agent.sighup();
    wait_reloaded(&agent, 1.0, "bob");
    let reloaded = lines_with(&spec, "configuration reloaded");
    assert!(reloaded[0].contains("trigger=sighup"), "{}", reloaded[0]);
    assert!(agent.terminate().success());
}
