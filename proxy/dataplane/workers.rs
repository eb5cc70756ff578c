//! Thread-per-core data plane: `workers` threads, each running one current-thread Tokio runtime
//! with its own `SO_REUSEPORT` socket for every TCP listener. The kernel spreads new connections
//! over the sockets; a connection, its requests and the upstream connections it dials (through
//! the worker's lane of each client, see `net/client.rs`) stay on the worker that accepted it, so
//! no request wakes another thread. The engine, admin listener and reload watcher stay on the
//! control runtime (the caller's) and reach the workers only through the route table's
//! `arc-swap` and the shutdown `watch`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use socket2::{Domain, Protocol, Socket, Type};
use std::sync::Arc;
use tokio::runtime::{EnterGuard, Runtime};

use tokio::sync::{Barrier, oneshot};
use tokio::task::JoinSet;

use crate::net::client::set_thread_lane;

/// The listen backlog of each worker's socket (tokio's `TcpListener::bind` uses the same).
const LISTEN_BACKLOG: i32 = 1024;

/// An accept loop to run on a worker: resolves to whether its connections all closed within the
/// drain.
pub(crate) type Loop = Pin<Box<dyn Future<Output = bool> + Send + 'static>>;

/// The worker runtimes, built before anything is bound so that each socket is registered with
/// the reactor of the worker that will accept on it.
#[derive(Debug)]
pub(crate) struct Workers {
    runtimes: Vec<Runtime>,
}

impl Workers {
    /// `n` current-thread runtimes (at least one).
    pub(crate) fn build(n: usize) -> io::Result<Self> {
        let runtimes = (0..n.max(1))
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { runtimes })
    }

    /// How many workers.
    pub(crate) fn len(&self) -> usize {
        self.runtimes.len()
    }

    /// Enters worker `k`'s runtime on this thread: sockets made while the guard lives belong to
    /// its reactor.
    pub(crate) fn enter(&self, k: usize) -> EnterGuard<'_> {
        self.runtimes[k % self.runtimes.len()].enter()
    }

    /// Starts one thread per worker running its loops (`loops[k]` on worker `k`); each receiver
    /// tells, once that worker's loops have all ended, whether every one of its connections
    /// closed within the drain. The runtimes stop once every worker's loops have ended.
    pub(crate) fn start(self, loops: Vec<Vec<Loop>>) -> io::Result<Vec<oneshot::Receiver<bool>>> {
        let mut done = Vec::with_capacity(self.runtimes.len());
        let mut loops = loops.into_iter();
        // A worker's runtime also drives the upstream connections it dialed, which other threads'
        // requests may be using (a lane is shared when there are more workers than lanes, and
        // threads that are not workers take some worker's lane): no runtime stops before every
        // worker's loops have ended.
        let all_ended = Arc::new(Barrier::new(self.runtimes.len()));
        for (k, runtime) in self.runtimes.into_iter().enumerate() {
            let mine = loops.next().unwrap_or_default();
            let (tx, rx) = oneshot::channel();
            let all_ended = Arc::clone(&all_ended);
            std::thread::Builder::new()
                .name(format!("popgate-worker-{k}"))
                .spawn(move || {
                    set_thread_lane(k);
                    runtime.block_on(async move {
                        let _ = tx.send(run_loops(mine).await);
                        all_ended.wait().await;
                    });
                    // Connections still open after the drain timeout end here, with the runtime.
                    drop(runtime);
                })?;
            done.push(rx);
        }
        Ok(done)
    }
}

/// Runs `loops` to their end; whether they all drained.
async fn run_loops(loops: Vec<Loop>) -> bool {
    let mut set = JoinSet::new();
    for run in loops {
        set.spawn(run);
    }
    let mut drained = true;
    while let Some(ended) = set.join_next().await {
        match ended {
            Ok(closed) => drained &= closed,
            Err(e) => {
                tracing::warn!(error = %e, "accept loop ended abnormally");
                drained = false;
            }
        }
    }
    drained
}

/// `n` listening sockets on `addr` in one `SO_REUSEPORT` group (port 0: the port the first one
/// got), non-blocking, ready for `tokio::net::TcpListener::from_std`.
///
/// `SO_REUSEPORT` would also let a second popgate (same user) join a port this one holds, so a
/// fixed port is first bound once without it: if anything already listens there, that fails with
/// "address in use" as a plain bind always did.
pub(crate) fn bind_reuseport(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        drop(socket(addr, false)?);
    }
    let first = socket(addr, true)?;
    let local = first.local_addr()?;
    let mut sockets = Vec::with_capacity(n.max(1));
    sockets.push(first);
    for _ in 1..n {
        sockets.push(socket(local, true)?);
    }
    Ok(sockets)
}

/// One non-blocking listening socket on `addr`, with `SO_REUSEADDR` (as tokio sets) and
/// `SO_REUSEPORT` when `reuse_port`.
fn socket(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reuseport_group_shares_one_port_and_a_held_port_is_refused() {
        let group = bind_reuseport("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert!(group.iter().all(|s| s.local_addr().unwrap().port() == port));
        // A second group on the same fixed port is refused, as a plain bind is.
        let again = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], port)), 2).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AddrInUse);
    }
}
