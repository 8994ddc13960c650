//! The debounce and change detection, driven through the event channel
//! with the clock paused; and the directories a symlink chain needs.

use std::fs;
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use notify::event::{CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind, RenameMode};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::*;

/// A configuration that records each reload and when it happened.
struct Recorder {
    files: Vec<PathBuf>,
    reloads: UnboundedSender<(Trigger, Instant)>,
}

impl Reload for Recorder {
    fn files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }
    fn reload(&self, trigger: Trigger) {
        let _ = self.reloads.send((trigger, Instant::now()));
    }
}

/// A running check loop over one file in a temp dir.
struct Loop {
    dir: tempfile::TempDir,
    file: PathBuf,
    reloader: Arc<Reloader>,
    events: mpsc::Sender<()>,
    reloads: UnboundedReceiver<(Trigger, Instant)>,
    /// One item after each check (sent by `rewatch`).
    checks: UnboundedReceiver<BTreeSet<PathBuf>>,
}

impl Loop {
    fn start() -> Loop {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("ecs.config");
        fs::write(&file, "ECS_CLUSTER=one\n").expect("write");
        let fingerprinter = Fingerprinter::new();
        let loaded = fingerprinter.take(std::slice::from_ref(&file));
        let (reload_tx, reloads) = unbounded_channel();
        let reloader = Arc::new(Reloader::new(
            Recorder {
                files: vec![file.clone()],
                reloads: reload_tx,
            },
            fingerprinter,
            loaded,
        ));
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let (check_tx, checks) = unbounded_channel();
        tokio::spawn(run(
            reloader.clone(),
            rx,
            DEBOUNCE,
            MAX_DELAY,
            move |dirs| {
                let _ = check_tx.send(dirs.clone());
            },
        ));
        Loop {
            dir,
            file,
            reloader,
            events,
            reloads,
            checks,
        }
    }

    async fn event(&self) {
        self.events.send(()).await.expect("loop is running");
    }

    async fn checked(&mut self) {
        self.checks.recv().await.expect("loop is running");
    }

    fn no_reload(&mut self) {
        assert!(self.reloads.try_recv().is_err(), "unexpected reload");
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_events_is_one_reload_after_the_last_is_quiet() {
    let mut l = Loop::start();
    let start = Instant::now();
    for i in 0..3 {
        fs::write(&l.file, format!("ECS_CLUSTER=burst{i}\n")).expect("write");
        l.event().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    l.checked().await;
    let (trigger, at) = l.reloads.recv().await.expect("reloaded");
    assert_eq!(trigger, Trigger::File);
    // The last event came at 200 ms.
    assert_eq!(at - start, Duration::from_millis(200) + DEBOUNCE);
    l.no_reload();
}

#[tokio::test(start_paused = true)]
async fn events_apart_by_more_than_the_debounce_are_two_checks() {
    let mut l = Loop::start();
    fs::write(&l.file, "ECS_CLUSTER=two\n").expect("write");
    l.event().await;
    l.checked().await;
    assert!(l.reloads.recv().await.is_some());
    fs::write(&l.file, "ECS_CLUSTER=three\n").expect("write");
    l.event().await;
    l.checked().await;
    assert!(l.reloads.recv().await.is_some());
    l.no_reload();
}

#[tokio::test(start_paused = true)]
async fn events_that_keep_coming_still_check_after_max_delay() {
    let mut l = Loop::start();
    let start = Instant::now();
    fs::write(&l.file, "ECS_CLUSTER=busy\n").expect("write");
    let stop = start + MAX_DELAY * 2;
    let events = l.events.clone();
    tokio::spawn(async move {
        while Instant::now() < stop {
            let _ = events.try_send(());
            tokio::time::sleep(DEBOUNCE / 3).await;
        }
    });
    let (_, at) = l.reloads.recv().await.expect("reloaded");
    assert_eq!(at - start, MAX_DELAY);
}

#[tokio::test(start_paused = true)]
async fn unchanged_bytes_do_not_reload() {
    let mut l = Loop::start();
    // Rewritten with the same bytes, touched, chmodded: an event, no change.
    fs::write(&l.file, "ECS_CLUSTER=one\n").expect("write");
    fs::set_permissions(&l.file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    l.event().await;
    l.checked().await;
    l.no_reload();
}

#[tokio::test(start_paused = true)]
async fn an_unrelated_file_in_the_directory_does_not_reload() {
    let mut l = Loop::start();
    fs::write(l.dir.path().join(".ecs.config.swp"), "editor state").expect("write");
    fs::write(l.dir.path().join("ecs.config~"), "ECS_CLUSTER=backup\n").expect("write");
    l.event().await;
    l.checked().await;
    l.no_reload();
}

#[tokio::test(start_paused = true)]
async fn a_removed_file_is_a_change_and_so_is_its_return() {
    let mut l = Loop::start();
    fs::remove_file(&l.file).expect("rm");
    l.event().await;
    l.checked().await;
    assert!(l.reloads.recv().await.is_some());
    fs::write(&l.file, "ECS_CLUSTER=one\n").expect("write");
    l.event().await;
    l.checked().await;
    assert!(l.reloads.recv().await.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_sighup_reload_records_what_it_read() {
    let mut l = Loop::start();
    fs::write(&l.file, "ECS_CLUSTER=hup\n").expect("write");
    l.reloader.reload(Trigger::Sighup).await;
    assert_eq!(l.reloads.recv().await.map(|r| r.0), Some(Trigger::Sighup));
    // The file event for the same edit finds nothing new.
    l.event().await;
    l.checked().await;
    l.no_reload();
}

#[tokio::test(start_paused = true)]
async fn the_loop_rewatches_where_the_files_are_now() {
    let mut l = Loop::start();
    l.event().await;
    let dirs = l.checks.recv().await.expect("checked");
    let dir = fs::canonicalize(l.dir.path()).expect("canonical");
    assert_eq!(dirs, BTreeSet::from([dir]));
}

#[tokio::test(start_paused = true)]
async fn the_loop_ends_when_the_events_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (reloads, _rx) = unbounded_channel();
    let reloader = Arc::new(Reloader::new(
        Recorder {
            files: vec![dir.path().join("ecs.config")],
            reloads,
        },
        Fingerprinter::new(),
        Fingerprinter::new().take(&[]),
    ));
    let (tx, rx) = mpsc::channel(1);
    drop(tx);
    run(reloader, rx, DEBOUNCE, MAX_DELAY, |_| {}).await;
}

/// A configuration whose reload takes a while and notices overlaps.
struct Slow {
    file: PathBuf,
    busy: AtomicBool,
    overlaps: AtomicUsize,
    reloads: AtomicUsize,
}

impl Reload for Arc<Slow> {
    fn files(&self) -> Vec<PathBuf> {
        vec![self.file.clone()]
    }
    fn reload(&self, _: Trigger) {
        if self.busy.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(5));
        self.reloads.fetch_add(1, Ordering::SeqCst);
        self.busy.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_file_reloads_never_overlap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ecs.config");
    let slow = Arc::new(Slow {
        file: file.clone(),
        busy: AtomicBool::new(false),
        overlaps: AtomicUsize::new(0),
        reloads: AtomicUsize::new(0),
    });
    let fingerprinter = Fingerprinter::new();
    let loaded = fingerprinter.take(std::slice::from_ref(&file));
    let reloader = Arc::new(Reloader::new(slow.clone(), fingerprinter, loaded));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let reloader = reloader.clone();
        let file = file.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                reloader.reload(Trigger::Sighup).await;
            } else {
                fs::write(&file, format!("ECS_CLUSTER=c{i}\n")).expect("write");
                reloader.reload_if_changed().await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(slow.overlaps.load(Ordering::SeqCst), 0);
    assert!(slow.reloads.load(Ordering::SeqCst) >= 10);
}

#[test]
fn fingerprints_follow_bytes_not_metadata() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ecs.config");
    let files = [file.clone()];
    let f = Fingerprinter::new();
    let missing = f.take(&files);
    fs::write(&file, "A=1\n").expect("write");
    let one = f.take(&files);
    assert_ne!(missing, one);
    fs::write(&file, "A=1\n").expect("write");
    assert_eq!(f.take(&files), one);
    fs::write(&file, "A=2\n").expect("write");
    assert_ne!(f.take(&files), one);
    assert_eq!(format!("{one:?}"), "Fingerprint(<hidden>)");
}

#[test]
fn directories_of_a_plain_file_is_its_parent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ecs.config");
    fs::write(&file, "").expect("write");
    let real = fs::canonicalize(dir.path()).expect("canonical");
    assert_eq!(directories(&[file]), BTreeSet::from([real]));
}

#[test]
fn directories_of_a_missing_directory_are_still_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("nowhere/ecs.config");
    assert_eq!(
        directories(&[file]),
        BTreeSet::from([fs::canonicalize(dir.path())
            .expect("canonical")
            .join("nowhere")])
    );
}

#[test]
fn directories_of_a_kubernetes_configmap_mount() {
    // ecs.config -> ..data/ecs.config, ..data -> ..2026_12_01_a
    let dir = tempfile::tempdir().expect("temp dir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    fs::create_dir(root.join("..2026_12_01_a")).expect("mkdir");
    fs::write(root.join("..2026_12_01_a/ecs.config"), "").expect("write");
    symlink("..2026_12_01_a", root.join("..data")).expect("symlink");
    symlink("..data/ecs.config", root.join("ecs.config")).expect("symlink");
    assert_eq!(
        directories(&[root.join("ecs.config")]),
        BTreeSet::from([root.clone(), root.join("..2026_12_01_a")])
    );
}

#[test]
fn directories_of_a_symlink_elsewhere_include_both_ends() {
    let a = tempfile::tempdir().expect("temp dir");
    let b = tempfile::tempdir().expect("temp dir");
    let (a_dir, b_dir) = (
        fs::canonicalize(a.path()).expect("canonical"),
        fs::canonicalize(b.path()).expect("canonical"),
    );
    fs::write(b_dir.join("real.config"), "").expect("write");
    symlink(b_dir.join("real.config"), a_dir.join("ecs.config")).expect("symlink");
    assert_eq!(
        directories(&[a_dir.join("ecs.config")]),
        BTreeSet::from([a_dir, b_dir])
    );
}

#[test]
fn only_reads_are_irrelevant_events() {
    let cases = [
        (
            EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)),
            false,
        ),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            false,
        ),
        (EventKind::Access(AccessKind::Read), false),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            true,
        ),
        (EventKind::Create(CreateKind::File), true),
        (EventKind::Modify(ModifyKind::Data(DataChange::Any)), true),
        (
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
            true,
        ),
        (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
        (EventKind::Remove(RemoveKind::File), true),
        (EventKind::Other, true),
    ];
    for (kind, expected) in cases {
        assert_eq!(relevant(&kind), expected, "{kind:?}");
    }
}

/// The real watcher (inotify) sees a Kubernetes-style `..data` swap: the
/// wiring the tests above leave out. Bounded by a generous deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_sees_a_configmap_symlink_swap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    fs::create_dir(root.join("..v1")).expect("mkdir");
    fs::write(root.join("..v1/ecs.config"), "ECS_CLUSTER=v1\n").expect("write");
    symlink("..v1", root.join("..data")).expect("symlink");
    symlink("..data/ecs.config", root.join("ecs.config")).expect("symlink");
    let file = root.join("ecs.config");
    let fingerprinter = Fingerprinter::new();
    let loaded = fingerprinter.take(std::slice::from_ref(&file));
    let (reloads_tx, mut reloads) = unbounded_channel();
    let reloader = Arc::new(Reloader::new(
        Recorder {
            files: vec![file],
            reloads: reloads_tx,
        },
        fingerprinter,
        loaded,
    ));
    let watching = spawn(reloader).expect("watching");
    assert!(watching.directories.contains(&root), "{watching:?}");
    // The swap, as kubelet does it.
    fs::create_dir(root.join("..v2")).expect("mkdir");
    fs::write(root.join("..v2/ecs.config"), "ECS_CLUSTER=v2\n").expect("write");
    symlink("..v2", root.join("..data_tmp")).expect("symlink");
    fs::rename(root.join("..data_tmp"), root.join("..data")).expect("rename");
    fs::remove_dir_all(root.join("..v1")).expect("rm");
    let reload = tokio::time::timeout(Duration::from_secs(20), reloads.recv()).await;
    assert_eq!(
        reload.expect("reloaded in time").map(|r| r.0),
        Some(Trigger::File)
    );
    // Nothing else changes: no second reload.
    tokio::time::sleep(DEBOUNCE * 3).await;
    assert!(reloads.try_recv().is_err());
}

#[test]
fn paths_of_a_plain_file_are_the_file_and_its_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let real = fs::canonicalize(dir.path()).expect("canonical");
    let file = real.join("ecs.config");
    fs::write(&file, "").expect("write");
    assert_eq!(
        paths(std::slice::from_ref(&file)),
        BTreeSet::from([real.clone(), file.clone()])
    );
    let ours = paths(std::slice::from_ref(&file));
    assert!(concerns(std::slice::from_ref(&file), &ours));
    // An editor's rename into place names the file as its second path.
    assert!(concerns(&[real.join(".ecs.config.swp"), file], &ours));
    assert!(!concerns(&[real.join("pullauth.log")], &ours));
    // No paths: events were lost, so look.
    assert!(concerns(&[], &ours));
}

#[test]
fn paths_of_a_kubernetes_configmap_mount_include_the_data_link() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    fs::create_dir(root.join("..2026_12_01_a")).expect("mkdir");
    fs::write(root.join("..2026_12_01_a/ecs.config"), "").expect("write");
    symlink("..2026_12_01_a", root.join("..data")).expect("symlink");
    symlink("..data/ecs.config", root.join("ecs.config")).expect("symlink");
    let ours = paths(&[root.join("ecs.config")]);
    for path in [
        root.join("ecs.config"),
        root.join("..data"),
        root.join("..2026_12_01_a/ecs.config"),
    ] {
        assert!(ours.contains(&path), "{path:?} missing from {ours:?}");
    }
    // The rename that swaps a new ..data in.
    assert!(concerns(
        &[root.join("..data_tmp"), root.join("..data")],
        &ours
    ));
    assert!(!concerns(&[root.join("..2026_12_01_b")], &ours));
}

/// A configuration that counts how often its files are asked for: once per
/// check (and once per rewatch), so a count that stays put means no check.
struct Counting {
    file: PathBuf,
    asked: Arc<AtomicUsize>,
}

impl Reload for Counting {
    fn files(&self) -> Vec<PathBuf> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        vec![self.file.clone()]
    }
    fn reload(&self, _: Trigger) {}
}

// Regression (issue 25): with the agent's log written next to ecs.config,
// the watcher checked (and logged "configuration files unchanged") every
// ~300 ms for ever. Through a real inotify watch: writes to another file in
// the directory cause no check; a write to the file does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_files_in_the_directory_cause_no_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ecs.config");
    fs::write(&file, "ECS_CLUSTER=a\n").expect("write");
    let asked = Arc::new(AtomicUsize::new(0));
    let config = Counting {
        file: file.clone(),
        asked: Arc::clone(&asked),
    };
    let fingerprinter = Fingerprinter::new();
    let loaded = fingerprinter.take(std::slice::from_ref(&file));
    let reloader = Arc::new(Reloader::new(config, fingerprinter, loaded));
    spawn(reloader).expect("watching");
    // The first check, right away.
    tokio::time::sleep(DEBOUNCE * 3).await;
    let settled = asked.load(Ordering::SeqCst);
    let log = dir.path().join("pullauth.log");
    for i in 0..10 {
        fs::write(&log, format!("line {i}\n")).expect("log written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(DEBOUNCE * 3).await;
    assert_eq!(
        asked.load(Ordering::SeqCst),
        settled,
        "writes to another file in the directory caused a check"
    );
    fs::write(&file, "ECS_CLUSTER=b\n").expect("write");
    tokio::time::sleep(DEBOUNCE * 3).await;
    assert!(
        asked.load(Ordering::SeqCst) > settled,
        "a write to the configuration file caused no check"
    );
}
