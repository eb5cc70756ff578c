//! The load: per route, `concurrency` keep-alive connections, each either back-to-back (closed
//! loop) or taking every C-th request of the route's fixed-rate schedule (open loop, as wrk2).
//!
//! The schedule, its lanes and the coordinated-omission correction (a request its busy connection
//! could not send on time is timed from its due time) are the shared `loadgen` crate's, the same
//! as the load harness's `bench-load`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use loadgen::{Lane, Schedule};

use super::client::{Answer, Conn, Failure, open_within};
use super::plan::{Plan, Stop};
use super::record::Recorder;
use super::target::Target;

/// Pause after a failed connect, so a dead listener costs the shared machine nothing while the
/// run goes on to its end.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// One route's load, shared by its connections.
struct RouteLoad {
    target: Target,
    listener: SocketAddr,
    rec: Arc<Recorder>,
    plan: Plan,
    schedule: Schedule,
    /// Closed loop with `--requests`: measured requests started so far.
    started: AtomicU64,
}

/// Sleeps until `at`; false when the run was stopped first.
async fn sleep_until(at: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep_until(at.into()) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// One connection's loop.
struct Worker {
    route: Arc<RouteLoad>,
    conn: Option<Conn>,
    stop: watch::Receiver<bool>,
}

impl Worker {
    /// Sends one request timed from `start` (`at`: its due or start time, for the series);
    /// returns when it ended, or `None` when the run was stopped during it (then nothing is
    /// recorded: a half-done request has no latency).
    async fn exchange(&mut self, at: Instant, start: Instant, measured: bool) -> Option<Instant> {
        let route = Arc::clone(&self.route);
        let limit = route.plan.timeout;
        let mut stop = self.stop.clone();
        let result = tokio::select! {
            r = self.send(limit) => r,
            _ = stop.wait_for(|s| *s) => return None,
        };
        let done = Instant::now();
        if result.is_err() {
            self.conn = None;
        }
        route.rec.record(at, done - start, &result, measured);
        if result == Err(Failure::Connect) {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
        Some(done)
    }

    async fn send(&mut self, limit: Duration) -> Result<Answer, Failure> {
        let route = &self.route;
        if !self.conn.as_ref().is_some_and(Conn::is_open) {
            self.conn = Some(open_within(route.listener, limit).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Connect);
        };
        tokio::time::timeout(limit, conn.exchange(&route.target, route.listener))
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    /// Back-to-back requests from `first` until the measured phase ends; paced to at most
    /// `pace / concurrency` a second on this connection when a ceiling is set.
    async fn closed(mut self, first: Instant) {
        let route = Arc::clone(&self.route);
        let s = route.schedule;
        let gap = route
            .plan
            .pace
            .map(|p| Duration::from_secs_f64(route.plan.concurrency as f64 / p));
        let mut next = first;
        loop {
            if !sleep_until(next, &mut self.stop).await {
                return;
            }
            let now = Instant::now();
            if now >= s.closed_end {
                return;
            }
            let measured = now >= s.measure_start;
            if measured
                && let Stop::Requests(n) = route.plan.stop
                && route.started.fetch_add(1, Ordering::Relaxed) >= n
            {
                return;
            }
            if self.exchange(now, now, measured).await.is_none() {
                return;
            }
            next = gap.map_or(Instant::now(), |g| now + g);
        }
    }

    /// Its lane of the fixed-rate schedule: requests `i`, `i + C`, `i + 2C`, ...
    async fn open(mut self, mut lane: Lane) {
        let route = Arc::clone(&self.route);
        // Past this, requests still queued behind a stalled connection are counted as unsent.
        let deadline = route.schedule.planned_end() + route.plan.timeout;
        while let Some(due) = lane.next_due() {
            if Instant::now() >= deadline {
                route.rec.unsent(lane.unsent());
                return;
            }
            if !sleep_until(due.at, &mut self.stop).await {
                return;
            }
            let start = lane.start(&due, Instant::now());
            match self.exchange(due.at, start, due.measured).await {
                Some(done) => lane.sent(done),
                None => return,
            }
        }
    }
}

/// Runs every route's load side by side until it ends or `stop` turns true; returns when the
/// last connection is done.
pub(crate) async fn run(
    targets: &[Target],
    recorders: &[Arc<Recorder>],
    listener: SocketAddr,
    plan: Plan,
    schedule: Schedule,
    stop: &watch::Receiver<bool>,
) {
    let mut set = JoinSet::new();
    for (target, rec) in targets.iter().zip(recorders) {
        let route = Arc::new(RouteLoad {
            target: target.clone(),
            listener,
            rec: Arc::clone(rec),
            plan,
            schedule,
            started: AtomicU64::new(0),
        });
        for i in 0..plan.concurrency {
            let worker = Worker {
                route: Arc::clone(&route),
                conn: None,
                stop: stop.clone(),
            };
            match schedule.lane(i, plan.concurrency) {
                None => set.spawn(worker.closed(schedule.closed_start(i, plan.concurrency))),
                Some(lane) => set.spawn(worker.open(lane)),
            };
        }
    }
    while let Some(joined) = set.join_next().await {
        if let Err(e) = joined {
            tracing::warn!(error = %e, "a bench connection task failed");
        }
    }
}
