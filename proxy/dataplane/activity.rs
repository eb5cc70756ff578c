//! What one connection is doing, shared between the connection (which reports its progress), its
//! watchdog (which closes it when the current phase outlives its deadline) and the accept loop
//! (which, at the connection cap, evicts the connection idle the longest).
//!
//! Phases, each with its own deadline: the TLS handshake; waiting for the first byte; protocol
//! detection (HTTP/2: the preface and first SETTINGS frame); established. An established
//! connection is idle while no request is in flight (HTTP/1 between requests, HTTP/2 with no open
//! stream) and is closed once idle for the keep-alive timeout. A request in flight has its own
//! bounds (request timeout, body deadlines), so the watchdog leaves it alone.
//!
//! An HTTP/1 connection idle for [`PARK_GRACE`] is parked (`parking.rs`): the watchdog also wakes
//! the connection's task then, so hyper reads again and lets the connection go.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::parking::PARK_GRACE;
use crate::locks::lock_unpoisoned;

/// The deadline of each phase of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadlines {
    /// From accept to the end of the TLS handshake (TLS listeners only).
    pub tls_handshake: Duration,
    /// From accept (or the end of the TLS handshake) to the first byte.
    pub first_byte: Duration,
    /// From the first byte until the protocol is known: for HTTP/2 the preface and first SETTINGS
    /// frame; HTTP/1 is known at its first byte.
    pub preface: Duration,
    /// How long an established connection may stay with no request in flight.
    pub keep_alive: Duration,
}

/// Why the watchdog ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The accept loop needed its slot ([`Activity::evict`]).
    Evicted,
    /// A phase outlived its deadline.
    Expired(Expired),
}

/// Why the watchdog closed a connection: the phase whose deadline passed. Also a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    TlsHandshake,
    FirstByte,
    Preface,
    KeepAlive,
}

impl Expired {
    /// The label value and log field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Expired::TlsHandshake => "tls_handshake",
            Expired::FirstByte => "first_byte",
            Expired::Preface => "preface",
            Expired::KeepAlive => "keep_alive",
        }
    }
}

const HANDSHAKE: u8 = 0;
const FIRST_BYTE: u8 = 1;
const PREFACE: u8 = 2;
const ESTABLISHED: u8 = 3;

/// [`Activity::parking`] values: an HTTP/2 connection (or one not yet known) never parks.
const NOT_PARKING: u8 = 0;
const IN_HYPER: u8 = 1;
const PARKED: u8 = 2;

/// One clock for every connection, so idle times compare across connections.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn at(ms: u64) -> Instant {
    *EPOCH + Duration::from_millis(ms)
}

/// A connection's progress. Updated with relaxed atomics: the watchdog re-reads it when it wakes,
/// and a stale read only moves a check by one wake-up.
#[derive(Debug)]
pub(crate) struct Activity {
    phase: AtomicU8,
    /// When the current phase began (ms since [`EPOCH`]).
    phase_since: AtomicU64,
    in_flight: AtomicUsize,
    /// When the last request ended, the connection was established, or a parked connection went
    /// back to hyper (ms since [`EPOCH`]).
    idle_since: AtomicU64,
    evicted: AtomicBool,
    /// The listener's graceful drain started ([`Activity::drain`]).
    draining: AtomicBool,
    /// The connection's task, woken by [`Activity::evict`] and [`Activity::drain`]; set at the
    /// watchdog's first poll. A lock taken a few times per connection, where a `Notify` and a
    /// drain `watch` would keep a waiter each (about 80 bytes) in every connection's task for
    /// its whole life, parked ones included (issue 13).
    waker: Mutex<Option<Waker>>,
    /// The listener's: told when the last request in flight ends.
    became_idle: Arc<Notify>,
    /// Requests started and answered (response body ended) on the connection, for parking: an
    /// HTTP/1 connection parks only once every request read has been answered.
    requests: AtomicU64,
    answered: AtomicU64,
    /// HTTP/1 parking: [`NOT_PARKING`], [`IN_HYPER`] or [`PARKED`].
    parking: AtomicU8,
    /// An HTTP/1 connection's idle bound besides keep-alive: its `header_read_timeout`, which
    /// hyper applied to idle connections before they were parked (ms; `u64::MAX`: none).
    h1_idle_ms: AtomicU64,
    /// The watchdog is to look again at its next poll (the parking wake-up moved).
    rearm: AtomicBool,
}

impl Activity {
    /// A connection accepted now; `tls`: it starts with a TLS handshake. `became_idle` is told
    /// whenever its last request in flight ends.
    pub(crate) fn new(tls: bool, became_idle: Arc<Notify>) -> Self {
        let now = now_ms();
        Self {
            phase: AtomicU8::new(if tls { HANDSHAKE } else { FIRST_BYTE }),
            phase_since: AtomicU64::new(now),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            evicted: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            waker: Mutex::new(None),
            became_idle,
            requests: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            parking: AtomicU8::new(NOT_PARKING),
            h1_idle_ms: AtomicU64::new(u64::MAX),
            rearm: AtomicBool::new(false),
        }
    }

    /// The listener's graceful drain started: the connection finishes its request in flight
    /// and closes (a parked one at once). Wakes its task, which then sees [`Activity::draining`].
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.wake();
    }

    /// Whether the listener drains; read by the connection each time its task is polled.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The connection speaks HTTP/1 and is parked when idle; `idle_limit`: its header read
    /// timeout, which also bounds how long it may idle (as hyper did before parking existed).
    /// Asks the watchdog to look again at its task's next poll.
    pub(crate) fn parks_http1(&self, idle_limit: Duration) {
        let ms = u64::try_from(idle_limit.as_millis()).unwrap_or(u64::MAX);
        self.h1_idle_ms.store(ms, Ordering::Relaxed);
        self.parking.store(IN_HYPER, Ordering::Relaxed);
        self.rearm.store(true, Ordering::Relaxed);
    }

    /// The connection left hyper (`true`) or went back to it (`false`). Going back asks the
    /// watchdog to look again at its task's next poll.
    pub(crate) fn set_parked(&self, parked: bool) {
        if parked {
            self.parking.store(PARKED, Ordering::Relaxed);
            return;
        }
        // The caller's bytes woke it: the idle clock restarts here. The watchdog may look again
        // before this burst's first request is in flight (a head arriving in several reads);
        // with the clock of the spell before the parked one, already past the grace, it slept
        // until the keep-alive deadline and the connection stayed in hyper.
        self.idle_since.store(now_ms(), Ordering::Relaxed);
        self.parking.store(IN_HYPER, Ordering::Relaxed);
        // The watchdog sleeps until the parked connection's keep-alive deadline: it must wake
        // one grace after this burst's last request instead.
        self.rearm.store(true, Ordering::Relaxed);
    }

    /// Responses answered so far (the count at a flush tells whether it came after the last).
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Whether an HTTP/1 connection may leave hyper now: the `heads` requests its framing guard
    /// read were all handed to the service and answered, the last answer was flushed (`flushed`:
    /// [`Activity::answered`] at the last flush), and it has been idle for [`PARK_GRACE`].
    pub(crate) fn may_park(&self, heads: u64, flushed: u64) -> bool {
        let requests = self.requests.load(Ordering::Relaxed);
        let answered = self.answered.load(Ordering::Relaxed);
        requests == heads && answered == requests && flushed == answered && self.idle_past_grace()
    }

    /// An HTTP/1 connection in hyper, established, with nothing in flight, idle for the grace:
    /// its IO parks it at the next poll. The same clock and test as [`Activity::may_park`].
    fn parking_due(&self) -> bool {
        self.parking.load(Ordering::Relaxed) == IN_HYPER
            && self.phase.load(Ordering::Relaxed) >= ESTABLISHED
            && self.idle_past_grace()
    }

    /// No request in flight, and none for [`PARK_GRACE`]: the part of parking's test that the
    /// IO ([`Activity::may_park`]) and the watchdog ([`Activity::parking_due`]) must read alike.
    fn idle_past_grace(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && now_ms() >= self.idle_since.load(Ordering::Relaxed) + grace_ms()
    }

    fn enter(&self, phase: u8) {
        self.phase_since.store(now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// The TLS handshake finished: the first-byte clock starts now.
    pub(crate) fn handshake_done(&self) {
        self.enter(FIRST_BYTE);
    }

    /// A CONNECT tunnel was opened: the TLS handshake inside it starts now, with the
    /// handshake deadline, as on a TLS listener. The CONNECT, answered, is no longer in flight;
    /// the requests inside the tunnel are counted from zero, as its framing guard counts their
    /// heads (with the CONNECT counted too, the two never matched and a tunnel was never parked).
    pub(crate) fn tunnel_handshake(&self, connect: InFlight) {
        drop(connect);
        self.requests.store(0, Ordering::Relaxed);
        self.answered.store(0, Ordering::Relaxed);
        self.enter(HANDSHAKE);
    }

    /// The caller sent its first byte.
    pub(crate) fn first_byte(&self) {
        if self.phase.load(Ordering::Relaxed) < PREFACE {
            self.enter(PREFACE);
        }
    }

    /// The protocol is known (HTTP/1's first byte, or HTTP/2's preface and first SETTINGS).
    pub(crate) fn established(&self) {
        if self.phase.load(Ordering::Relaxed) < ESTABLISHED {
            self.idle_since.store(now_ms(), Ordering::Relaxed);
            self.enter(ESTABLISHED);
        }
    }

    /// A request arrived; it is in flight until the returned guard is dropped (with its response
    /// body).
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.established();
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Since when the connection has had no request in flight (ms since [`EPOCH`]); `None` while
    /// a request is in flight or once it has been told to close. A connection not yet
    /// established counts as idle since it was accepted.
    pub(crate) fn idle_since(&self) -> Option<u64> {
        if self.in_flight.load(Ordering::Relaxed) > 0 || self.evicted.load(Ordering::Relaxed) {
            return None;
        }
        Some(match self.phase.load(Ordering::Relaxed) {
            ESTABLISHED => self.idle_since.load(Ordering::Relaxed),
            _ => self.phase_since.load(Ordering::Relaxed),
        })
    }

    /// Tells the connection to close (the accept loop needs its slot).
    pub(crate) fn evict(&self) {
        self.evicted.store(true, Ordering::Relaxed);
        self.wake();
    }

    /// Wakes the connection's task after a flag was stored. The flag is stored before the lock
    /// is taken, and the watchdog reads the flags after storing the waker under the same lock
    /// (and the connection on every poll after that): either the waker is here, or the flag is
    /// seen.
    fn wake(&self) {
        if let Some(waker) = self.waker_slot().as_ref() {
            waker.wake_by_ref();
        }
    }

    fn waker_slot(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        // The slot is a plain `Option` replaced whole under the lock: a poisoned lock still
        // holds a valid one.
        lock_unpoisoned(&self.waker)
    }

    /// The phase whose deadline has passed, or when to look again.
    fn check(&self, deadlines: &Deadlines) -> Result<Instant, Expired> {
        let now = Instant::now();
        let since = at(self.phase_since.load(Ordering::Relaxed));
        let (deadline, expired) = match self.phase.load(Ordering::Relaxed) {
            HANDSHAKE => (since + deadlines.tls_handshake, Expired::TlsHandshake),
            FIRST_BYTE => (since + deadlines.first_byte, Expired::FirstByte),
            PREFACE => (since + deadlines.preface, Expired::Preface),
            _ if self.in_flight.load(Ordering::Relaxed) > 0 => {
                // A parking connection looks again one grace later, so that it is parked soon
                // after its last request ends (the end does not wake the watchdog).
                let parking = self.parking.load(Ordering::Relaxed) != NOT_PARKING;
                return Ok(now
                    + if parking {
                        PARK_GRACE
                    } else {
                        deadlines.keep_alive
                    });
            }
            _ => {
                let idle = at(self.idle_since.load(Ordering::Relaxed));
                let parking = self.parking.load(Ordering::Relaxed);
                if parking == IN_HYPER && now < idle + PARK_GRACE {
                    // Wake the task then: hyper reads again and lets the connection be parked.
                    return Ok(idle + PARK_GRACE);
                }
                let mut limit = deadlines.keep_alive;
                if parking != NOT_PARKING {
                    let h1 = Duration::from_millis(self.h1_idle_ms.load(Ordering::Relaxed));
                    limit = limit.min(h1);
                }
                (idle + limit, Expired::KeepAlive)
            }
        };
        if now >= deadline {
            Err(expired)
        } else {
            Ok(deadline)
        }
    }

    /// Resolves when the connection is to close: evicted ([`Activity::evict`]), or with the
    /// phase that outlived its deadline. Sleeps until the current phase's deadline and looks
    /// again: the phase may have moved on meanwhile. Also looks again at the next poll of its
    /// task after the connection asked for it ([`Activity::parks_http1`],
    /// [`Activity::set_parked`]), so that the wake-up for parking is never behind a phase
    /// deadline computed before.
    pub(crate) async fn watch(&self, deadlines: &Deadlines) -> Ended {
        let first = match self.check(deadlines) {
            Ok(at) => at,
            Err(expired) => return Ended::Expired(expired),
        };
        let sleep = tokio::time::sleep_until(first.into());
        tokio::pin!(sleep);
        let mut waker_set = false;
        std::future::poll_fn(|cx| {
            if !waker_set {
                // Once: the watchdog is polled only by its connection's task, whose waker
                // stays valid for the task's life.
                *self.waker_slot() = Some(cx.waker().clone());
                waker_set = true;
            }
            if self.evicted.load(Ordering::Relaxed) {
                return Poll::Ready(Ended::Evicted);
            }
            loop {
                let rearm =
                    self.rearm.load(Ordering::Relaxed) && self.rearm.swap(false, Ordering::Relaxed);
                if !rearm && sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match self.check(deadlines) {
                    // Polled again at the top of the loop, which registers the wake-up.
                    Ok(at) => {
                        sleep.as_mut().reset(at.into());
                        if self.parking_due() {
                            // The grace has passed, so the deadline just set is the idle
                            // limit's. The connection's IO may have been polled earlier in this
                            // same poll of the task, read the clock a millisecond before the
                            // grace ended and declined to park: poll the task once more, or the
                            // connection would stay in hyper until that limit.
                            cx.waker().wake_by_ref();
                        }
                    }
                    Err(expired) => return Poll::Ready(Ended::Expired(expired)),
                }
            }
        })
        .await
    }
}

fn grace_ms() -> u64 {
    u64::try_from(PARK_GRACE.as_millis()).unwrap_or(u64::MAX)
}

/// A request in flight on a connection; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        // The idle clock starts before the count reaches zero, so the watchdog never reads an
        // idle connection with an old `idle_since`.
        activity.idle_since.store(now_ms(), Ordering::Relaxed);
        activity.answered.fetch_add(1, Ordering::Relaxed);
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            activity.became_idle.notify_one();
        }
    }
}

/// A response body that keeps its request in flight until the body is done or dropped, so an
/// HTTP/2 connection streaming a response is not idle.
#[derive(Debug)]
pub(crate) struct InFlightBody<B> {
    body: B,
    in_flight: Option<InFlight>,
}

impl<B> InFlightBody<B> {
    pub(crate) fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            in_flight: Some(in_flight),
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) {
            this.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;

    const D: Deadlines = Deadlines {
        tls_handshake: Duration::from_secs(1),
        first_byte: Duration::from_secs(2),
        preface: Duration::from_secs(3),
        keep_alive: Duration::from_secs(4),
    };

    #[test]
    fn each_phase_is_checked_against_its_own_deadline() {
        let a = Arc::new(Activity::new(true, Arc::default()));
        let start = Instant::now();
        let until = |a: &Activity| a.check(&D).unwrap().saturating_duration_since(start);
        assert!(until(&a) <= Duration::from_millis(1100));
        a.handshake_done();
        assert!(until(&a) >= Duration::from_millis(1900));
        a.first_byte();
        assert!(until(&a) >= Duration::from_millis(2900));
        a.established();
        assert!(until(&a) >= Duration::from_millis(3900));
        let request = a.request();
        assert_eq!(a.idle_since(), None, "busy connections are not evictable");
        drop(request);
        assert!(a.idle_since().is_some());
        a.evict();
        assert_eq!(a.idle_since(), None, "evicted once only");
    }

    /// Counts wake-ups of the task it stands for.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Polls a fresh watchdog of `a` once: how often it woke its own task meanwhile.
    fn wakes_of_one_poll(a: &Activity) -> usize {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut watch = Box::pin(a.watch(&D));
        let polled = watch
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending(), "the watchdog ended the connection");
        wakes.0.load(Ordering::Relaxed)
    }

    /// The watchdog, looking again at an HTTP/1 connection idle past the grace, sets its sleep
    /// to the idle limit; the connection's IO, polled earlier in the same poll of the task, may
    /// have read the clock a millisecond before the grace ended and declined to park. So the
    /// watchdog polls the task once more; else the connection stayed in hyper until the idle
    /// limit (tests/idle_memory.rs caught it one CI run in three). Within the grace it does
    /// not: it sleeps until the grace ends.
    #[tokio::test]
    async fn a_watchdog_past_the_grace_polls_its_connection_once_more() {
        let a = Activity::new(false, Arc::default());
        a.established();
        a.parks_http1(Duration::from_secs(30));
        assert_eq!(wakes_of_one_poll(&a), 0, "woken within the grace");

        std::thread::sleep(PARK_GRACE + Duration::from_millis(20));
        a.rearm.store(true, Ordering::Relaxed);
        assert_eq!(wakes_of_one_poll(&a), 1, "not woken past the grace");

        // Parked: the IO has nothing more to do; no extra poll.
        a.set_parked(true);
        a.rearm.store(true, Ordering::Relaxed);
        assert_eq!(wakes_of_one_poll(&a), 0, "woken once parked");
    }
}
