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
/// error; the file appears at its path already with `spec.mode`.
///
/// Why not bind and then chmod: between the two the socket has the mode the process umask gives
/// (often `0755`, i.e. anyone may connect), and a neighbour that connects in that window keeps its
/// connection. So the socket is bound inside a fresh directory only the owner can enter, given its
/// mode there, and renamed into place (`rename` is atomic on one file system, and the directory
/// sits beside the target so it is the same one).
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
    let private = PrivateDir::create_beside(&spec.path)?;
    let staged = private.path.join("socket");
    let listener = UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(spec.mode))?;
    std::fs::rename(&staged, &spec.path)?;
    Ok(listener)
}

/// A directory only the owner may enter (`0700`), removed (with anything left in it) on drop.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// Creates `.<name>.bind-<pid>-<n>` in `target`'s directory.
    fn create_beside(target: &Path) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map_or_else(|| "socket".into(), |n| n.to_string_lossy());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!(".{name}.bind-{}-{n}", std::process::id()));
        // `create` (not `create_all`): an existing entry of that name is an error, never reused.
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self { path })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(error = %e, dir = %self.path.display(), "cannot remove the socket's bind directory");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_never_appears_with_another_mode() {
        // A neighbour polling the path while popgate binds: before, the socket first appeared
        // with the umask's mode (0755 under the usual 022) and was chmod-ed a moment later.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("popgate.sock");
        let spec = UnixListenerSpec {
            path: path.clone(),
            mode: 0o600,
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (path, stop) = (path.clone(), std::sync::Arc::clone(&stop));
            let started = std::sync::Arc::new(std::sync::Barrier::new(2));
            let go = std::sync::Arc::clone(&started);
            let handle = std::thread::spawn(move || {
                go.wait();
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(meta) = std::fs::symlink_metadata(&path) {
                        seen.insert(meta.permissions().mode() & 0o777);
                    }
                }
                seen
            });
            started.wait();
            handle
        };
        for _ in 0..3000 {
            let listener = bind(&spec).expect("bind");
            drop(listener);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = watcher.join().expect("watcher thread");
        let seen: Vec<String> = seen.into_iter().map(|m| format!("{m:o}")).collect();
        assert_eq!(seen, ["600"], "modes seen at the socket's path");
        // Nothing is left beside the socket.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("popgate.sock")]);
    }
}
