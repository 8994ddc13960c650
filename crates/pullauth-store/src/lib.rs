//! Persistent state for pullauth: tasks and image records in a SQLite
//! database in `ECS_DATADIR` (`pullauth.db`), the counterpart of the BoltDB
//! file the ECS agent keeps there. Without a data directory the same store
//! runs in memory.
//!
//! # Two processes, one file
//!
//! `pullauth serve` and `pullauth pull --pull-behavior once` read the same
//! `ECS_DATADIR` from the same `ecs.config`, so both open this file at the
//! same time. SQLite in WAL mode is made for that: readers never block the
//! writer, writers take turns (each waits up to [`BUSY_TIMEOUT`] for the
//! other), and no process holds a lock between operations.
//!
//! # Durability
//!
//! Every change is one SQLite transaction, so a crash leaves either the
//! state before or the state after it. A task is recorded before its pulls
//! start and the agent answers `201` only after that, so the commit is
//! durable before the answer: `synchronous=FULL`, one `fsync` of the WAL
//! per transaction, which survives power loss as well as `kill -9`.
//!
//! # The task snapshot
//!
//! Tasks are written only by the agent, through this type. [`Store`] keeps
//! every task in memory as well (loaded at open, updated by the method that
//! commits a write, after the commit succeeded), so [`Store::task`] and
//! [`Store::tasks`] never touch the disk. In the agent process the snapshot
//! is therefore authoritative; another process (the CLI) sees the tasks as
//! they were when it opened the store. Image records are written by both
//! processes and are always read from the database.
//!
//! # The cache
//!
//! Answers of other services that never change for their key (ECS task
//! definitions and service revisions, by ARN) are kept in a `cache` table
//! ([`Store::cached`]), so that a restart, or `serve` after the boot's
//! `pullauth prefetch`, need not ask again. Rows are `(kind, key) ->
//! record`, the record's format the writer's. A cache, never a source of
//! truth and never a secret: callers treat every error as a miss.
//!
//! The file is created with mode 0600 (SQLite gives its `-wal` and `-shm`
//! files the same mode) and holds no secret. A file at that path that is not
//! a pullauth database, for instance the redb file an older pullauth kept
//! there, is refused and never replaced.

pub mod model;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

pub use model::{Container, ImageRecord, Status, Task, rfc3339_millis, rfc3339_seconds};

/// The state file's name inside `ECS_DATADIR`.
pub const STATE_FILE: &str = "pullauth.db";

/// How long an operation waits for another process's write to finish
/// before it fails with [`StoreError::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pages of WAL after which a commit copies them into the database file
/// (SQLite's default is 1,000, 4 MiB: more than a small `ECS_DATADIR` may
/// have room for, and the WAL only shrinks after such a checkpoint).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 100;
/// The size the WAL file is cut back to after a checkpoint.
const WAL_SIZE_LIMIT_BYTES: i64 = 1 << 20;

/// `PRAGMA application_id` of a pullauth database ("pull" in ASCII), so
/// that another program's SQLite file is recognised as not ours.
const APPLICATION_ID: i32 = 0x7075_6c6c;
/// `PRAGMA user_version`: the layout of the tables below.
const SCHEMA_VERSION: i32 = 1;
const SCHEMA: &str = "
    CREATE TABLE tasks (arn TEXT PRIMARY KEY NOT NULL, record TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE images (reference TEXT PRIMARY KEY NOT NULL, record TEXT NOT NULL) WITHOUT ROWID;
";
/// The cache of other services' immutable answers ([`Store::cached`]).
/// Added to layout version 1 without a new version: created when missing
/// (a database of an older build gets it at open), and a build that does
/// not know it ignores it, so downgrading pullauth keeps the store usable.
const CACHE_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS cache (
        kind TEXT NOT NULL, key TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;
";

/// The first 16 bytes of every SQLite database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// The first bytes of a redb file (what pullauth used before SQLite).
const REDB_MAGIC: &[u8; 9] = b"redb\x1a\x0a\xa9\x0d\x0a";

/// Why the state could not be opened, read or written.
///
/// [`StoreError::is_setup`] sorts the variants: a store that cannot be
/// opened, is damaged or is not ours needs the operator (fix `ECS_DATADIR`);
/// the others are failures at runtime (a full disk, another process holding
/// the file for too long) that may go away.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot use ECS_DATADIR {dir} (create it and make it writable by this user, \
         or unset ECS_DATADIR to keep state in memory)"
    )]
    DataDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state file {path} is an older pullauth's redb file; this pullauth keeps its state in \
         SQLite. It was left untouched: move it away to start with empty state (its tasks and \
         image records are not carried over)"
    )]
    Redb { path: PathBuf },
    #[error(
        "state file {path} is not a pullauth SQLite database ({detail}); it was left untouched. \
         Move it away to start with empty state, or restore it from a backup"
    )]
    NotOurs { path: PathBuf, detail: String },
    #[error(
        "state file {path} is damaged or is not a pullauth state file ({detail}); it was left \
         untouched. Move it aside to start with empty state, or restore it from a backup"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot open state file {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error(
        "state file {path} is busy: another process kept it locked for more than {}s",
        BUSY_TIMEOUT.as_secs()
    )]
    Busy { path: PathBuf },
    #[error("state file {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("state file {path}: record {key:?} is not readable: {detail}")]
    Record {
        path: PathBuf,
        key: String,
        detail: String,
    },
}

impl StoreError {
    /// Whether the store cannot be used until the operator acts (it cannot
    /// be opened, is damaged, or is not ours): a configuration problem, as
    /// opposed to a read or write that failed at runtime.
    pub fn is_setup(&self) -> bool {
        match self {
            StoreError::DataDir { .. }
            | StoreError::Redb { .. }
            | StoreError::NotOurs { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Open { .. }
            | StoreError::Record { .. } => true,
            StoreError::Busy { .. } | StoreError::Io { .. } => false,
        }
    }
}

/// Which registry key and user a pull used (never a secret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PulledWith {
    pub registry_key: Option<String>,
    pub username: Option<String>,
}

/// The task and image store; cheap to clone (clones share one connection
/// and one snapshot).
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// A task in the snapshot, with the JSON it was stored as, so that
/// listing tasks needs no encoding either ([`Store::tasks_json`]).
#[derive(Debug)]
struct Recorded {
    task: Task,
    json: String,
}

#[derive(Debug)]
struct Shared {
    /// One connection per process: SQLite connections are not `Sync`, and
    /// writes are serialised by the file anyway. Held while the snapshot is
    /// updated after a commit, so the snapshot follows commit order.
    conn: Mutex<Connection>,
    /// `None` when in memory.
    path: Option<PathBuf>,
    /// Every task, by ARN: what the last successful commits left.
    tasks: RwLock<BTreeMap<String, Recorded>>,
    /// Set when the last write failed (the disk may be full); cleared by the
    /// next successful write. The agent reports it on `/healthz`.
    write_failed: AtomicBool,
}

impl Store {
    /// Opens (or creates) `dir/pullauth.db`. An existing file that is not
    /// a pullauth database, or is damaged, is an error; it is never
    /// written to or replaced.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let data_dir = |source| StoreError::DataDir {
            dir: dir.to_owned(),
            source,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(data_dir(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "it exists and is not a directory",
            )));
        }
        std::fs::create_dir_all(dir).map_err(data_dir)?;
        let path = dir.join(STATE_FILE);
        // Create the file ourselves so that it never exists with a wider mode.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(data_dir)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(data_dir)?;
        check_header(&mut file, &path)?;
        drop(file);
        check_intact(&path)?;

        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(&path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| open_error(&path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| open_error(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(state = %path.display(), mode, "the state file is not in WAL mode; a second process may wait for the agent's writes");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| open_error(&path, e))?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(|e| open_error(&path, e))?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
            .map_err(|e| open_error(&path, e))?;
        init_schema(&mut conn, &path)?;
        Store::with_connection(conn, Some(path))
    }

    /// A store that lives only as long as the process.
    pub fn in_memory() -> Store {
        let mut conn = Connection::open_in_memory().expect("an in-memory SQLite database opens");
        init_schema(&mut conn, Path::new("<memory>"))
            .expect("creating tables in memory cannot fail");
        Store::with_connection(conn, None).expect("an empty database has no unreadable task")
    }

    fn with_connection(conn: Connection, path: Option<PathBuf>) -> Result<Store, StoreError> {
        let store = Store {
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                path,
                tasks: RwLock::new(BTreeMap::new()),
                write_failed: AtomicBool::new(false),
            }),
        };
        let loaded = store.load_tasks()?;
        *store.snapshot_mut() = loaded;
        Ok(store)
    }

    /// The state file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.shared.path.as_deref()
    }

    /// Whether the last write failed (the disk may be full); the agent
    /// reports this on `/healthz`.
    pub fn write_failing(&self) -> bool {
        self.shared.write_failed.load(Ordering::Relaxed)
    }

    /// Frees the memory SQLite holds for the connection that it can do
    /// without (its page cache; pages are read again from the file, or the
    /// kernel's cache of it, when needed). After a burst the cache holds
    /// pages of tasks long removed, allocated all over the heap, where they
    /// keep the allocator from returning the memory around them; the agent
    /// calls this before it returns free memory to the system.
    pub fn release_memory(&self) {
        if let Err(e) = self.lock().release_memory() {
            tracing::debug!(error = %e, "SQLite could not release memory");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.shared
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Recorded>> {
        self.shared
            .tasks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Recorded>> {
        self.shared
            .tasks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one write transaction (taking the write lock at once, so
    /// that two processes never deadlock upgrading a read) and commits it;
    /// then `committed` sees the result while the connection is still held,
    /// so that snapshot updates happen in commit order and only after a
    /// commit succeeded.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
        committed: impl FnOnce(&T),
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let result = (|| {
            let txn = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.sql(e))?;
            let value = f(&txn)?;
            txn.commit().map_err(|e| self.sql(e))?;
            Ok(value)
        })();
        match &result {
            Ok(value) => committed(value),
            // On a full disk, move what the WAL holds into the database file
            // and cut the WAL back, so that the next write has room if any
            // can be made; failing is fine, the next failed write tries again.
            Err(StoreError::Io { .. }) if self.shared.path.is_some() => {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "checkpoint after a failed write");
                }
            }
            Err(_) => {}
        }
        self.shared
            .write_failed
            .store(result.is_err(), Ordering::Relaxed);
        result
    }

    fn display_path(&self) -> PathBuf {
        self.shared
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<memory>"))
    }

    /// Sorts a SQLite error at runtime.
    fn sql(&self, e: rusqlite::Error) -> StoreError {
        runtime_error(&self.display_path(), e)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        text: &str,
    ) -> Result<T, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Record {
            path: self.display_path(),
            key: key.to_owned(),
            detail: e.to_string(),
        })
    }

    fn encode<T: serde::Serialize>(&self, value: &T) -> String {
        serde_json::to_string(value).expect("records serialize to JSON")
    }

    fn load_tasks(&self) -> Result<BTreeMap<String, Recorded>, StoreError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare("SELECT arn, record FROM tasks")
            .map_err(|e| self.sql(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|e| self.sql(e))?;
        let mut tasks = BTreeMap::new();
        for row in rows {
            let (arn, text) = row.map_err(|e| self.sql(e))?;
            let task = self.decode::<Task>(&arn, &text)?;
            tasks.insert(arn, Recorded { task, json: text });
        }
        Ok(tasks)
    }

    /// Records a new task (or replaces one with the same ARN): one
    /// transaction, one `fsync`, for the task and all its containers.
    pub fn put_task(&self, task: &Task) -> Result<(), StoreError> {
        let record = self.encode(task);
        self.write(
            |txn| {
                txn.execute(
                    "INSERT OR REPLACE INTO tasks (arn, record) VALUES (?1, ?2)",
                    params![task.arn, record],
                )
                .map_err(|e| self.sql(e))?;
                Ok(record)
            },
            |record| {
                let recorded = Recorded {
                    task: task.clone(),
                    json: record.clone(),
                };
                self.snapshot_mut().insert(task.arn.clone(), recorded);
            },
        )
        .map(|_| ())
    }

    /// Applies `change` to the task `arn` in one transaction and returns the
    /// result; `None` if there is no such task.
    pub fn update_task(
        &self,
        arn: &str,
        change: impl FnOnce(&mut Task),
    ) -> Result<Option<Task>, StoreError> {
        self.write(
            |txn| {
                let current: Option<String> = txn
                    .query_row("SELECT record FROM tasks WHERE arn = ?1", [arn], |row| {
                        row.get(0)
                    })
                    .optional()
                    .map_err(|e| self.sql(e))?;
                let Some(text) = current else {
                    return Ok(None);
                };
                let mut task = self.decode::<Task>(arn, &text)?;
                change(&mut task);
                let json = self.encode(&task);
                txn.execute(
                    "UPDATE tasks SET record = ?2 WHERE arn = ?1",
                    params![arn, json],
                )
                .map_err(|e| self.sql(e))?;
                Ok(Some(Recorded { task, json }))
            },
            |updated| {
                if let Some(recorded) = updated {
                    let copy = Recorded {
                        task: recorded.task.clone(),
                        json: recorded.json.clone(),
                    };
                    self.snapshot_mut().insert(arn.to_owned(), copy);
                }
            },
        )
        .map(|updated| updated.map(|recorded| recorded.task))
    }

    /// Removes every task that is finished (each container final) and
    /// whose last pull ended before `cutoff`, in one transaction; returns
    /// how many were removed. Image records are kept.
    pub fn remove_finished_before(&self, cutoff: SystemTime) -> Result<usize, StoreError> {
        let finished_before = |task: &Task| {
            task.containers.iter().all(|c| c.known_status.is_final())
                && task
                    .pull_stopped_at
                    .as_deref()
                    .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
                    .is_some_and(|at| at < cutoff)
        };
        let expired = || -> Vec<String> {
            self.snapshot()
                .values()
                .filter(|recorded| finished_before(&recorded.task))
                .map(|recorded| recorded.task.arn.clone())
                .collect()
        };
        // Nothing to do is no write: an empty commit would also clear
        // `write_failing` while real writes still fail.
        if expired().is_empty() {
            return Ok(0);
        }
        // Chosen again under the connection lock (held by `write`), so that
        // no update can slip in between choosing and removing.
        self.write(
            |txn| {
                let expired = expired();
                if expired.is_empty() {
                    return Ok(expired);
                }
                let mut delete = txn
                    .prepare("DELETE FROM tasks WHERE arn = ?1")
                    .map_err(|e| self.sql(e))?;
                for arn in &expired {
                    delete.execute([arn]).map_err(|e| self.sql(e))?;
                }
                Ok(expired)
            },
            |expired| {
                let mut tasks = self.snapshot_mut();
                for arn in expired {
                    tasks.remove(arn);
                }
            },
        )
        .map(|expired| expired.len())
    }

    /// The task `arn`, if recorded (from the in-memory snapshot).
    pub fn task(&self, arn: &str) -> Result<Option<Task>, StoreError> {
        Ok(self
            .snapshot()
            .get(arn)
            .map(|recorded| recorded.task.clone()))
    }

    /// Every task, ordered by ARN (from the in-memory snapshot).
    pub fn tasks(&self) -> Result<Vec<Task>, StoreError> {
        Ok(self
            .snapshot()
            .values()
            .map(|recorded| recorded.task.clone())
            .collect())
    }

    /// Every task as a JSON array, ordered by ARN: the same as serializing
    /// [`Store::tasks`], but made of the records as they were stored, so
    /// that a listing costs a copy, not an encoding of every task.
    pub fn tasks_json(&self) -> String {
        let tasks = self.snapshot();
        let len = tasks.values().map(|r| r.json.len() + 1).sum::<usize>();
        let mut out = String::with_capacity(len + 2);
        out.push('[');
        for (i, recorded) in tasks.values().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&recorded.json);
        }
        out.push(']');
        out
    }

    /// The record for image `reference`, if any.
    pub fn image(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        let conn = self.lock();
        let text: Option<String> = conn
            .query_row(
                "SELECT record FROM images WHERE reference = ?1",
                [reference],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        text.map(|text| self.decode(reference, &text)).transpose()
    }

    /// Every image record, ordered by reference.
    pub fn images(&self) -> Result<Vec<(String, ImageRecord)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare("SELECT reference, record FROM images ORDER BY reference")
            .map_err(|e| self.sql(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (reference, text) = row.map_err(|e| self.sql(e))?;
            let record = self.decode(&reference, &text)?;
            out.push((reference, record));
        }
        Ok(out)
    }

    /// Records that image `reference` (local ID `image_id`) was just used,
    /// and whether a pull from the registry succeeded this time, keeping
    /// what earlier records knew (whichever process wrote them). One
    /// transaction.
    pub fn record_image_use(
        &self,
        reference: &str,
        image_id: &str,
        pulled: bool,
        pulled_with: PulledWith,
    ) -> Result<(), StoreError> {
        let now = model::now_rfc3339();
        self.write(
            |txn| {
                let previous: Option<ImageRecord> = txn
                    .query_row(
                        "SELECT record FROM images WHERE reference = ?1",
                        [reference],
                        |row| row.get::<_, String>(0),
                    )
                    .optional()
                    .map_err(|e| self.sql(e))?
                    .map(|text| self.decode(reference, &text))
                    .transpose()?;
                let record = ImageRecord {
                    image_id: Some(image_id.to_owned()),
                    names: vec![reference.to_owned()],
                    pulled_at: if pulled {
                        Some(now.clone())
                    } else {
                        previous.as_ref().and_then(|p| p.pulled_at.clone())
                    },
                    last_used_at: now,
                    pull_succeeded: pulled || previous.as_ref().is_some_and(|p| p.pull_succeeded),
                    registry_key: pulled_with.registry_key,
                    username: pulled_with.username,
                    prefetched: previous.as_ref().is_some_and(|p| p.prefetched),
                };
                put_image_in(txn, reference, &self.encode(&record)).map_err(|e| self.sql(e))
            },
            |()| {},
        )
    }

    /// Marks image `reference` as prefetched (pulled by prefetch: the
    /// follower may remove it when nothing names it any more) or not (a
    /// task used it: never removed by pullauth). One transaction; no
    /// record, nothing to mark.
    pub fn set_prefetched(&self, reference: &str, prefetched: bool) -> Result<(), StoreError> {
        let Some(mut record) = self.image(reference)? else {
            return Ok(());
        };
        if record.prefetched == prefetched {
            return Ok(());
        }
        record.prefetched = prefetched;
        self.put_image(reference, &record)
    }

    /// The references of every image marked prefetched.
    pub fn prefetched_images(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .images()?
            .into_iter()
            .filter(|(_, record)| record.prefetched)
            .map(|(reference, _)| reference)
            .collect())
    }

    /// Forgets image `reference` (removed from the engine).
    pub fn forget_image(&self, reference: &str) -> Result<(), StoreError> {
        self.write(
            |txn| {
                txn.execute("DELETE FROM images WHERE reference = ?1", [reference])
                    .map(|_| ())
                    .map_err(|e| self.sql(e))
            },
            |()| {},
        )
    }

    /// Stores the record for image `reference`.
    pub fn put_image(&self, reference: &str, record: &ImageRecord) -> Result<(), StoreError> {
        let text = self.encode(record);
        self.write(
            |txn| put_image_in(txn, reference, &text).map_err(|e| self.sql(e)),
            |()| {},
        )
    }
}

/// The cache (see the crate docs).
impl Store {
    /// The record `key` of `kind`, if kept.
    pub fn cached(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.lock()
            .query_row(
                "SELECT record FROM cache WHERE kind = ?1 AND key = ?2",
                params![kind, key],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Keeps `record` as `key` of `kind`, replacing what was kept. One
    /// transaction.
    pub fn put_cached(&self, kind: &str, key: &str, record: &str) -> Result<(), StoreError> {
        self.write(
            |txn| {
                txn.execute(
                    "INSERT OR REPLACE INTO cache (kind, key, record) VALUES (?1, ?2, ?3)",
                    params![kind, key, record],
                )
                .map(|_| ())
                .map_err(|e| self.sql(e))
            },
            |()| {},
        )
    }

    /// Drops every record of `kind` whose key is not in `keep`, in one
    /// transaction; returns how many were dropped. Nothing to drop is no
    /// write.
    pub fn retain_cached(
        &self,
        kind: &str,
        keep: &std::collections::HashSet<String>,
    ) -> Result<usize, StoreError> {
        let stale = || -> Result<Vec<String>, StoreError> {
            let conn = self.lock();
            let mut statement = conn
                .prepare("SELECT key FROM cache WHERE kind = ?1")
                .map_err(|e| self.sql(e))?;
            let keys = statement
                .query_map([kind], |row| row.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| self.sql(e))?;
            Ok(keys.into_iter().filter(|key| !keep.contains(key)).collect())
        };
        let stale = stale()?;
        if stale.is_empty() {
            return Ok(0);
        }
        self.write(
            |txn| {
                let mut delete = txn
                    .prepare("DELETE FROM cache WHERE kind = ?1 AND key = ?2")
                    .map_err(|e| self.sql(e))?;
                let mut dropped = 0;
                for key in &stale {
                    dropped += delete
                        .execute(params![kind, key])
                        .map_err(|e| self.sql(e))?;
                }
                Ok(dropped)
            },
            |_| {},
        )
    }
}

fn put_image_in(
    txn: &rusqlite::Transaction<'_>,
    reference: &str,
    record: &str,
) -> rusqlite::Result<()> {
    txn.execute(
        "INSERT OR REPLACE INTO images (reference, record) VALUES (?1, ?2)",
        params![reference, record],
    )
    .map(|_| ())
}

/// Refuses a file that does not start like a SQLite database, naming the
/// redb file an older pullauth left there. An empty file is a new database.
fn check_header(file: &mut std::fs::File, path: &Path) -> Result<(), StoreError> {
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    file.take(SQLITE_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|e| StoreError::Open {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if head.is_empty() || head == SQLITE_MAGIC {
        return Ok(());
    }
    if head.starts_with(REDB_MAGIC) {
        return Err(StoreError::Redb {
            path: path.to_owned(),
        });
    }
    Err(StoreError::NotOurs {
        path: path.to_owned(),
        detail: "it does not start with the SQLite header".to_owned(),
    })
}

/// Checks on a read-only connection, before anything could write to the
/// file, that it is a pullauth database of a known layout (or a new, empty
/// one) and that SQLite's `quick_check` finds no damage.
fn check_intact(path: &Path) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| open_error(path, e))?;
    check_ours(&conn, path)?;
    let mut statement = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| open_error(path, e))?;
    let problems = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| open_error(path, e))?;
    match problems.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => Err(corrupt(format!(
            "SQLite integrity check: {}",
            problems.join("; ")
        ))),
    }
}

/// Creates the tables in a new database, or checks that an existing one is
/// ours and of a layout this build knows. One transaction, so that two
/// processes opening a new file at once do not both create it.
fn init_schema(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let txn = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| open_error(path, e))?;
    if check_ours(&txn, path)? {
        txn.execute_batch(SCHEMA).map_err(|e| open_error(path, e))?;
        txn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(|e| open_error(path, e))?;
        txn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| open_error(path, e))?;
    }
    txn.execute_batch(CACHE_SCHEMA)
        .map_err(|e| open_error(path, e))?;
    txn.commit().map_err(|e| open_error(path, e))
}

/// Whether the database is new and empty (`true`), or ours and of the
/// layout this build knows (`false`); anything else is refused.
fn check_ours(conn: &Connection, path: &Path) -> Result<bool, StoreError> {
    let read = |sql: &str| -> Result<i64, StoreError> {
        conn.query_row(sql, [], |row| row.get(0))
            .map_err(|e| open_error(path, e))
    };
    let application_id = read("PRAGMA application_id")?;
    let version = read("PRAGMA user_version")?;
    let objects = read("SELECT count(*) FROM sqlite_master")?;
    if application_id == 0 && objects == 0 {
        Ok(true)
    } else if application_id != i64::from(APPLICATION_ID) {
        Err(StoreError::NotOurs {
            path: path.to_owned(),
            detail: format!(
                "a SQLite database of another program (application_id {application_id:#x})"
            ),
        })
    } else if version != i64::from(SCHEMA_VERSION) {
        Err(StoreError::NotOurs {
            path: path.to_owned(),
            detail: format!(
                "its layout is version {version}, this pullauth reads version {SCHEMA_VERSION}; \
                 was it written by a newer pullauth?"
            ),
        })
    } else {
        Ok(false)
    }
}

/// Sorts a SQLite error met while opening: damage is [`StoreError::Corrupt`],
/// waiting too long is [`StoreError::Busy`], the rest is [`StoreError::Open`].
fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    match runtime_error(path, e) {
        StoreError::Io { path, detail } => StoreError::Open { path, detail },
        other => other,
    }
}

/// Sorts a SQLite error met at runtime.
fn runtime_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy { path },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            detail: e.to_string(),
        },
        // SQLite reports ENOSPC as SQLITE_FULL; say it as the OS would.
        Some(ErrorCode::DiskFull) => StoreError::Io {
            path,
            detail: format!("{e}: No space left on device"),
        },
        _ => StoreError::Io {
            path,
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
