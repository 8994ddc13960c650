//! Serving both routers until shutdown.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::agent::Agent;
use crate::api;

/// Why the control socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "control socket {path} is in use by a running agent; stop it or choose --control-socket"
    )]
    InUse { path: PathBuf },
    #[error("cannot create control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the control socket with mode 0600 from the first moment: it is
/// bound under a temporary name, restricted, then renamed into place. A
/// stale socket left by a crash is replaced; a live one is an error.
pub async fn bind_control_socket(path: &Path) -> Result<UnixListener, SocketError> {
    let bind = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(SocketError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(bind)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(bind)?;
    }
    let staging = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    // The directory may be shared; restrict before anyone can see the final name.
    let listener = UnixListener::bind(&staging).map_err(bind)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600)).map_err(bind)?;
    std::fs::rename(&staging, path).map_err(bind)?;
    Ok(listener)
}

/// Serves introspection on `tcp` and control on `unix` until `shutdown`
/// completes, then lets requests in progress finish.
pub async fn run(
    agent: Agent,
    tcp: TcpListener,
    unix: UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let introspection = axum::serve(tcp, api::introspection(agent.clone()))
        .with_graceful_shutdown(wait(stop_rx.clone()));
    let control = axum::serve(unix, api::control(agent)).with_graceful_shutdown(wait(stop_rx));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (a, b) = tokio::join!(introspection.into_future(), control.into_future());
    a.and(b)
}
