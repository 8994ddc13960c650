//! The control socket's path: created with mode 0600, never replacing
//! anything but a dead socket, and removed at shutdown only if it is still
//! the one this process created.
//!
//! The path comes from the operator (`--control-socket`), and a typo such as
//! `--control-socket /etc/ecs/ecs.config` must not delete the configuration:
//! a regular file, a directory or a symlink at the path is a startup error,
//! and the thing there is left as it was.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

/// How long to wait for an existing socket to accept a connection before
/// deciding that nobody serves it. Connecting to a unix socket is answered
/// by the kernel at once; the bound is for a peer that is itself wedged.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the control socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "control socket {path} is in use by a running agent; stop it or choose --control-socket"
    )]
    InUse { path: PathBuf },
    #[error(
        "--control-socket {path} names {found}, not a socket; pullauth never replaces it. \
         Choose another path, or move what is there if it is not needed"
    )]
    NotASocket { path: PathBuf, found: &'static str },
    #[error("cannot create control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The socket this process created; dropping it removes the path, unless
/// something else has been put there since.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    /// The socket as created, to recognize it later: device, inode and
    /// change time (inode numbers alone are reused at once by a new file).
    identity: (u64, u64, i64, i64),
}

impl SocketGuard {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_socket() && identity(&meta) == self.identity => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the control socket");
                }
            }
            // Gone already, or replaced by someone else: not ours to remove.
            _ => {}
        }
    }
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64, i64, i64) {
    (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
}

/// What kind of thing `meta` describes, for the error message.
fn describe(meta: &std::fs::Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Makes room for a socket at `path`: nothing there is fine; a socket that
/// nobody answers on (left by a crash) is removed; a live socket, or
/// anything that is not a socket, is an error and stays untouched.
async fn clear_stale(path: &Path, live_is: impl Fn() -> SocketError) -> Result<(), SocketError> {
    let bind = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bind(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            path: path.to_owned(),
            found: describe(&meta),
        });
    }
    let probe = tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await;
    match probe {
        Ok(Err(_)) => std::fs::remove_file(path).map_err(bind),
        // Accepted, or so busy that it did not answer in time: someone is there.
        Ok(Ok(_)) | Err(_) => Err(live_is()),
    }
}

/// Binds the control socket with mode 0600 from the first moment: it is
/// bound under a temporary name next to `path`, restricted, then renamed
/// into place.
pub async fn bind_control_socket(path: &Path) -> Result<(UnixListener, SocketGuard), SocketError> {
    let bind = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    clear_stale(path, || SocketError::InUse {
        path: path.to_owned(),
    })
    .await?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(bind)?;
    }
    let name = path.file_name().map_or_else(
        || "pullauth.sock".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let staging = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    // A staging socket left by an earlier process with our pid is dead too.
    clear_stale(&staging, || SocketError::InUse {
        path: staging.clone(),
    })
    .await?;
    // The directory may be shared; restrict before anyone can see the final name.
    let listener = UnixListener::bind(&staging).map_err(bind)?;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&staging, path))
        .and_then(|()| std::fs::symlink_metadata(path));
    match placed {
        Ok(meta) => Ok((
            listener,
            SocketGuard {
                path: path.to_owned(),
                identity: identity(&meta),
            },
        )),
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            Err(bind(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_regular_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let precious = dir.path().join("precious.txt");
        std::fs::write(&precious, "ECS_CLUSTER=prod\n").expect("write");
        let err = bind_control_socket(&precious).await.expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("a regular file"), "{text}");
        assert!(text.contains(&precious.display().to_string()), "{text}");
        assert_eq!(
            std::fs::read_to_string(&precious).expect("still there"),
            "ECS_CLUSTER=prod\n"
        );
    }

    #[tokio::test]
    async fn a_directory_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("data");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(sub.join("keep"), "x").expect("write");
        let err = bind_control_socket(&sub).await.expect_err("refused");
        assert!(err.to_string().contains("a directory"), "{err}");
        assert!(sub.join("keep").exists());
    }

    #[tokio::test]
    async fn a_symlink_is_refused_and_neither_it_nor_its_target_is_touched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("ecs.config");
        std::fs::write(&target, "x").expect("write");
        let link = dir.path().join("pullauth.sock");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let err = bind_control_socket(&link).await.expect_err("refused");
        assert!(err.to_string().contains("a symbolic link"), "{err}");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).expect("target"), "x");
    }

    #[tokio::test]
    async fn a_dead_socket_is_replaced_and_a_live_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pullauth.sock");
        // A socket nobody listens on any more, as a crash leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let (listener, guard) = bind_control_socket(&path).await.expect("replaced");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(guard.path(), path);

        let err = bind_control_socket(&path).await.expect_err("in use");
        assert!(matches!(err, SocketError::InUse { .. }), "{err}");
        // The live socket still answers after the refused attempt.
        tokio::time::timeout(Duration::from_secs(5), async {
            let (_client, _server) = tokio::join!(UnixStream::connect(&path), listener.accept());
        })
        .await
        .expect("still served");
        drop(guard);
        assert!(!path.exists(), "the guard removes its own socket");
    }

    #[tokio::test]
    async fn the_guard_leaves_a_path_that_was_replaced_since() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pullauth.sock");
        let (listener, guard) = bind_control_socket(&path).await.expect("bound");
        drop(listener);
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, "someone else's file").expect("write");
        drop(guard);
        assert_eq!(
            std::fs::read_to_string(&path).expect("untouched"),
            "someone else's file"
        );
    }
}
