//! Persistent state for pullauth: tasks and image records in a redb file in
//! `ECS_DATADIR`, the counterpart of the BoltDB file the ECS agent keeps
//! there. Without a data directory the same store runs in memory.
//!
//! Every change is one redb write transaction, so a crash leaves either the
//! state before or the state after it. The file is created with mode 0600
//! and holds no secret.

pub mod model;

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use model::{Container, ImageRecord, Status, Task};

/// The state file's name inside `ECS_DATADIR`.
pub const STATE_FILE: &str = "pullauth.db";

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

/// Why the state could not be read or written.
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
        "state file {path} is in use by another process (is another `pullauth serve` running \
         with this ECS_DATADIR?)"
    )]
    InUse { path: PathBuf },
    #[error(
        "state file {path} is damaged or is not a pullauth state file ({detail}); it was left \
         untouched. Move it aside to start with empty state, or restore it from a backup"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("state file {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("state file {path}: record {key:?} is not readable: {detail}")]
    Record {
        path: PathBuf,
        key: String,
        detail: String,
    },
}

/// Which registry key and user a pull used (never a secret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PulledWith {
    pub registry_key: Option<String>,
    pub username: Option<String>,
}

/// The task and image store.
#[derive(Debug)]
pub struct Store {
    /// `None` only between closing a database that failed a write and
    /// opening it again.
    db: RwLock<Option<Database>>,
    /// `None` when in memory.
    path: Option<PathBuf>,
    /// Set when a write failed: redb refuses every later write ("previous
    /// I/O error") until the database is opened again, which the next
    /// operation does. Cleared by the next successful write.
    write_failed: AtomicBool,
}

impl Store {
    /// Opens (or creates) `dir/pullauth.db`. An existing file that redb
    /// cannot read is an error; it is never replaced.
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
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(data_dir)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(data_dir)?;
        let db = open_database(&path)?;
        let store = Store {
            db: RwLock::new(Some(db)),
            path: Some(path),
            write_failed: AtomicBool::new(false),
        };
        store.init_tables()?;
        Ok(store)
    }

    /// A store that lives only as long as the process.
    pub fn in_memory() -> Store {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory redb database always opens");
        let store = Store {
            db: RwLock::new(Some(db)),
            path: None,
            write_failed: AtomicBool::new(false),
        };
        store
            .init_tables()
            .expect("creating tables in memory cannot fail");
        store
    }

    /// The state file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init_tables(&self) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(TASKS).map_err(|e| self.corrupt(e))?;
            txn.open_table(IMAGES).map_err(|e| self.corrupt(e))?;
            Ok(())
        })
    }

    /// Whether the last write failed (the disk may be full); the agent
    /// reports this on `/healthz`.
    pub fn write_failing(&self) -> bool {
        self.write_failed.load(Ordering::Relaxed)
    }

    /// Runs `f` in a write transaction and commits it, reopening the
    /// database first if an earlier write failed.
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.io(e))?;
            let value = f(&txn)?;
            txn.commit().map_err(|e| self.io(e))?;
            Ok(value)
        });
        self.write_failed.store(result.is_err(), Ordering::Relaxed);
        result
    }

    /// Runs `f` on the open database, reopening it first if an earlier
    /// write failed.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.reopen_if_failed()?;
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard
            .as_ref()
            .ok_or_else(|| self.io("the state file is not open"))?;
        f(db)
    }

    /// Runs `f` in a read transaction.
    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.io(e))?;
            f(&txn)
        })
    }

    /// After a failed write redb refuses all further writes; closing and
    /// opening the file again recovers once the cause (e.g. a full disk) is gone.
    fn reopen_if_failed(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.write_failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.write_failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        // The old handle holds the file lock: close it before opening again.
        drop(slot.take());
        let db = open_database(path)?;
        *slot = Some(db);
        tracing::info!(state = %path.display(), "reopened the state file after a failed write");
        Ok(())
    }

    fn display_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<memory>"))
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.display_path(),
            detail: e.to_string(),
        }
    }

    fn corrupt(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.display_path(),
            detail: e.to_string(),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Record {
            path: self.display_path(),
            key: key.to_owned(),
            detail: e.to_string(),
        })
    }

    fn encode<T: serde::Serialize>(&self, value: &T) -> Vec<u8> {
        serde_json::to_vec(value).expect("records serialize to JSON")
    }

    /// Records a new task (or replaces one with the same ARN).
    pub fn put_task(&self, task: &Task) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(TASKS).map_err(|e| self.io(e))?;
            table
                .insert(task.arn.as_str(), self.encode(task).as_slice())
                .map_err(|e| self.io(e))?;
            Ok(())
        })
    }

    /// Applies `change` to the task `arn` in one transaction and returns the
    /// result; `None` if there is no such task.
    pub fn update_task(
        &self,
        arn: &str,
        change: impl FnOnce(&mut Task),
    ) -> Result<Option<Task>, StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(TASKS).map_err(|e| self.io(e))?;
            let current = match table.get(arn).map_err(|e| self.io(e))? {
                Some(bytes) => Some(self.decode::<Task>(arn, bytes.value())?),
                None => None,
            };
            let Some(mut task) = current else {
                return Ok(None);
            };
            change(&mut task);
            table
                .insert(arn, self.encode(&task).as_slice())
                .map_err(|e| self.io(e))?;
            Ok(Some(task))
        })
    }

    /// The task `arn`, if recorded.
    pub fn task(&self, arn: &str) -> Result<Option<Task>, StoreError> {
        self.get(TASKS, arn)
    }

    /// Every task, ordered by ARN.
    pub fn tasks(&self) -> Result<Vec<Task>, StoreError> {
        Ok(self.all(TASKS)?.into_iter().map(|(_, task)| task).collect())
    }

    /// The record for image `reference`, if any.
    pub fn image(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.get(IMAGES, reference)
    }

    /// Every image record, ordered by reference.
    pub fn images(&self) -> Result<Vec<(String, ImageRecord)>, StoreError> {
        self.all(IMAGES)
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(table).map_err(|e| self.io(e))?;
            match table.get(key).map_err(|e| self.io(e))? {
                Some(bytes) => Ok(Some(self.decode(key, bytes.value())?)),
                None => Ok(None),
            }
        })
    }

    fn all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(table).map_err(|e| self.io(e))?;
            let mut out = Vec::new();
            for item in table.iter().map_err(|e| self.io(e))? {
                let (key, value) = item.map_err(|e| self.io(e))?;
                out.push((
                    key.value().to_owned(),
                    self.decode(key.value(), value.value())?,
                ));
            }
            Ok(out)
        })
    }

    /// Records that image `reference` (local ID `image_id`) was just used,
    /// and whether a pull from the registry succeeded this time, keeping
    /// what earlier records knew. One transaction.
    pub fn record_image_use(
        &self,
        reference: &str,
        image_id: &str,
        pulled: bool,
        pulled_with: PulledWith,
    ) -> Result<(), StoreError> {
        let now = model::now_rfc3339();
        self.write(|txn| {
            let mut table = txn.open_table(IMAGES).map_err(|e| self.io(e))?;
            let previous: Option<ImageRecord> =
                match table.get(reference).map_err(|e| self.io(e))? {
                    Some(bytes) => Some(self.decode(reference, bytes.value())?),
                    None => None,
                };
            let record = ImageRecord {
                image_id: Some(image_id.to_owned()),
                names: vec![reference.to_owned()],
                pulled_at: if pulled {
                    Some(now.clone())
                } else {
                    previous.as_ref().and_then(|p| p.pulled_at.clone())
                },
                last_used_at: now,
                pull_succeeded: pulled || previous.is_some_and(|p| p.pull_succeeded),
                registry_key: pulled_with.registry_key,
                username: pulled_with.username,
            };
            table
                .insert(reference, self.encode(&record).as_slice())
                .map_err(|e| self.io(e))?;
            Ok(())
        })
    }

    /// Stores the record for image `reference`.
    pub fn put_image(&self, reference: &str, record: &ImageRecord) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(IMAGES).map_err(|e| self.io(e))?;
            table
                .insert(reference, self.encode(record).as_slice())
                .map_err(|e| self.io(e))?;
            Ok(())
        })
    }
}

/// Opens `path` with redb, sorting failures into "in use", "damaged" and
/// plain I/O errors.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    open_guarded(path)?.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_owned(),
        },
        // redb reports a file that is not a redb database (bad magic
        // number) as an I/O error of kind InvalidData.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if !matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Io {
                path: path.to_owned(),
                detail: io.to_string(),
            }
        }
        other => StoreError::Corrupt {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    })
}

/// Opens the database, turning a panic inside redb into an error.
///
/// redb 3.1 asserts (panics) instead of returning an error when the file is
/// shorter than its header says, i.e. a truncated state file. The default
/// panic hook is silenced for the call so that the operator sees our message
/// rather than a backtrace; this runs once at startup.
fn open_guarded(path: &Path) -> Result<Result<Database, redb::DatabaseError>, StoreError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| Database::create(path));
    std::panic::set_hook(previous);
    result.map_err(|panic| StoreError::Corrupt {
        path: path.to_owned(),
        detail: panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the file is damaged".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_task(arn: &str) -> Task {
        Task::new(
            arn.into(),
            "web".into(),
            vec![Container::new("app".into(), "r.io/app:1".into(), true)],
        )
    }

    #[test]
    fn tasks_survive_reopen_and_file_is_private() {
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
        }
        let store = Store::open(dir.path()).expect("reopen");
        let task = store.task("arn:1").expect("read").expect("still there");
        assert_eq!(task.containers[0].known_status, Status::Pulling);
        assert_eq!(store.tasks().expect("list").len(), 1);
        let mode = std::fs::metadata(dir.path().join(STATE_FILE))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn second_open_reports_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Store::open(dir.path()).expect("open");
        let err = Store::open(dir.path()).expect_err("locked");
        assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    }

    #[test]
    fn garbage_file_is_an_error_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(STATE_FILE);
        let garbage = vec![0x5a_u8; 8192];
        std::fs::write(&path, &garbage).expect("write");
        let err = Store::open(dir.path()).expect_err("corrupt");
        let text = err.to_string();
        assert!(text.contains(path.to_str().expect("utf8")), "{text}");
        assert_eq!(std::fs::read(&path).expect("read"), garbage);
    }

    #[test]
    fn truncated_state_file_panics_redb_but_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store.put_task(&sample_task("arn:1")).expect("put");
        }
        let path = dir.path().join(STATE_FILE);
        let bytes = std::fs::read(&path).expect("read");
        let truncated = &bytes[..bytes.len() / 3];
        std::fs::write(&path, truncated).expect("truncate");
        let err = Store::open(dir.path()).expect_err("truncated file must not open");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(STATE_FILE), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), truncated);
    }

    #[test]
    fn unwritable_data_dir_is_a_clear_error() {
        let err = Store::open(Path::new("/proc/pullauth-cannot-exist")).expect_err("fails");
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
        };
        store.put_image("r.io/app:1", &record).expect("put");
        assert_eq!(store.image("r.io/app:1").expect("get"), Some(record));
        assert_eq!(store.images().expect("list").len(), 1);
    }
}
