use super::*;

fn sample_task(arn: &str) -> Task {
    Task::new(
        arn.into(),
        "web".into(),
        vec![Container::new("app".into(), "r.io/app:1".into(), true)],
    )
}

/// A task whose containers all reached `status`, the last pull having
/// ended at `stopped`.
fn finished_task(arn: &str, status: Status, stopped: Option<SystemTime>) -> Task {
    let mut task = sample_task(arn);
    task.containers[0].known_status = status;
    task.recompute_status();
    task.pull_stopped_at = stopped.map(|at| humantime::format_rfc3339_millis(at).to_string());
    task
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn tasks_survive_reopen_and_files_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        store.put_task(&sample_task("arn:1")).expect("put");
        let updated = store
            .update_task("arn:1", |t| t.containers[0].known_status = Status::Pulling)
            .expect("update")
            .expect("exists");
        assert_eq!(updated.containers[0].known_status, Status::Pulling);
        assert!(
            store
                .update_task("arn:none", |_| {})
                .expect("update")
                .is_none()
        );
        // While open, SQLite's side files exist; they get the file's mode.
        for suffix in ["", "-wal", "-shm"] {
            let path = dir.path().join(format!("{STATE_FILE}{suffix}"));
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    let store = Store::open(dir.path()).expect("reopen");
    let task = store.task("arn:1").expect("read").expect("still there");
    assert_eq!(task.containers[0].known_status, Status::Pulling);
    assert_eq!(store.tasks().expect("list").len(), 1);
    assert_eq!(mode(&dir.path().join(STATE_FILE)), 0o600);
}

#[test]
fn tasks_json_is_the_serialized_snapshot() {
    let store = Store::in_memory();
    assert_eq!(store.tasks_json(), "[]");
    for arn in ["arn:b", "arn:a"] {
        store.put_task(&sample_task(arn)).expect("put");
    }
    store
        .update_task("arn:b", |t| t.containers[0].known_status = Status::Pulled)
        .expect("update");
    let listed: serde_json::Value = serde_json::from_str(&store.tasks_json()).expect("JSON");
    let expected = serde_json::to_value(store.tasks().expect("list")).expect("encode");
    assert_eq!(listed, expected);
    assert_eq!(listed[1]["Containers"][0]["KnownStatus"], "PULLED");
}

#[test]
fn tasks_are_listed_by_arn() {
    let store = Store::in_memory();
    for arn in ["arn:c", "arn:a", "arn:b"] {
        store.put_task(&sample_task(arn)).expect("put");
    }
    let arns: Vec<String> = store
        .tasks()
        .expect("list")
        .into_iter()
        .map(|t| t.arn)
        .collect();
    assert_eq!(arns, ["arn:a", "arn:b", "arn:c"]);
}

// The defect of issue #9: redb locked the file for the agent's lifetime, so
// `pullauth pull --pull-behavior once` could not open it while `serve` ran.
#[test]
fn two_opens_of_one_dir_write_image_records_concurrently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Store::open(dir.path()).expect("first open");
    let cli = Store::open(dir.path()).expect("second open while the first is open");
    agent.put_task(&sample_task("arn:1")).expect("put");
    let threads: Vec<_> = [&agent, &cli, &agent, &cli]
        .into_iter()
        .enumerate()
        .map(|(writer, store)| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let reference = format!("r.io/w{writer}/app:{i}");
                    store
                        .record_image_use(&reference, "sha256:a", true, PulledWith::default())
                        .expect("record while the other process writes");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    assert_eq!(agent.images().expect("list").len(), 160);
    assert!(cli.image("r.io/w0/app:39").expect("get").is_some());
    // The CLI's handle saw the task that existed when it opened... and a
    // third open sees everything.
    let third = Store::open(dir.path()).expect("third open");
    assert_eq!(third.images().expect("list").len(), 160);
    assert_eq!(third.tasks().expect("list").len(), 1);
}

// A write that cannot commit (here: another process holds the write lock
// beyond the busy timeout) must not show up in the snapshot, and is a
// runtime error, not a setup one.
#[test]
fn snapshot_never_shows_a_write_that_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store.put_task(&sample_task("arn:1")).expect("put");
    let other = Connection::open(dir.path().join(STATE_FILE)).expect("raw connection");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    let err = store
        .update_task("arn:1", |t| t.containers[0].known_status = Status::Pulled)
        .expect_err("the file is locked by another process");
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    assert!(!err.is_setup());
    let err = store
        .put_task(&sample_task("arn:2"))
        .expect_err("still locked");
    assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
    assert!(store.write_failing());
    assert_eq!(
        store.task("arn:1").expect("read"),
        Some(sample_task("arn:1")),
        "the snapshot shows an update that was not committed"
    );
    assert_eq!(store.task("arn:2").expect("read"), None);

    other.execute_batch("ROLLBACK").expect("release");
    store.put_task(&sample_task("arn:2")).expect("put again");
    assert!(!store.write_failing());
    assert_eq!(store.tasks().expect("list").len(), 2);
}

#[test]
fn remove_finished_before_keeps_unfinished_and_recent_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let now = SystemTime::now();
    let old = now - Duration::from_secs(2 * 3600);
    let cutoff = now - Duration::from_secs(3600);
    store
        .put_task(&finished_task("arn:old-pulled", Status::Pulled, Some(old)))
        .expect("put");
    store
        .put_task(&finished_task(
            "arn:old-stopped",
            Status::Stopped,
            Some(old),
        ))
        .expect("put");
    store
        .put_task(&finished_task("arn:recent", Status::Pulled, Some(now)))
        .expect("put");
    // Stopped long ago by the clock, but a container is still pulling.
    store
        .put_task(&finished_task("arn:pulling", Status::Pulling, Some(old)))
        .expect("put");
    // Final but never stamped: kept, since its age is unknown.
    store
        .put_task(&finished_task("arn:unstamped", Status::Pulled, None))
        .expect("put");

    assert_eq!(store.remove_finished_before(cutoff).expect("remove"), 2);
    let left = |store: &Store| -> Vec<String> {
        store
            .tasks()
            .expect("list")
            .into_iter()
            .map(|t| t.arn)
            .collect()
    };
    assert_eq!(left(&store), ["arn:pulling", "arn:recent", "arn:unstamped"]);
    assert_eq!(store.task("arn:old-pulled").expect("read"), None);
    assert_eq!(store.remove_finished_before(cutoff).expect("again"), 0);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(left(&store), ["arn:pulling", "arn:recent", "arn:unstamped"]);
}

#[test]
fn redb_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    let mut redb = REDB_MAGIC.to_vec();
    redb.extend(std::iter::repeat_n(0x42_u8, 4096));
    std::fs::write(&path, &redb).expect("write");
    let err = Store::open(dir.path()).expect_err("a redb file");
    assert!(matches!(err, StoreError::Redb { .. }), "{err:?}");
    assert!(err.is_setup());
    let text = err.to_string();
    for needle in [
        &format!("state file {}", path.display()) as &str,
        "redb",
        "left untouched",
        "move it away",
    ] {
        assert!(text.contains(needle), "{needle:?} missing: {text}");
    }
    assert!(
        std::fs::read(&path).expect("read") == redb,
        "the file changed"
    );
    assert!(!dir.path().join(format!("{STATE_FILE}-wal")).exists());
}

#[test]
fn garbage_file_is_an_error_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(&path, &garbage).expect("write");
    let err = Store::open(dir.path()).expect_err("corrupt");
    assert!(err.is_setup());
    let text = err.to_string();
    assert!(text.contains(path.to_str().expect("utf8")), "{text}");
    assert!(text.contains("left untouched"), "{text}");
    assert!(
        std::fs::read(&path).expect("read") == garbage,
        "the file changed"
    );
}

#[test]
fn another_programs_sqlite_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    Connection::open(&path)
        .and_then(|c| c.execute_batch("CREATE TABLE notes (body TEXT)"))
        .expect("another program's database");
    let before = std::fs::read(&path).expect("read");
    let err = Store::open(dir.path()).expect_err("not ours");
    assert!(matches!(err, StoreError::NotOurs { .. }), "{err:?}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert!(
        std::fs::read(&path).expect("read") == before,
        "the file changed"
    );
}

/// A state file holding one task, closed; returns its bytes.
fn written_state(dir: &Path) -> Vec<u8> {
    let store = Store::open(dir).expect("open");
    store.put_task(&sample_task("arn:1")).expect("put");
    store
        .record_image_use("r.io/app:1", "sha256:a", true, PulledWith::default())
        .expect("record");
    drop(store);
    assert!(
        !dir.join(format!("{STATE_FILE}-wal")).exists(),
        "closing the last connection checkpoints and removes the WAL"
    );
    std::fs::read(dir.join(STATE_FILE)).expect("read")
}

#[test]
fn truncated_state_file_is_a_clear_error_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = written_state(dir.path());
    let path = dir.path().join(STATE_FILE);
    let truncated = &bytes[..bytes.len() / 3];
    std::fs::write(&path, truncated).expect("truncate");
    let err = Store::open(dir.path()).expect_err("truncated file must not open");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.is_setup());
    assert!(err.to_string().contains(STATE_FILE), "{err}");
    assert!(
        std::fs::read(&path).expect("read") == truncated,
        "the file changed"
    );
}

#[test]
fn garbage_after_the_first_page_is_a_clear_error_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = written_state(dir.path());
    let path = dir.path().join(STATE_FILE);
    for (i, byte) in bytes.iter_mut().enumerate().skip(4096) {
        *byte = (i as u8).wrapping_mul(31) ^ 0xa5;
    }
    std::fs::write(&path, &bytes).expect("damage");
    let err = Store::open(dir.path()).expect_err("damaged file must not open");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(
        std::fs::read(&path).expect("read") == bytes,
        "the file changed"
    );
}

#[test]
fn unwritable_data_dir_is_a_clear_error() {
    let err = Store::open(Path::new("/proc/pullauth-cannot-exist")).expect_err("fails");
    assert!(err.is_setup());
    assert!(
        err.to_string()
            .contains("ECS_DATADIR /proc/pullauth-cannot-exist"),
        "{err}"
    );
}

#[test]
fn image_use_keeps_earlier_pull_success() {
    let store = Store::in_memory();
    let with = PulledWith {
        registry_key: Some("r.io".into()),
        username: Some("alice".into()),
    };
    store
        .record_image_use("r.io/app:1", "sha256:a", true, with.clone())
        .expect("record");
    let first = store.image("r.io/app:1").expect("get").expect("exists");
    assert!(first.pull_succeeded);
    assert!(first.pulled_at.is_some());
    // A later use from the cache keeps the pull time and success.
    store
        .record_image_use("r.io/app:1", "sha256:a", false, PulledWith::default())
        .expect("record");
    let second = store.image("r.io/app:1").expect("get").expect("exists");
    assert!(second.pull_succeeded);
    assert_eq!(second.pulled_at, first.pulled_at);
    // A cache-only use of an image never pulled records no success.
    store
        .record_image_use("r.io/other:1", "sha256:b", false, with)
        .expect("record");
    let other = store.image("r.io/other:1").expect("get").expect("exists");
    assert!(!other.pull_succeeded);
    assert!(other.pulled_at.is_none());
}

#[test]
fn images_round_trip_in_memory() {
    let store = Store::in_memory();
    assert!(store.path().is_none());
    let record = ImageRecord {
        image_id: Some("sha256:abc".into()),
        names: vec!["r.io/app:1".into()],
        pulled_at: Some(model::now_rfc3339()),
        last_used_at: model::now_rfc3339(),
        pull_succeeded: true,
        registry_key: Some("r.io".into()),
        username: Some("alice".into()),
        prefetched: false,
    };
    store.put_image("r.io/app:1", &record).expect("put");
    assert_eq!(store.image("r.io/app:1").expect("get"), Some(record));
    assert_eq!(store.images().expect("list").len(), 1);
}

/// What prefetch pulled is marked, survives later uses from the cache, is
/// cleared by a task's use, and is forgotten on removal; an image with no
/// record is never marked.
#[test]
fn prefetched_marks_survive_uses_and_are_cleared_by_tasks() {
    let store = Store::in_memory();
    store
        .set_prefetched("r.io/none:1", true)
        .expect("no record");
    assert!(store.image("r.io/none:1").expect("get").is_none());
    for reference in ["r.io/a:1", "r.io/b:1"] {
        store
            .record_image_use(reference, "sha256:a", true, PulledWith::default())
            .expect("record");
        store.set_prefetched(reference, true).expect("mark");
    }
    store
        .record_image_use("r.io/a:1", "sha256:a", false, PulledWith::default())
        .expect("a later use");
    assert_eq!(
        store.prefetched_images().expect("list"),
        ["r.io/a:1", "r.io/b:1"]
    );
    store
        .set_prefetched("r.io/b:1", false)
        .expect("a task used it");
    assert_eq!(store.prefetched_images().expect("list"), ["r.io/a:1"]);
    let text = serde_json::to_string(&store.image("r.io/b:1").expect("get").expect("exists"))
        .expect("json");
    assert!(!text.contains("prefetched"), "false is not written: {text}");
    store.forget_image("r.io/a:1").expect("forget");
    assert!(store.image("r.io/a:1").expect("get").is_none());
    assert!(store.prefetched_images().expect("list").is_empty());
}

#[test]
fn cache_records_survive_reopen_by_kind_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        store.put_cached("a", "arn:1", "{\"v\":1}").expect("put");
        store
            .put_cached("a", "arn:1", "{\"v\":2}")
            .expect("replace");
        store
            .put_cached("b", "arn:1", "{\"other\":true}")
            .expect("put");
    }
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        store.cached("a", "arn:1").expect("read").as_deref(),
        Some("{\"v\":2}")
    );
    assert_eq!(
        store.cached("b", "arn:1").expect("read").as_deref(),
        Some("{\"other\":true}")
    );
    assert_eq!(store.cached("a", "arn:2").expect("read"), None);
}

#[test]
fn retain_cached_drops_only_the_kinds_other_keys() {
    let store = Store::in_memory();
    for key in ["arn:1", "arn:2", "arn:3"] {
        store.put_cached("a", key, "{}").expect("put");
        store.put_cached("b", key, "{}").expect("put");
    }
    let keep = std::collections::HashSet::from(["arn:2".to_owned()]);
    assert_eq!(store.retain_cached("a", &keep).expect("retain"), 2);
    assert_eq!(store.cached("a", "arn:1").expect("read"), None);
    assert!(store.cached("a", "arn:2").expect("read").is_some());
    for key in ["arn:1", "arn:2", "arn:3"] {
        assert!(store.cached("b", key).expect("read").is_some(), "{key}");
    }
    // Nothing left to drop: no write at all.
    assert_eq!(store.retain_cached("a", &keep).expect("retain"), 0);
}

/// A database of a build before the cache (layout version 1, tasks and
/// images only) opens, keeps its tasks, and gets the cache table.
#[test]
fn a_store_without_the_cache_table_gets_it_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let conn = Connection::open(dir.path().join(STATE_FILE)).expect("create");
        conn.execute_batch(SCHEMA).expect("older layout");
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .expect("id");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .expect("version");
        conn.execute(
            "INSERT INTO tasks (arn, record) VALUES (?1, ?2)",
            params![
                "arn:old",
                serde_json::to_string(&sample_task("arn:old")).expect("json")
            ],
        )
        .expect("task");
    }
    let store = Store::open(dir.path()).expect("open");
    assert!(store.task("arn:old").expect("read").is_some());
    store
        .put_cached("a", "arn:1", "{}")
        .expect("the cache works");
    assert!(store.cached("a", "arn:1").expect("read").is_some());
}

/// Another process holding the database's write lock (a `serve` writing)
/// does not block reading the cache: WAL readers never wait for writers.
#[test]
fn the_cache_reads_while_another_process_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store.put_cached("a", "arn:1", "{}").expect("put");
    let other = Connection::open(dir.path().join(STATE_FILE)).expect("second connection");
    other
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO cache VALUES ('a', 'arn:2', '{}');")
        .expect("hold the write lock");
    let started = std::time::Instant::now();
    assert!(store.cached("a", "arn:1").expect("read").is_some());
    assert!(started.elapsed() < BUSY_TIMEOUT);
    other.execute_batch("ROLLBACK").expect("release");
}
