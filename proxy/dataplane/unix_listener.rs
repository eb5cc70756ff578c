//! The Unix-socket listener for node-local callers: plain HTTP/1.1 (and h2c), each connection
//! tagged with the peer's uid/gid (`SO_PEERCRED`) for the routes' `allow` rules.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::listener::{AcceptContext, Conn, serve_io};
use crate::access::{Caller, UnixPeer};

pub use crate::config::limits::DEFAULT_UNIX_SOCKET_MODE;
/// Pause after a failed `accept` so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// One Unix-socket listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixListenerSpec {
    /// The socket file.
    pub path: PathBuf,
    /// Its permission bits (e.g. `0o660`).
    pub mode: u32,
}

/// Binds `spec`: a stale socket file left by a previous run is replaced, any other file is an
/// error; the file gets `spec.mode`.
pub(crate) fn bind(spec: &UnixListenerSpec) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(&spec.path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(&spec.path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; popgate will not replace it",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&spec.path)?;
    std::fs::set_permissions(&spec.path, std::fs::Permissions::from_mode(spec.mode))?;
    Ok(listener)
}

/// Accepts until shutdown, like the TCP loop (same connection cap), then drains and removes the
/// socket file.
pub(crate) async fn accept_loop(listener: UnixListener, path: PathBuf, mut ctx: AcceptContext) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(ctx.settings.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit,
            _ = ctx.shutdown.changed() => break,
        };
        // The semaphore is never closed, so acquiring only fails if it were.
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let Some(caller) = caller_of(&stream, &path) else {
                    continue;
                };
                let conn = Conn {
                    caller,
                    forwarder: ctx.forwarder.clone(),
                    settings: ctx.settings.clone(),
                    watcher: graceful.watcher(),
                };
                tokio::spawn(async move {
                    serve_io(stream, 80, conn).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, listener = %path.display(), "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    // As the TCP loop: close the socket (and remove its file) first, so new callers are refused
    // at once, then report the open connections to the drain.
    drop(listener);
    remove_socket(&path);
    let open = graceful.count();
    tracing::debug!(listener = %path.display(), open, "listener stopped accepting");
    if let Some(stopped) = ctx.stopped.take() {
        let _ = stopped.send(open);
    }
    graceful.shutdown().await;
}

/// The peer's credentials; `None` (connection dropped) when the kernel cannot say, since a
/// caller without credentials could never be checked against uid/gid rules.
fn caller_of(stream: &UnixStream, path: &Path) -> Option<Caller> {
    match stream.peer_cred() {
        Ok(cred) => Some(Caller {
            unix: Some(UnixPeer {
                uid: cred.uid(),
                gid: cred.gid(),
            }),
            ..Caller::default()
        }),
        Err(e) => {
            tracing::warn!(error = %e, listener = %path.display(), "cannot read the peer's credentials; connection closed");
            None
        }
    }
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, listener = %path.display(), "cannot remove the socket file");
    }
}
