//! One agent per `ECS_DATADIR`: `serve` holds an exclusive `flock` on
//! `pullauth.lock` in the directory for as long as it runs, with its PID
//! written inside, so that a second agent started on the same directory
//! (say with another `--listen` and `--control-socket`) refuses to start
//! and names the one that holds it. Two agents on one store would resume
//! each other's pulls and see different tasks.
//!
//! The kernel drops the lock when the process ends, however it ends: no
//! stale lock survives a crash. `pullauth pull --pull-behavior once` reads
//! and writes the store without it, as it always did (SQLite keeps that
//! safe).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock file's name inside `ECS_DATADIR`.
pub const LOCK_FILE: &str = "pullauth.lock";

/// Why the data directory could not be locked. Every variant is the
/// operator's to fix (stop the other agent, or fix `ECS_DATADIR`), as an
/// unusable state directory is for the store: the binary exits 2 for any.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "ECS_DATADIR {dir} is in use by another pullauth agent ({holder}); \
         stop that one, or give this one a directory of its own"
    )]
    Held { dir: PathBuf, holder: String },
    /// The directory cannot hold the lock file (not a directory, read-only,
    /// no permission): the operator must fix `ECS_DATADIR`.
    #[error("ECS_DATADIR {dir} is unusable: cannot lock {path}")]
    Io {
        dir: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock on `dir` without waiting, and writes this process's
    /// PID into the lock file.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                // What the holder wrote; best effort (it may be writing).
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("PID {pid}"),
                    Err(_) => "PID unknown".to_string(),
                };
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = DataDirLock::acquire(dir.path()).expect("first");
        let written = std::fs::read_to_string(dir.path().join(LOCK_FILE)).expect("lock file");
        assert_eq!(written.trim(), std::process::id().to_string());
        // flock locks belong to the open file: a second open conflicts even
        // within one process.
        let err = DataDirLock::acquire(dir.path()).expect_err("held");
        assert!(matches!(err, LockError::Held { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("PID {}", std::process::id())),
            "{message}"
        );
        drop(held);
        // Released on drop. Other tests of this binary spawn processes: a
        // child between its fork and its exec still shares the lock file's
        // descriptor (closed on exec), so the release may show a moment
        // late. Without the release it would never show.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match DataDirLock::acquire(dir.path()) {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(matches!(e, LockError::Held { .. }), "{e:?}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("not released on drop: {e:?}"),
            }
        }
    }
}
