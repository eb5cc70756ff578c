//! One accept loop for every listener: caller TCP (plain or TLS), Unix sockets and the admin
//! listener. It keeps a connection cap (evicting the longest-idle connection to admit a new one),
//! opens a span per connection (listener, peer), closes a connection whose current phase outlives
//! its deadline (see `activity.rs`), and on shutdown closes the listening socket first, then
//! drains. Listeners differ only in what they accept and how they serve one connection, which
//! they pass in; the TLS handshake belongs to the connection, so a slow handshake never holds up
//! `accept`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::activity::{Activity, Deadlines, Ended};
use crate::locks::lock_unpoisoned;
use crate::metrics;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What each connection's task checks it against and gives back when it ends, shared by a
/// listener's connections.
#[derive(Debug)]
struct Watched {
    /// The listener as metrics name it.
    kind: &'static str,
    deadlines: Deadlines,
    /// The listener's cap: its slots and open connections.
    slots: Arc<Semaphore>,
    open: Arc<OpenConnections>,
}

/// A connection's slot under its listener's cap and its place in the open set; dropping it (as
/// the connection's task ends) frees both. One pointer and an id, where a semaphore permit and a
/// registration would keep two pointers more in every connection's task (issue 13).
struct Held {
    watched: Arc<Watched>,
    id: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        // The permit `slot` forgot when it admitted the connection: to the loop that evicted
        // this connection, if one did, else back to the semaphore.
        let freed = Freed(Some(Arc::clone(&self.watched.slots)));
        let handoff = {
            let mut inner = self.watched.open.lock();
            inner.by_id.remove(&self.id);
            inner.handoffs.remove(&self.id)
        };
        if let Some(evictor) = handoff {
            // Refused (the evictor gave up): `freed` comes back and goes to the semaphore.
            let _ = evictor.send(freed);
        }
    }
}

/// A freed slot on its way from an evicted connection to the accept loop that evicted it. Given
/// to the semaphore if dropped instead of kept ([`Freed::keep`]), so no path loses a slot: the
/// loop may give up waiting (shutdown) with the slot already sent.
#[derive(Debug)]
struct Freed(Option<Arc<Semaphore>>);

impl Freed {
    /// The slot is the new connection's now.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Freed {
    fn drop(&mut self) {
        if let Some(slots) = self.0.take() {
            slots.add_permits(1);
        }
    }
}

/// A listening socket the loop can take connections from.
pub(crate) trait Accept: Send + 'static {
    /// One accepted connection.
    type Io: Send + 'static;
    /// Who connected: named in the connection's span and handed to the connection.
    type Peer: fmt::Display + Send + Sync + 'static;

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

/// What the loop does with a connection beyond the cap once no idle connection could be evicted
/// (every open connection has a request in flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtCap {
    /// Hold the new connection unserved and stop calling `accept` until a connection closes:
    /// further callers wait in the kernel's listen backlog (and are then refused by the kernel)
    /// instead of being accepted and dropped, which would cost a handshake each and teach clients
    /// to retry in a tight loop.
    Wait,
    /// Close the new connection at once (admin: a misbehaving scraper must not hold probes off).
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
    /// The listener as metrics name it: `caller` or `admin`.
    pub kind: &'static str,
    /// Whether each connection starts with a TLS handshake.
    pub tls: bool,
    /// The deadline of each phase of a connection.
    pub deadlines: Deadlines,
    /// Most connections open at once, shared by every accept loop given a clone of it (one
    /// listener's sockets on several worker threads).
    pub cap: ConnectionCap,
    /// What happens beyond `max_connections` when no connection is idle.
    pub at_cap: AtCap,
    /// What happens to open connections on shutdown.
    pub drain: Drain,
    /// Becomes `true` when the listener is to stop (or the sender is dropped).
    pub shutdown: watch::Receiver<bool>,
    /// Told the number of open connections once the listening socket is closed.
    pub stopped: Option<oneshot::Sender<usize>>,
}

/// Accepts until shutdown, handing each connection to `handle` (with a watcher for the graceful
/// drain and the connection's [`Activity`] to report progress to) in a task of its own, which
/// also closes the connection when a phase outlives its deadline or when it is evicted; then
/// closes the socket and drains. Returns whether every connection closed within the drain.
///
/// At `max_connections`, a new connection first evicts the open connection that has had no
/// request in flight for longest (as nginx reuses its idle keep-alive connections), so sockets
/// that hold a slot without using it never keep a caller out.
pub(crate) async fn serve<A, H, F>(listener: A, mut options: Options, mut handle: H) -> bool
where
    A: Accept,
    H: FnMut(A::Io, A::Peer, Watcher, Arc<Activity>) -> F,
    // `Unpin`: boxed by `handle` (a connection's future is large, and `select!` below would keep
    // it twice), not boxed again here.
    F: Future<Output = ()> + Send + Unpin + 'static,
{
    let label = options.label.as_str();
    let graceful = GracefulShutdown::new();
    let max = options.cap.max;
    let slots = Arc::clone(&options.cap.slots);
    let open = Arc::clone(&options.cap.open);
    let this_loop = open.add_loop();
    // One copy for the listener: each connection's task keeps a pointer to it.
    let watched = Arc::new(Watched {
        kind: options.kind,
        deadlines: options.deadlines,
        slots: Arc::clone(&slots),
        open: Arc::clone(&open),
    });
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = options.shutdown.wait_for(|stop| *stop) => break,
            // Reap finished connections so the set does not grow.
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
        match slot(&slots, &open, &options, max, &peer).await {
            Slot::Granted => {}
            Slot::Refused => continue,
            Slot::Shutdown => break,
        }
        // `cert`: a TLS caller's certificate subject, recorded once the handshake has verified it.
        let span = tracing::info_span!(
            "connection",
            listener = label,
            peer = %peer,
            cert = tracing::field::Empty
        );
        let activity = Arc::new(Activity::new(options.tls, Arc::clone(&open.became_idle)));
        let id = open.register(this_loop, Arc::clone(&activity));
        // The slot `slot` took is given back by `Held` when the task ends.
        let held = Held {
            watched: Arc::clone(&watched),
            id,
        };
        // Boxed by `handle` (`F: Unpin`): the task below keeps `served` twice, once as the
        // captured value and once moved into `select!` (the compiler does not overlap them), so
        // inline a plain HTTP connection's task took 9,520 bytes; boxed, 432 plus the future's
        // own 4,064 (debug build).
        let served = handle(io, peer, graceful.watcher(), Arc::clone(&activity));
        let task = async move {
            let watched = &held.watched;
            tokio::select! {
                () = served => {}
                ended = activity.watch(&watched.deadlines) => match ended {
                    Ended::Evicted => {
                        tracing::debug!(listener = watched.kind, "idle connection evicted to admit a new one");
                    }
                    Ended::Expired(expired) => {
                        tracing::debug!(phase = expired.as_str(), "connection closed: phase outlived its deadline");
                        metrics::connections::deadline(watched.kind, expired.as_str());
                    }
                },
            }
            drop(held);
        };
        // A disabled span (logs above `info`) is not kept in the task (issue 13).
        if span.is_disabled() {
            spawn(&mut connections, options.drain, task);
        } else {
            spawn(&mut connections, options.drain, task.instrument(span));
        }
    }
    listener.close();
    let connections_open = Arc::clone(&open);
    let open = graceful.count();
    tracing::debug!(listener = label, open, "listener stopped accepting");
    if let Some(stopped) = options.stopped.take() {
        let _ = stopped.send(open);
    }
    match options.drain {
        Drain::Graceful(timeout) => {
            // Every connection of this loop is told, as `graceful` tells hyper's HTTP/2 ones:
            // HTTP/1 ones (parked ones included, which hyper no longer holds) close after their
            // request in flight, or at once. Only this loop's: the set is shared with the
            // listener's loops on other workers, and a parked connection told here would close
            // before its own loop counted it for the drain's report.
            connections_open.drain_loop(this_loop);
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

/// Spawns a connection's task. Only an aborting drain needs the tasks' handles; a graceful one
/// counts connections by their watchers and leaves stragglers to end on their own, so its tasks
/// run detached: no handle and no entry in a set, per connection, for its whole life (issue 13).
fn spawn<T>(connections: &mut JoinSet<()>, drain: Drain, task: T)
where
    T: Future<Output = ()> + Send + 'static,
{
    match drain {
        Drain::Abort => {
            connections.spawn(task);
        }
        Drain::Graceful(_) => {
            tokio::spawn(task);
        }
    }
}

/// A listener's connection cap: the slots and the open connections (for eviction). Clones share
/// them, so the accept loops of one listener on several worker threads keep one global cap. Its
/// semaphore and map are touched once per connection (accept and close), never per request.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionCap {
    max: usize,
    slots: Arc<Semaphore>,
    open: Arc<OpenConnections>,
}

impl ConnectionCap {
    /// At most `max` connections (at least 1).
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            slots: Arc::new(Semaphore::new(max)),
            open: Arc::new(OpenConnections::default()),
        }
    }
}

/// The new connection's place under the cap.
enum Slot {
    /// A slot is the connection's: its permit is forgotten, and given back by [`Held`].
    Granted,
    /// Close the new connection.
    Refused,
    /// Shutdown was asked for while waiting.
    Shutdown,
}

/// A slot for a new connection: a free one; else the slot of the connection idle the longest,
/// which is evicted and hands its slot to this loop alone as it ends (another loop of the
/// listener, on another worker, could otherwise take the freed permit first and leave this one
/// waiting with a caller unserved); else, with [`AtCap::Wait`], the first slot freed or made
/// evictable (a busy connection whose requests all finished).
async fn slot(
    slots: &Arc<Semaphore>,
    open: &OpenConnections,
    options: &Options,
    max: usize,
    peer: &(dyn fmt::Display + Sync),
) -> Slot {
    let label = options.label.as_str();
    let mut shutdown = options.shutdown.clone();
    let mut said = false;
    loop {
        if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
            permit.forget();
            return Slot::Granted;
        }
        if let Some(handed) = open.evict_longest_idle() {
            metrics::connections::evicted(options.kind);
            // The evicted connection's task ends at its next poll and sends its slot here.
            tokio::select! {
                freed = handed => match freed {
                    Ok(freed) => {
                        freed.keep();
                        return Slot::Granted;
                    }
                    // Its task ended without sending: cannot happen (`Held` sends as it drops),
                    // but then its slot went to the semaphore; look again.
                    Err(_) => continue,
                },
                _ = shutdown.wait_for(|stop| *stop) => return Slot::Shutdown,
                () = tokio::time::sleep(EVICTION_WAIT) => {
                    // Dropping `handed` sends the slot, when it comes, to the semaphore.
                    tracing::warn!(listener = label, peer = %peer, "no slot freed within the eviction wait; looking again");
                    continue;
                }
            }
        }
        if options.at_cap == AtCap::Close {
            tracing::warn!(listener = label, peer = %peer, max, "connection cap reached and every connection is busy; closing");
            return Slot::Refused;
        }
        if !said {
            tracing::info!(
                listener = label,
                max,
                "connection cap reached and every connection is busy; new callers wait"
            );
            said = true;
        }
        tokio::select! {
            permit = Arc::clone(slots).acquire_owned() => match permit {
                Ok(permit) => {
                    permit.forget();
                    return Slot::Granted;
                }
                // The semaphore is never closed.
                Err(_) => return Slot::Refused,
            },
            _ = shutdown.wait_for(|stop| *stop) => return Slot::Shutdown,
            // A connection finished its last request: evict it (next turn).
            () = open.became_idle.notified() => {}
        }
    }
}

/// How long the loop waits for an evicted connection to send its slot: its task ends at its
/// next poll, so this is only reached if the runtime is starved.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The open connections of one listener, for eviction.
#[derive(Debug, Default)]
struct OpenConnections {
    inner: Mutex<OpenInner>,
    /// Told when a connection's last request in flight ends, so a loop waiting at the cap can
    /// evict it.
    became_idle: Arc<Notify>,
}

/// Bits of a connection's id in [`OpenConnections`] that name its accept loop: one listener has
/// one loop per worker thread, far fewer than 2^16, which leaves 2^48 ids per loop.
const LOOP_ID_BITS: u32 = 16;
/// The bits of an id that name its loop.
const LOOP_ID_MASK: u64 = (1 << LOOP_ID_BITS) - 1;

/// An accept loop of a listener: the low bits of its connections' ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LoopId(u64);

#[derive(Debug, Default)]
struct OpenInner {
    /// Loops registered so far ([`OpenConnections::add_loop`]).
    loops: u64,
    /// The next id's upper part (above [`LOOP_ID_BITS`]).
    next_id: u64,
    by_id: HashMap<u64, Arc<Activity>>,
    /// Evicted connections (by id) whose slot goes to the loop that evicted them. Empty but at
    /// the cap, and then one entry per eviction under way.
    handoffs: HashMap<u64, oneshot::Sender<Freed>>,
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenInner> {
        // Every critical section is a map insert, remove or scan that cannot panic midway, so a
        // poisoned lock still holds a consistent map.
        lock_unpoisoned(&self.inner)
    }

    /// A new accept loop of the listener. Its connections' ids carry it, so the set tells a
    /// loop's connections apart without keeping anything more per connection.
    fn add_loop(&self) -> LoopId {
        let mut inner = self.lock();
        let id = LoopId(inner.loops & LOOP_ID_MASK);
        inner.loops += 1;
        id
    }

    /// Adds a connection of `owner`'s; its id, for [`Held`] to remove it.
    fn register(&self, owner: LoopId, activity: Arc<Activity>) -> u64 {
        let mut inner = self.lock();
        let id = (inner.next_id << LOOP_ID_BITS) | owner.0;
        inner.next_id += 1;
        inner.by_id.insert(id, activity);
        id
    }

    /// Tells every open connection of `owner`'s that the listener drains.
    fn drain_loop(&self, owner: LoopId) {
        for (_, activity) in self
            .lock()
            .by_id
            .iter()
            .filter(|(id, _)| *id & LOOP_ID_MASK == owner.0)
        {
            activity.drain();
        }
    }

    /// Tells the connection idle the longest (no request in flight) to close; where its slot
    /// will arrive as it ends, or `None` when every open connection is busy. A scan of at most
    /// `max_connections` entries, done only at the cap.
    fn evict_longest_idle(&self) -> Option<oneshot::Receiver<Freed>> {
        let (victim, handed) = {
            let mut inner = self.lock();
            let (id, victim) = inner
                .by_id
                .iter()
                .filter_map(|(id, a)| a.idle_since().map(|since| (since, *id, a)))
                .min_by_key(|(since, ..)| *since)
                .map(|(_, id, a)| (id, Arc::clone(a)))?;
            // Registered before the connection is told, under the lock its `Held` takes to
            // leave the set: however soon it ends, its slot comes here.
            let (tx, handed) = oneshot::channel();
            inner.handoffs.insert(id, tx);
            (victim, handed)
        };
        // Outside the lock: waking its task never needs the set.
        victim.evict();
        Some(handed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;
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
            kind: "caller",
            tls: false,
            deadlines: Deadlines {
                tls_handshake: STEP,
                first_byte: STEP,
                preface: STEP,
                keep_alive: STEP,
            },
            cap: ConnectionCap::new(1),
            at_cap,
            drain,
            shutdown,
            stopped: Some(stopped),
        };
        (options, stop, open)
    }

    /// Holds each connection (and its drain watcher) with a request in flight, so it is never
    /// idle, until the caller closes it.
    async fn hold(mut stream: TcpStream, _: SocketAddr, watcher: Watcher, activity: Arc<Activity>) {
        let _busy = activity.request();
        let mut buf = [0u8; 16];
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        drop(watcher);
    }

    /// Holds each connection until its loop tells it to drain (looking every few milliseconds,
    /// bounded by `STEP`), then closes it.
    async fn until_drained(
        stream: TcpStream,
        _: SocketAddr,
        watcher: Watcher,
        activity: Arc<Activity>,
    ) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !activity.draining() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(stream);
        drop(watcher);
    }

    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(STEP, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// A waker that runs its action at the first wake: stands for another worker thread that
    /// polls the woken task at once, before the waking thread goes on.
    struct OnWake(Mutex<Option<Box<dyn FnOnce() + Send>>>);

    impl std::task::Wake for OnWake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            let action = self.0.lock().unwrap().take();
            if let Some(action) = action {
                action();
            }
        }
    }

    /// The race two workers' loops of one listener ran at the cap: loop A evicts an idle
    /// connection; its task, on the other worker, ends at once and frees the slot; that worker's
    /// loop B, with a caller of its own, takes the free slot without evicting anything; A was
    /// left waiting for a slot that never came (1 s, then its caller was refused, and the callers
    /// queued behind it waited). The evicted connection's slot must go to A.
    #[tokio::test]
    async fn an_evicted_connections_slot_goes_to_the_loop_that_evicted_it() {
        let (options, _stop, _open) = options(AtCap::Wait, Drain::Abort);
        let cap = options.cap.clone();
        // One idle connection holds the only slot.
        Arc::clone(&cap.slots).try_acquire_owned().unwrap().forget();
        let activity = Arc::new(Activity::new(false, Arc::clone(&cap.open.became_idle)));
        let id = cap
            .open
            .register(cap.open.add_loop(), Arc::clone(&activity));
        let held = Held {
            watched: Arc::new(Watched {
                kind: "caller",
                deadlines: options.deadlines,
                slots: Arc::clone(&cap.slots),
                open: Arc::clone(&cap.open),
            }),
            id,
        };
        // The other worker: told to close, the connection's task ends at once, then loop B
        // admits its caller with any free slot (and keeps it).
        let taken_by_b = Arc::new(Mutex::new(None));
        let b = Arc::clone(&taken_by_b);
        let slots = Arc::clone(&cap.slots);
        let other_worker = move || {
            drop(held);
            *b.lock().unwrap() = Some(slots.try_acquire_owned().ok());
        };
        let waker = Waker::from(Arc::new(OnWake(Mutex::new(Some(Box::new(other_worker))))));
        // The watchdog's first poll leaves the waker with the activity.
        let mut watch = Box::pin(activity.watch(&options.deadlines));
        let polled = watch
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending());

        let granted = tokio::time::timeout(STEP, slot(&cap.slots, &cap.open, &options, 1, &"a"));
        assert!(
            matches!(granted.await, Ok(Slot::Granted)),
            "the loop that evicted got no slot"
        );
        let taken = taken_by_b.lock().unwrap().take();
        assert!(
            matches!(taken, Some(None)),
            "the evicted connection's slot went to another loop"
        );
        assert_eq!(cap.slots.available_permits(), 0);
    }

    #[tokio::test]
    async fn closing_at_the_cap_drops_the_extra_caller_and_abort_closes_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (options, stop, open) = options(AtCap::Close, Drain::Abort);
        let task = tokio::spawn(serve(listener, options, |s, p, w, a| {
            Box::pin(hold(s, p, w, a))
        }));
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
        let task = tokio::spawn(serve(listener, options, |s, p, w, a| {
            Box::pin(hold(s, p, w, a))
        }));
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

    /// One listener's loops on two workers share its open set; the first loop to stop must not
    /// drain the other's connections, or a parked one closes before its own loop counts it and
    /// the drain reports fewer connections than were open (the flake of `drain_signals`).
    #[tokio::test]
    async fn a_loop_drains_only_its_own_connections_and_counts_them() {
        let cap = ConnectionCap::new(4);
        let drain = Drain::Graceful(STEP);
        let (mut first, stop_first, open_first) = options(AtCap::Wait, drain);
        let (mut second, stop_second, open_second) = options(AtCap::Wait, drain);
        first.cap = cap.clone();
        second.cap = cap;
        let first_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let second_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let second_addr = second_listener.local_addr().unwrap();
        let first_task = tokio::spawn(serve(first_listener, first, |s, p, w, a| {
            Box::pin(until_drained(s, p, w, a))
        }));
        let second_task = tokio::spawn(serve(second_listener, second, |s, p, w, a| {
            Box::pin(until_drained(s, p, w, a))
        }));
        let mut caller = TcpStream::connect(second_addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        stop_first.send(true).unwrap();
        assert_eq!(open_first.await.unwrap(), 0);
        assert!(
            tokio::time::timeout(STEP, first_task)
                .await
                .unwrap()
                .unwrap()
        );
        let mut buf = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), caller.read(&mut buf))
                .await
                .is_err(),
            "the first loop's drain closed the second loop's connection"
        );

        stop_second.send(true).unwrap();
        assert_eq!(open_second.await.unwrap(), 1);
        assert!(closed_by_server(&mut caller).await);
        assert!(
            tokio::time::timeout(STEP, second_task)
                .await
                .unwrap()
                .unwrap()
        );
    }
}
