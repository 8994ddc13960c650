//! Reloading the configuration when its files change.
//!
//! The configuration lives in at most two files (`--env-file` and the JSON
//! file named by `ECS_AGENT_CONFIG_FILE_PATH`), behind the [`Reload`] seam.
//! [`Reloader`] runs every reload, whatever triggered it, one at a time, and
//! remembers a keyed hash of the bytes the last one read, so that a file
//! event reloads only when the content really changed: atime, chmod or an
//! editor's swap file next to the configuration count nothing.
//!
//! [`spawn`] watches the *directories* that hold the files and every
//! directory a symlink chain to them passes through, never a file's inode:
//! editors and `sed -i` replace a file by rename, and Kubernetes updates a
//! mounted ConfigMap by renaming a new `..data` symlink into place. After
//! each burst of events the files are resolved again and the watches
//! follow. Only events on the files, the symlinks on their way and the
//! directories themselves count ([`paths`]): the agent's own log written
//! next to ecs.config is no reason to look. [`run`] turns a burst of events
//! into one check once it has been quiet for [`DEBOUNCE`] (or after
//! [`MAX_DELAY`] of constant events).

use std::collections::BTreeSet;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

/// How long the files must be quiet before they are read: long enough for
/// an editor's write-rename-chmod dance, short enough to feel immediate.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// The longest a check waits while events keep coming (a busy directory,
/// say `/etc` with a log next to the file), so that a change is still seen.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Symlinks followed from one file before giving up (as the kernel's 40).
const MAX_SYMLINK_HOPS: usize = 40;
/// Events waiting for the check loop; one is enough to make a check due, so
/// a full queue drops the rest.
const EVENT_QUEUE: usize = 16;

/// What asked for a reload; logged as `trigger=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Sighup,
    File,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Sighup => "sighup",
            Trigger::File => "file",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The configuration as the reloader sees it: which files it is read from,
/// and how to read, validate and apply it.
pub trait Reload: Send + Sync + 'static {
    /// The files a reload would read now, as named (symlinks unresolved).
    /// Asked before every reload: the env file can name another JSON file.
    fn files(&self) -> Vec<PathBuf>;
    /// Reads, validates and applies the configuration, keeping the old one
    /// if the new one is bad; logs (with `trigger`) and counts the outcome.
    fn reload(&self, trigger: Trigger);
}

/// A keyed hash of the bytes of some files (or of why they could not be
/// read). Hidden from `Debug`: the bytes hold secrets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprint(<hidden>)")
    }
}

/// Takes [`Fingerprint`]s with one random key per process (SipHash), so
/// that a hash says nothing about the bytes outside it.
#[derive(Debug, Clone, Default)]
pub struct Fingerprinter {
    keys: RandomState,
}

impl Fingerprinter {
    pub fn new() -> Fingerprinter {
        Fingerprinter::default()
    }

    /// The fingerprint of `files` as they are now (following symlinks).
    pub fn take(&self, files: &[PathBuf]) -> Fingerprint {
        let mut hasher = self.keys.build_hasher();
        for file in files {
            file.hash(&mut hasher);
            match std::fs::read(file) {
                Ok(bytes) => {
                    0u8.hash(&mut hasher);
                    bytes.hash(&mut hasher);
                }
                Err(e) => {
                    1u8.hash(&mut hasher);
                    e.kind().hash(&mut hasher);
                }
            }
        }
        Fingerprint(hasher.finish())
    }
}

/// Runs reloads one at a time, whatever triggered them, and remembers what
/// the last one read.
pub struct Reloader {
    config: Arc<dyn Reload>,
    fingerprinter: Fingerprinter,
    /// The files' fingerprint when the last reload (or the start) read them.
    /// Held for the whole of a reload, which is what serializes them.
    last: Mutex<Fingerprint>,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// `loaded` is the fingerprint taken just *before* the running
    /// configuration was read, so that a change made while it was being
    /// read is not mistaken for what was read.
    pub fn new(config: impl Reload, fingerprinter: Fingerprinter, loaded: Fingerprint) -> Reloader {
        Reloader {
            config: Arc::new(config),
            fingerprinter,
            last: Mutex::new(loaded),
        }
    }

    /// The files the configuration is read from now.
    pub fn files(&self) -> Vec<PathBuf> {
        self.config.files()
    }

    /// Reloads unconditionally (SIGHUP: the operator asked).
    pub async fn reload(&self, trigger: Trigger) {
        let mut last = self.last.lock().await;
        let before = *last;
        *last = self
            .off_the_runtime(move |config, fingerprinter| {
                let now = fingerprinter.take(&config.files());
                config.reload(trigger);
                now
            })
            .await
            .unwrap_or(before);
    }

    /// Reloads (as [`Trigger::File`]) if the files' bytes differ from what
    /// the last reload read; says whether it did.
    pub async fn reload_if_changed(&self) -> bool {
        let mut last = self.last.lock().await;
        let before = *last;
        let outcome = self
            .off_the_runtime(move |config, fingerprinter| {
                let now = fingerprinter.take(&config.files());
                if now == before {
                    return (now, false);
                }
                config.reload(Trigger::File);
                (now, true)
            })
            .await;
        match outcome {
            Some((now, reloaded)) => {
                if !reloaded {
                    tracing::debug!("configuration files unchanged; not reloading");
                }
                *last = now;
                reloaded
            }
            None => false,
        }
    }

    /// Runs `work` on Tokio's blocking pool: reading the files, and an S3
    /// env file with its own bounded wait, must never hold a worker thread
    /// that serves the APIs and pulls (on a one-CPU host there is one).
    /// `None` if it panicked (logged).
    async fn off_the_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn Reload, &Fingerprinter) -> T + Send + 'static,
    ) -> Option<T> {
        let config = Arc::clone(&self.config);
        let fingerprinter = self.fingerprinter.clone();
        match tokio::task::spawn_blocking(move || work(config.as_ref(), &fingerprinter)).await {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::error!(error = %e, "the configuration reload failed unexpectedly; keeping the previous configuration");
                None
            }
        }
    }
}

/// The directories to watch for `files`: each one's directory, and for
/// every symlink on the way to the real file (the file itself, or a
/// directory above it), the directory holding that symlink, since that is
/// where replacing it shows. Canonical where they exist.
pub fn directories(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    chain(files).0
}

/// The paths whose events concern `files`, as a watch of [`directories`]
/// reports them: each file, each symlink on the way to it, the real file,
/// and the watched directories themselves. Anything else in those
/// directories (the agent's own log, an editor's swap file) is not ours.
pub fn paths(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    chain(files).1
}

/// Whether an event on `event_paths` concerns the files whose [`paths`]
/// are `ours`. An event without paths (the kernel's queue overflowed:
/// events were lost) may concern anything.
pub fn concerns(event_paths: &[PathBuf], ours: &BTreeSet<PathBuf>) -> bool {
    event_paths.is_empty() || event_paths.iter().any(|path| ours.contains(path))
}

/// [`directories`] and [`paths`], from one walk of each symlink chain.
fn chain(files: &[PathBuf]) -> (BTreeSet<PathBuf>, BTreeSet<PathBuf>) {
    let mut dirs = BTreeSet::new();
    let mut names = BTreeSet::new();
    for file in files {
        let Ok(mut path) = std::path::absolute(file) else {
            continue;
        };
        for _ in 0..MAX_SYMLINK_HOPS {
            for ancestor in path.ancestors() {
                let is_link =
                    std::fs::symlink_metadata(ancestor).is_ok_and(|m| m.file_type().is_symlink());
                if (ancestor == path || is_link)
                    && let Some(parent) = ancestor.parent()
                {
                    let dir = canonical_or_as_is(parent);
                    if let Some(name) = ancestor.file_name() {
                        names.insert(dir.join(name));
                    }
                    dirs.insert(dir);
                }
            }
            match std::fs::read_link(&path) {
                // An absolute target replaces the path in `join`.
                Ok(target) => path = path.parent().unwrap_or(Path::new("/")).join(target),
                Err(_) => break,
            }
        }
        if let Ok(real) = std::fs::canonicalize(file)
            && let Some(parent) = real.parent()
        {
            dirs.insert(parent.to_path_buf());
            names.insert(real);
        }
    }
    names.extend(dirs.iter().cloned());
    (dirs, names)
}

fn canonical_or_as_is(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Whether an event can mean new bytes: everything but opening and reading
/// (which the reload itself does; counting them would make it loop).
pub fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Waits for an event, then until the events have been quiet for `quiet`
/// or `max_delay` has passed since the first. Returns false when the
/// channel is closed and nothing was pending.
pub async fn settle(events: &mut mpsc::Receiver<()>, quiet: Duration, max_delay: Duration) -> bool {
    if events.recv().await.is_none() {
        return false;
    }
    let deadline = Instant::now() + max_delay;
    loop {
        let until = (Instant::now() + quiet).min(deadline);
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) | Err(_) => return true,
        }
    }
}

/// The check loop: after each settled burst of `events`, reloads if the
/// content changed, then hands the directories the files now resolve to to
/// `rewatch`. Ends when `events` closes.
pub async fn run(
    reloader: Arc<Reloader>,
    mut events: mpsc::Receiver<()>,
    quiet: Duration,
    max_delay: Duration,
    mut rewatch: impl FnMut(&BTreeSet<PathBuf>) + Send,
) {
    while settle(&mut events, quiet, max_delay).await {
        reloader.reload_if_changed().await;
        rewatch(&directories(&reloader.files()));
    }
}

/// What [`spawn`] watches.
#[derive(Debug)]
pub struct Watching {
    pub directories: BTreeSet<PathBuf>,
}

/// Starts watching the reloader's files in a task that lives as long as the
/// runtime. Checks once right away, for changes made since the start. An
/// error means no watch at all (the caller goes on with SIGHUP only); a
/// directory that cannot be watched is only warned about.
pub fn spawn(reloader: Arc<Reloader>) -> notify::Result<Watching> {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let sender = tx.clone();
    // The paths whose events count, updated with the watches.
    let ours = Arc::new(std::sync::RwLock::new(paths(&reloader.files())));
    let filter = Arc::clone(&ours);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match &event {
            Ok(event) if !relevant(&event.kind) => return,
            Ok(event)
                if !concerns(
                    &event.paths,
                    &filter.read().unwrap_or_else(|p| p.into_inner()),
                ) =>
            {
                return;
            }
            Ok(_) => {}
            // E.g. the kernel queue overflowed: events were lost, so look.
            Err(e) => tracing::debug!(error = %e, "file watch error"),
        }
        // Full: a check is due anyway.
        let _ = sender.try_send(());
    })?;
    let mut watches = Watches::default();
    watches.update(&mut watcher, &directories(&reloader.files()));
    let watching = Watching {
        directories: watches.watched.clone(),
    };
    let _ = tx.try_send(());
    drop(tx);
    let files = Arc::clone(&reloader);
    tokio::spawn(run(reloader, rx, DEBOUNCE, MAX_DELAY, move |dirs| {
        *ours.write().unwrap_or_else(|p| p.into_inner()) = paths(&files.files());
        watches.update(&mut watcher, dirs)
    }));
    Ok(watching)
}

/// The directories being watched, and those that could not be (warned
/// about once, retried at each update).
#[derive(Debug, Default)]
struct Watches {
    watched: BTreeSet<PathBuf>,
    failed: BTreeSet<PathBuf>,
}

impl Watches {
    fn update(&mut self, watcher: &mut impl Watcher, wanted: &BTreeSet<PathBuf>) {
        for gone in self.watched.difference(wanted) {
            // Fails when the directory is already gone (an old `..2026_*`).
            let _ = watcher.unwatch(gone);
        }
        self.watched.retain(|d| wanted.contains(d));
        self.failed.retain(|d| wanted.contains(d));
        for dir in wanted {
            if self.watched.contains(dir) {
                continue;
            }
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.failed.remove(dir);
                    self.watched.insert(dir.clone());
                }
                Err(e) => {
                    if self.failed.insert(dir.clone()) {
                        tracing::warn!(
                            dir = %dir.display(),
                            error = %e,
                            "cannot watch this directory for configuration changes; SIGHUP still reloads"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
