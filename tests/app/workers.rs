//! The thread-per-core data plane (`workers:`) in process, against the local authority's resource
//! with the `static` identity: many connections spread by `SO_REUSEPORT` over the workers are all
//! served with the route's token, a reload reaches every worker, the connection cap is one cap
//! across the workers, and shutdown drains in-flight streams on every worker while refusing new
//! callers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use crate::kit::http::{dial, first_frame, send_on};
use crate::kit::signed_tokens::*;
use popgate::app::App;

/// Bound on the initial round.
const STATE_BOUND: Duration = Duration::from_secs(90);
const HOUR: Duration = Duration::from_secs(3600);
/// Worker threads in these tests: more than the machine's cores is fine, each is a thread.
const WORKERS: usize = 3;
/// Connections held open at once: with three sockets in the group, the chance that the kernel
/// puts all of them on one socket is 3 × (1/3)^24, i.e. never. (Kept small: the timing tests of
/// this binary run beside it.)
const CONNECTIONS: usize = 24;
/// Each streamed body: more than the socket buffers hold while the reader pauses, so the
/// response is mid-stream when shutdown starts.
const BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Bound on reading a body (a debug build on a loaded machine streams slowly).
const BODY_BOUND: Duration = Duration::from_secs(80);

/// popgate on `WORKERS` workers (plus `top`, top-level keys) serving a static token echoed as
/// `marker`, after its initial round: the app, its config file and its listener's address.
async fn started(env: &Env, top: &str, marker: &str) -> (App, PathBuf, SocketAddr) {
    env.write_token(&env.token(&env.binding, HOUR, marker));
    let path = env.config("");
    let yaml = std::fs::read_to_string(&path).unwrap().replace(
        "listeners:\n",
        &format!("workers: {WORKERS}\n{top}listeners:\n"),
    );
    std::fs::write(&path, yaml).unwrap();
    let app = App::start(env.load(&path)).await.unwrap();
    app.initial_round(STATE_BOUND).await;
    let addr = app.local_addrs()[0];
    (app, path, addr)
}

fn graph_get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .uri(format!("http://graph.microsoft.com{path}"))
        .header("host", "graph.microsoft.com")
        .body(Empty::new())
        .unwrap()
}

/// `CONNECTIONS` keep-alive connections, all open at once.
async fn connections(addr: SocketAddr) -> Vec<SendRequest<Empty<Bytes>>> {
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        senders.push(dial(addr).await.unwrap());
    }
    senders
}

/// Sends `GET /v1.0/me` on every connection at once (one task each); the connections back and
/// the appid each answer's token names.
async fn echo_all(
    senders: Vec<SendRequest<Empty<Bytes>>>,
) -> (Vec<SendRequest<Empty<Bytes>>>, Vec<String>) {
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                let answer =
                    tokio::time::timeout(BODY_BOUND, send_on(&mut sender, graph_get("/v1.0/me")))
                        .await
                        .expect("answered within the bound")
                        .unwrap();
                (sender, check_echo(&answer))
            })
        })
        .collect();
    let mut senders = Vec::with_capacity(tasks.len());
    let mut appids = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (sender, appid) = task.await.unwrap();
        senders.push(sender);
        appids.push(appid);
    }
    (senders, appids)
}

/// A response streaming `BODY_BYTES`: its head and first bytes read, the rest left unread.
async fn streaming(addr: SocketAddr) -> (SendRequest<Empty<Bytes>>, Incoming, u64) {
    let mut sender = dial(addr).await.unwrap();
    let request = graph_get(&format!("/v1.0/big?size={BODY_BYTES}"));
    let (body, read) = first_frame(&mut sender, request, BODY_BOUND).await;
    (sender, body, read)
}

/// Reads the rest of a streaming body; the bytes read in all.
async fn finish(mut body: Incoming, mut read: u64) -> u64 {
    let rest = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap_or_else(|e| panic!("stream failed after {read} bytes: {e}"));
            read += frame.into_data().map(|d| d.len() as u64).unwrap_or(0);
        }
        read
    };
    tokio::time::timeout(BODY_BOUND, rest)
        .await
        .expect("the body completed within its bound")
}

/// Threads of this process named `popgate-worker-*`.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("popgate-worker-"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_the_workers_are_all_served_with_the_token_and_a_reload_reaches_every_worker()
 {
    let env = Env::start().await;
    let (mut app, path, addr) = started(&env, "", "first").await;

    let mut senders = connections(addr).await;
    // Twice on each connection: keep-alive requests stay on the worker that accepted them.
    for _ in 0..2 {
        let appids;
        (senders, appids) = echo_all(senders).await;
        assert_eq!(appids.len(), CONNECTIONS);
        assert!(appids.iter().all(|a| a == "first"), "{appids:?}");
    }
    // (Checked now: a thread names itself once it runs.)
    assert!(
        worker_threads() >= WORKERS,
        "worker threads: {}",
        worker_threads()
    );

    // A reload's new table is read by every worker, on old connections and new ones.
    env.write_token(&env.token(&env.binding, HOUR, "second"));
    let summary = app.reload(env.load(&path)).await.unwrap();
    assert_eq!(summary.changed, ["graph"], "{summary:?}");
    assert!(summary.needs_restart.is_empty(), "{summary:?}");
    let appids;
    (senders, appids) = echo_all(senders).await;
    assert!(appids.iter().all(|a| a == "second"), "{appids:?}");
    let (_, appids) = echo_all(connections(addr).await).await;
    assert!(appids.iter().all(|a| a == "second"), "{appids:?}");

    // Changing the worker count takes a restart; the running workers keep serving.
    let yaml = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("workers: {WORKERS}\n"), "workers: 1\n");
    std::fs::write(&path, yaml).unwrap();
    let summary = app.reload(env.load(&path)).await.unwrap();
    assert_eq!(summary.needs_restart, ["workers"], "{summary:?}");
    assert_eq!(check_echo(&get(addr, "/v1.0/me").await), "second");
    drop(senders);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_is_one_cap_across_the_workers() {
    let env = Env::start().await;
    let (app, _path, addr) = started(&env, "limits: { max_connections: 2 }\n", "capped").await;
    // Two connections busy streaming (so neither can be evicted) fill the cap.
    let (first, first_body, first_read) = streaming(addr).await;
    let (_second, _second_body, _) = streaming(addr).await;

    // A third caller, whichever worker's socket the kernel hands it to, waits: with a cap per
    // worker it would be served at once by a worker holding fewer than two.
    let third = tokio::spawn(async move {
        let mut sender = dial(addr).await.unwrap();
        send_on(&mut sender, graph_get("/v1.0/me")).await.unwrap()
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !third.is_finished(),
        "a third caller was served past the cap of 2"
    );

    // One stream ends and its connection closes: the waiting caller gets the slot.
    assert_eq!(finish(first_body, first_read).await, BODY_BYTES);
    drop(first);
    let answer = tokio::time::timeout(BODY_BOUND, third)
        .await
        .expect("the waiting caller was served once a slot freed")
        .unwrap();
    assert_eq!(check_echo(&answer), "capped");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_streams_on_every_worker_and_refuses_new_callers() {
    let env = Env::start().await;
    let (app, _path, addr) = started(&env, "timeouts: { drain: 85s }\n", "drain").await;
    // Six streams over three sockets: all on one worker with probability 3 × (1/3)^6 ≈ 1/240.
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(streaming(addr).await);
    }
    let shutdown = tokio::spawn(app.shutdown());

    // Every worker closes its socket: new callers are refused (polled, since the workers close
    // theirs on their own threads).
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "new connections were still accepted after shutdown began"
    );
    assert!(
        !shutdown.is_finished(),
        "shutdown ended before the streams did"
    );

    // Every in-flight response completes in full, read side by side.
    let readers: Vec<_> = streams
        .into_iter()
        .map(|(sender, body, read)| {
            tokio::spawn(async move {
                let total = finish(body, read).await;
                drop(sender);
                total
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            BODY_BYTES,
            "a response was cut short"
        );
    }
    tokio::time::timeout(BODY_BOUND, shutdown)
        .await
        .expect("shutdown returned once the streams ended")
        .unwrap();
}
