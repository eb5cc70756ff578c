//! One accept loop for every listener: caller TCP (plain or TLS), Unix sockets and the admin
//! listener. It keeps a connection cap, opens a span per connection (listener, peer), and on
//! shutdown closes the listening socket first, then drains. Listeners differ only in what they
//! accept and how they serve one connection, which they pass in; the TLS handshake belongs to the
//! connection, so a slow handshake never holds up `accept`.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument as _;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A listening socket the loop can take connections from.
pub(crate) trait Accept: Send + 'static {
    /// One accepted connection.
    type Io: Send + 'static;
    /// Who connected: named in the connection's span and handed to the connection.
    type Peer: fmt::Display + Send + 'static;

    /// The next connection. Must be cancel-safe: the loop drops it when shutdown is asked for.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, Self::Peer)>> + Send;

    /// Closes the listening socket, so new callers are refused at once.
    fn close(self)
    where
        Self: Sized,
    {
    }
}

impl Accept for TcpListener {
    type Io = TcpStream;
    type Peer = SocketAddr;

    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Responses are written in one flush per head; do not let Nagle delay them.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        Ok((stream, peer))
    }
}

/// What the loop does with a connection beyond the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtCap {
    /// Stop calling `accept` until a connection closes: further callers wait in the kernel's
    /// listen backlog (and are then refused by the kernel) instead of being accepted and
    /// dropped, which would cost a handshake each and teach clients to retry in a tight loop.
    Wait,
    /// Accept and close at once (admin: a misbehaving scraper must not hold probes off).
    Close,
}

/// What happens to open connections once the listening socket is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Ask each connection to finish its in-flight requests and close (HTTP/1 answers carry
    /// `Connection: close`, HTTP/2 gets GOAWAY), and wait up to this long; connections still
    /// busy then are left to end on their own.
    Graceful(Duration),
    /// Close every open connection at once (admin: nothing there is worth waiting for).
    Abort,
}

/// How one listener is run.
#[derive(Debug)]
pub(crate) struct Options {
    /// The listener as logs name it: its address or socket path.
    pub label: String,
    /// Most connections open at once.
    pub max_connections: usize,
    /// What happens beyond `max_connections`.
    pub at_cap: AtCap,
    /// What happens to open connections on shutdown.
    pub drain: Drain,
    /// Becomes `true` when the listener is to stop (or the sender is dropped).
    pub shutdown: watch::Receiver<bool>,
    /// Told the number of open connections once the listening socket is closed.
    pub stopped: Option<oneshot::Sender<usize>>,
}

/// Accepts until shutdown, handing each connection to `handle` (with a watcher for the graceful
/// drain) in a task of its own; then closes the socket and drains. Returns whether every
/// connection closed within the drain.
pub(crate) async fn serve<A, H, F>(listener: A, mut options: Options, mut handle: H) -> bool
where
    A: Accept,
    H: FnMut(A::Io, A::Peer, Watcher) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let label = options.label.as_str();
    let graceful = GracefulShutdown::new();
    let max = options.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let mut connections = JoinSet::new();
    loop {
        let waited = match options.at_cap {
            AtCap::Wait => tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    // The semaphore is never closed, so acquiring only fails if it were.
                    Err(_) => break,
                },
                _ = options.shutdown.wait_for(|stop| *stop) => break,
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            },
            AtCap::Close => None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = options.shutdown.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (io, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, listener = label, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Some(permit) = slot(waited, &slots, label, &peer, max) else {
            continue;
        };
        // `cert`: a TLS caller's certificate subject, recorded once the handshake has verified it.
        let span = tracing::info_span!(
            "connection",
            listener = label,
            peer = %peer,
            cert = tracing::field::Empty
        );
        let served = handle(io, peer, graceful.watcher());
        connections.spawn(
            async move {
                served.await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    listener.close();
    let open = graceful.count();
    tracing::debug!(listener = label, open, "listener stopped accepting");
    if let Some(stopped) = options.stopped.take() {
        let _ = stopped.send(open);
    }
    match options.drain {
        Drain::Graceful(timeout) => {
            let drained = tokio::time::timeout(timeout, graceful.shutdown())
                .await
                .is_ok();
            connections.detach_all();
            drained
        }
        Drain::Abort => {
            connections.shutdown().await;
            true
        }
    }
}

/// The connection's place under the cap: the permit waited for, or (closing at the cap) one
/// taken now; `None` when the cap is reached and the connection is to be closed.
fn slot(
    waited: Option<OwnedSemaphorePermit>,
    slots: &Arc<Semaphore>,
    label: &str,
    peer: &dyn fmt::Display,
    max: usize,
) -> Option<OwnedSemaphorePermit> {
    match waited {
        Some(permit) => {
            if slots.available_permits() == 0 {
                tracing::info!(
                    listener = label,
                    max,
                    "connection cap reached; new callers wait"
                );
            }
            Some(permit)
        }
        None => match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                tracing::warn!(listener = label, peer = %peer, max, "connection cap reached; closing");
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    const STEP: Duration = Duration::from_secs(10);

    fn options(
        at_cap: AtCap,
        drain: Drain,
    ) -> (Options, watch::Sender<bool>, oneshot::Receiver<usize>) {
        let (stop, shutdown) = watch::channel(false);
        let (stopped, open) = oneshot::channel();
        let options = Options {
            label: "test".into(),
            max_connections: 1,
            at_cap,
            drain,
            shutdown,
            stopped: Some(stopped),
        };
        (options, stop, open)
    }

    /// Holds each connection (and its drain watcher) until the caller closes it.
    async fn hold(mut stream: TcpStream, _: SocketAddr, watcher: Watcher) {
        let mut buf = [0u8; 16];
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        drop(watcher);
    }

    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(STEP, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn closing_at_the_cap_drops_the_extra_caller_and_abort_closes_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (options, stop, open) = options(AtCap::Close, Drain::Abort);
        let task = tokio::spawn(serve(listener, options, hold));
        let mut first = TcpStream::connect(addr).await.unwrap();
        // The first connection is being served before the second arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_by_server(&mut second).await,
            "the caller past the cap was kept"
        );
        stop.send(true).unwrap();
        assert_eq!(open.await.unwrap(), 1);
        assert!(tokio::time::timeout(STEP, task).await.unwrap().unwrap());
        assert!(
            closed_by_server(&mut first).await,
            "abort left a connection open"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the socket is still open"
        );
    }

    #[tokio::test]
    async fn a_graceful_drain_reports_connections_still_open_after_its_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let drain = Drain::Graceful(Duration::from_millis(100));
        let (options, stop, open) = options(AtCap::Wait, drain);
        let task = tokio::spawn(serve(listener, options, hold));
        let _held = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(true).unwrap();
        assert_eq!(open.await.unwrap(), 1);
        let drained = tokio::time::timeout(STEP, task).await.unwrap().unwrap();
        assert!(
            !drained,
            "a connection that ignores the drain was reported closed"
        );
    }
}
