//! The Unix-socket listener for node-local callers: plain HTTP/1.1 (and h2c), each connection
//! tagged with the peer's uid/gid (`SO_PEERCRED`) for the routes' `allow` rules.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use super::connection::{CallerService, PLAIN_DEFAULT_PORT, serve_io};
use super::serve;
use crate::access::{Caller, UnixPeer};

pub use crate::config::limits::DEFAULT_UNIX_SOCKET_MODE;

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

/// A bound Unix socket and its file, which closing removes.
#[derive(Debug)]
pub(crate) struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl serve::Accept for UnixSocket {
    type Io = UnixStream;
    type Peer = Caller;

    async fn accept(&self) -> io::Result<(UnixStream, Caller)> {
        // Only the `accept` awaits, so dropping this between connections loses none.
        loop {
            let (stream, _) = self.listener.accept().await?;
            if let Some(caller) = caller_of(&stream, &self.path) {
                return Ok((stream, caller));
            }
        }
    }

    fn close(self) {
        // As for TCP: close the socket (and remove its file) first, so new callers are refused
        // at once.
        drop(self.listener);
        remove_socket(&self.path);
    }
}

/// Serves a Unix-socket listener until shutdown, like the TCP loop (same connection cap), then
/// removes the socket file and drains. Returns whether every connection closed within the drain.
pub(crate) async fn accept_loop(
    listener: UnixListener,
    path: PathBuf,
    service: CallerService,
    options: serve::Options,
) -> bool {
    let socket = UnixSocket { listener, path };
    serve::serve(socket, options, move |stream, caller, watcher, activity| {
        serve_io(
            stream,
            caller,
            PLAIN_DEFAULT_PORT,
            service.clone(),
            watcher,
            activity,
        )
    })
    .await
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
