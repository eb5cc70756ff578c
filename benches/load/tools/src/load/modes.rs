//! The four modes: `closed` and `rate` (timed, with warm-up), `burst` and `idle` (one request per
//! connection). All connections are opened before anything is measured.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout};

use loadgen::{Lane, Load, Schedule, Stop};

use super::args::{Mode, Plan};
use super::conn::{Conn, Connector, Failure};
use super::record::Recorder;

/// Connections opened at once: a 10 000-connection open in one go would overrun the target's
/// listen backlog (often 128 to 511) and turn into SYN retransmits seconds long.
const OPEN_CONCURRENCY: usize = 256;
/// Pause after a failed reconnect, so a dead target costs the shared core nothing while the run
/// goes on to its deadline.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// Time given to the burst tasks to park on the barrier before it is released.
const BARRIER_SETTLE: Duration = Duration::from_millis(50);

pub async fn run(plan: Plan, connector: Arc<Connector>) -> Map<String, Value> {
    let shards = if plan.threads == 1 {
        1
    } else {
        plan.threads * 4
    };
    match plan.mode.clone() {
        Mode::Closed => timed(&plan, connector, shards, None).await,
        Mode::Rate { rate, series } => timed(&plan, connector, shards, Some((rate, series))).await,
        Mode::Burst => burst(&plan, connector, shards).await,
        Mode::Idle { hold } => idle(&plan, connector, shards, Duration::from_secs_f64(hold)).await,
    }
}

/// Runs `f(i)` for i in 0..n with at most [`OPEN_CONCURRENCY`] at once; results in index order
/// (None only for a task that panicked).
async fn bounded<T, F, Fut>(n: usize, f: F) -> Vec<Option<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut set = JoinSet::new();
    for i in 0..n {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break; // the semaphore is never closed
        };
        let fut = f(i);
        set.spawn(async move {
            let out = fut.await;
            drop(permit);
            (i, out)
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, v)) = joined {
            out[i] = Some(v);
        }
    }
    out
}

async fn connect(connector: Arc<Connector>, limit: Duration) -> Result<Conn, Failure> {
    timeout(limit, connector.connect())
        .await
        .unwrap_or(Err(Failure::Timeout))
}

async fn open_all(plan: &Plan, connector: &Arc<Connector>) -> Vec<Result<Conn, Failure>> {
    let limit = plan.timeout;
    bounded(plan.connections, |_| connect(connector.clone(), limit))
        .await
        .into_iter()
        .map(|c| c.unwrap_or(Err(Failure::Io)))
        .collect()
}

/// One connection's loop in the timed modes.
struct Worker {
    id: usize,
    connector: Arc<Connector>,
    rec: Arc<Recorder>,
    timeout: Duration,
    conn: Option<Conn>,
}

impl Worker {
    /// Makes sure there is an open connection; on failure records it against the request due at
    /// `due` and returns false.
    async fn ensure(&mut self, due: Instant, measured: bool) -> bool {
        if self.conn.as_ref().is_some_and(Conn::is_open) {
            return true;
        }
        self.conn = None;
        if measured {
            self.rec.reconnect(self.id);
        }
        match connect(self.connector.clone(), self.timeout).await {
            Ok(c) => {
                self.conn = Some(c);
                true
            }
            Err(f) => {
                self.rec.failure(self.id, due, f, measured);
                sleep(RECONNECT_PAUSE).await;
                false
            }
        }
    }

    /// Sends one request due at `due`, its latency counted from `start`; returns when it ended.
    async fn exchange(&mut self, due: Instant, start: Instant, measured: bool) -> Instant {
        let Some(conn) = self.conn.as_mut() else {
            return Instant::now();
        };
        let result = self.connector.send(conn, self.timeout).await;
        let done = Instant::now();
        match result {
            Ok(status) => self
                .rec
                .response(self.id, due, done - start, status, measured),
            Err(f) => {
                self.rec.failure(self.id, due, f, measured);
                self.conn = None;
            }
        }
        done
    }

    /// Closed loop: back-to-back requests until the schedule's end.
    async fn closed(mut self, schedule: Schedule) -> (Instant, u64) {
        loop {
            let now = Instant::now();
            if now >= schedule.closed_end {
                return (now, 0);
            }
            let measured = schedule.measured_at(now);
            if self.ensure(now, measured).await {
                self.exchange(now, now, measured).await;
            }
        }
    }

    /// Open loop: this connection's lane of the fixed-rate schedule, timed with its
    /// coordinated-omission correction (see `loadgen::Lane::start`). Returns the end time and
    /// how many measured requests were never sent because the connection was still behind at
    /// `deadline`.
    async fn open_loop(mut self, mut lane: Lane, deadline: Instant) -> (Instant, u64) {
        while let Some(due) = lane.next_due() {
            let now = Instant::now();
            if now >= deadline {
                return (now, lane.unsent());
            }
            if due.at > now {
                sleep_until(due.at.into()).await;
            }
            let woke = Instant::now();
            if !self.ensure(due.at, due.measured).await {
                lane.skip();
                continue;
            }
            let start = lane.start(&due, woke);
            let done = self.exchange(due.at, start, due.measured).await;
            lane.sent(done);
        }
        (Instant::now(), 0)
    }
}

async fn timed(
    plan: &Plan,
    connector: Arc<Connector>,
    shards: usize,
    rate: Option<(f64, bool)>,
) -> Map<String, Value> {
    let conns = open_all(plan, &connector).await;
    let initial_failures = conns.iter().filter(|c| c.is_err()).count();
    let load = rate.map_or(Load::Closed, |(r, _)| Load::Rate(r));
    let stop = Stop::After(plan.duration);
    let longest = plan.warmup + plan.duration;
    let s = Schedule::new(
        Instant::now(),
        load,
        stop,
        Duration::ZERO,
        plan.warmup,
        longest,
    );
    let end = s.closed_end;
    let series = rate.is_some_and(|(_, series)| series);
    let rec = Arc::new(Recorder::new(
        shards,
        series.then_some((s.measure_start, plan.duration)),
    ));
    let mut set = JoinSet::new();
    for (id, conn) in conns.into_iter().enumerate() {
        let worker = Worker {
            id,
            connector: connector.clone(),
            rec: rec.clone(),
            timeout: plan.timeout,
            conn: conn.ok(),
        };
        match s.lane(id, plan.connections) {
            None => set.spawn(worker.closed(s)),
            Some(lane) => set.spawn(worker.open_loop(lane, s.planned_end())),
        };
    }
    let mut last = end;
    let mut unsent = 0;
    while let Some(joined) = set.join_next().await {
        if let Ok((finished, u)) = joined {
            last = last.max(finished);
            unsent += u;
        }
    }
    let elapsed = last - s.measure_start;
    let mode = if rate.is_some() { "rate" } else { "closed" };
    let mut out = rec.report(mode, plan.connections, elapsed);
    out.insert("initial_connect_failures".into(), json!(initial_failures));
    if let Some((r, _)) = rate {
        out.insert("target_rps".into(), json!(r));
        out.insert("achieved_rps".into(), out["rps"].clone());
        out.insert("unsent".into(), json!(unsent));
    }
    out
}

async fn burst(plan: &Plan, connector: Arc<Connector>, shards: usize) -> Map<String, Value> {
    let conns = open_all(plan, &connector).await;
    let (release, barrier) = watch::channel(None::<Instant>);
    let mut set = JoinSet::new();
    for conn in conns {
        let mut barrier = barrier.clone();
        let connector = connector.clone();
        let limit = plan.timeout;
        set.spawn(async move {
            let go = match barrier.wait_for(Option::is_some).await {
                Ok(go) => go.unwrap_or_else(Instant::now),
                Err(_) => Instant::now(),
            };
            let result = match conn {
                Ok(mut conn) => connector.send(&mut conn, limit).await,
                Err(f) => Err(f),
            };
            (go, result, Instant::now())
        });
    }
    // Let every task park on the barrier, then release them together.
    sleep(BARRIER_SETTLE).await;
    let go = Instant::now();
    let _ = release.send(Some(go));
    let rec = Recorder::new(shards, None);
    let mut last = go;
    while let Some(joined) = set.join_next().await {
        if let Ok((go, result, done)) = joined {
            last = last.max(done);
            match result {
                Ok(status) => rec.response(0, go, done - go, status, true),
                Err(f) => rec.failure(0, go, f, true),
            }
        }
    }
    rec.report("burst", plan.connections, last - go)
}

async fn idle(
    plan: &Plan,
    connector: Arc<Connector>,
    shards: usize,
    hold: Duration,
) -> Map<String, Value> {
    let begin = Instant::now();
    let limit = plan.timeout;
    let opened = bounded(plan.connections, |_| {
        let connector = connector.clone();
        async move {
            let start = Instant::now();
            match connect(connector.clone(), limit).await {
                Err(f) => (start, Err(f), None, Instant::now()),
                Ok(mut conn) => {
                    let result = connector.send(&mut conn, limit).await;
                    let done = Instant::now();
                    let keep = result.is_ok().then_some(conn);
                    (start, result, keep, done)
                }
            }
        }
    })
    .await;
    let rec = Recorder::new(shards, None);
    let mut held = Vec::with_capacity(plan.connections);
    for (start, result, conn, done) in opened.into_iter().flatten() {
        match result {
            Ok(status) => rec.response(0, start, done - start, status, true),
            Err(f) => rec.failure(0, start, f, true),
        }
        held.extend(conn);
    }
    let opened_in = begin.elapsed();
    eprintln!("holding {}", held.len());
    sleep(hold).await;
    let open_at_end = held.iter().filter(|c| c.is_open()).count();
    let mut out = rec.report("idle", plan.connections, opened_in);
    out.insert("held".into(), json!(held.len()));
    out.insert("open_at_end".into(), json!(open_at_end));
    out.insert("hold_s".into(), json!(hold.as_secs_f64()));
    out
}
