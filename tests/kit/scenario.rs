//! Faults under load: popgate (`App`, in-process, real config loader, real sources, real data
//! plane) in front of the local authority, whose fault queues make the token endpoint, IMDS or the
//! resource misbehave. A bounded load loop (clients × requests, each request and the whole loop
//! capped in time) tallies what callers saw; every scenario prints one row of the table recorded
//! in docs/reliability.md and asserts the invariants:
//!
//! - the resource refused nothing as `invalid_token` (it checks `exp` and that `cnf.x5t#S256`
//!   equals the presented certificate, so this is "zero requests with an expired token or a
//!   cnf/cert mismatch");
//! - every 200 echo says the token's `cnf` equals the certificate presented in TLS;
//! - every failure is of the kind the scenario allows (e.g. 503 `no_token` only when no usable
//!   token existed).
//!
//! Only loopback addresses are used.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use popgate::app::App;
use popgate::route::slot::RouteSlot;
use popgate::route::status::RouteStatus;
use popgate_authority::{Authority, Endpoint};

pub use super::authority::write_credential;
use super::authority::{
    invalid_token_refusals, resolve_yaml, resource_requests, seeded_dir, serving_bearer,
};

/// Concurrent callers per load phase.
pub const CLIENTS: usize = 8;
/// Requests each caller sends per phase (8 × 25 = 200 per phase).
pub const PER_CLIENT: usize = 25;
/// Hard cap on one load phase: a wedged proxy fails the test instead of hanging it.
pub const PHASE_CAP: Duration = Duration::from_secs(120);
/// Cap on one request (popgate's own first-token wait is 25 s; IMDS 410 retries take 10 s).
pub const REQUEST_CAP: Duration = Duration::from_secs(60);
/// Cap on waiting for a route to change state (backoff tops out at 60 s).
pub const STATE_CAP: Duration = Duration::from_secs(90);

/// The resource host every scenario routes to (served by the authority).
pub const GRAPH: &str = "graph.microsoft.com";

/// The single route a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// Certificate app, vanilla flow, mTLS PoP (token endpoint `mtlsauth.microsoft.com`).
    CertAppPop,
    /// System-assigned managed identity, Bearer (IMDS v1).
    ManagedIdentityBearer,
    /// System-assigned managed identity, mTLS PoP (IMDS v2 + token endpoint).
    ManagedIdentityPop,
}

/// A running authority and popgate with one route, `r`, for `graph.microsoft.com`.
pub struct Scenario {
    pub authority: Authority,
    pub dir: tempfile::TempDir,
    pub app: App,
    pub client_id: String,
    pub kind: RouteKind,
    /// The route's name (`r` unless started with [`Scenario::start_named`]).
    pub route: String,
}

/// Starts an authority (so a test can queue faults before popgate exists).
pub async fn authority() -> Authority {
    Authority::start(Default::default())
        .await
        .expect("authority starts")
}

/// An authority whose resource serves callers without a client certificate, as Azure resources
/// do for Bearer tokens (an `mtls_pop` request without one is still refused): for Bearer routes.
pub async fn authority_serving_bearer() -> Authority {
    Authority::start(serving_bearer())
        .await
        .expect("authority starts")
}

impl Scenario {
    /// Writes routes.yaml for `kind` (with `timeouts_line` when given), loads it through the real
    /// loader and starts popgate against `authority`.
    pub async fn start(authority: Authority, kind: RouteKind, timeouts_line: &str) -> Scenario {
        Self::start_named(authority, kind, timeouts_line, "r").await
    }

    /// Like [`Scenario::start`], with the route named `route` (so its per-route metrics are its
    /// own while other scenarios run in the same process).
    pub async fn start_named(
        authority: Authority,
        kind: RouteKind,
        timeouts_line: &str,
        route: &str,
    ) -> Scenario {
        let (app, credential) = authority
            .new_certificate_app("faults-app")
            .expect("certificate app");
        let dir = seeded_dir(&authority, &credential);
        let (identity, token_type) = match kind {
            RouteKind::CertAppPop => ("app", "mtls_pop"),
            RouteKind::ManagedIdentityBearer => ("sami", "bearer"),
            RouteKind::ManagedIdentityPop => ("sami", "mtls_pop"),
        };
        let resolve = resolve_yaml(&authority, &[], &[]);
        let yaml = format!(
            r#"version: 1
listeners:
  - address: 127.0.0.1:0
{timeouts_line}
network:
  imds_endpoint: {imds}
  resolve:
{resolve}  extra_ca_files: [ca.pem]
identities:
  sami: {{ kind: managed_identity }}
  app:
    kind: confidential_client
    tenant_id: {tenant}
    client_id: {client_id}
    certificate: {{ cert_file: app.pem, key_file: app.key }}
routes:
  - name: {route}
    match: {{ host: {GRAPH} }}
    resource: https://{GRAPH}
    flow: vanilla
    identity: {identity}
    token_type: {token_type}
"#,
            imds = authority.imds_base_url(),
            tenant = authority.tenant_id(),
            client_id = app.client_id,
        );
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, yaml).expect("write routes.yaml");
        let config = super::config::load(&path);
        let app_handle = App::start(config).await.expect("popgate starts");
        Scenario {
            authority,
            dir,
            app: app_handle,
            client_id: app.client_id,
            kind,
            route: route.to_string(),
        }
    }

    /// popgate's listener.
    pub fn proxy(&self) -> SocketAddr {
        self.app.local_addrs()[0]
    }

    pub fn slot(&self) -> &RouteSlot {
        self.app.route(&self.route).expect("the scenario's route")
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Waits (bounded) until the route's status satisfies `ready`; fails the test otherwise.
    pub async fn wait_status(&self, what: &str, ready: impl Fn(&RouteStatus) -> bool) {
        let reached = self
            .slot()
            .wait_until(STATE_CAP, |s| ready(&s.status()))
            .await;
        assert!(
            reached,
            "route never became {what}; status {:?}",
            self.slot().status().label()
        );
    }

    /// Waits until a usable token is published.
    pub async fn wait_serving(&self) {
        self.wait_status("serving", RouteStatus::is_serving).await;
    }

    /// Waits until the route has no usable token.
    pub async fn wait_failed(&self) {
        self.wait_status("failed", |s| matches!(s, RouteStatus::Failed { .. }))
            .await;
    }

    /// Requests the authority saw at `endpoint` so far.
    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.authority.observations().count(endpoint)
    }

    /// The invariant over everything the resource saw: no `invalid_token` refusal (expired
    /// token, or cnf not matching the presented certificate). Returns how many requests it saw.
    pub fn assert_resource_never_refused_token(&self) -> usize {
        let resource = resource_requests(&self.authority);
        let refused = invalid_token_refusals(&resource);
        assert_eq!(
            refused, 0,
            "the resource refused {refused} requests as invalid_token (expired token or cnf mismatch)"
        );
        resource.len()
    }

    /// Asserts the resource never refused a token (`assert_resource_never_refused_token`) and
    /// prints the table row `scenario` for `total`.
    pub fn report(&self, scenario: &str, total: &Tally) {
        let seen = self.assert_resource_never_refused_token();
        row(scenario, total, seen);
    }

    /// The fault is over: waits until the route serves again, then loads `/back` and asserts
    /// it is all echoes (`phase` names it in failures).
    pub async fn back(&self, phase: &str) -> Tally {
        self.wait_serving().await;
        let back = self.load("/back").await;
        back.assert_only(phase, &[ECHO]);
        back
    }

    /// Runs one load phase against `path_and_query`.
    pub async fn load(&self, path_and_query: &str) -> Tally {
        load(self.proxy(), path_and_query, CLIENTS, PER_CLIENT).await
    }

    pub async fn shutdown(self) {
        self.app.shutdown().await;
    }
}

/// What one caller saw for one request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Outcome {
    /// HTTP status; 0 when no response arrived (connection failed).
    pub status: u16,
    /// popgate's `error` field for its own refusals; `echo` for a resource echo; empty otherwise.
    pub kind: String,
}

/// What a load phase saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: usize,
    pub ok: usize,
    /// Count per (status, kind).
    pub outcomes: BTreeMap<Outcome, usize>,
    /// Certificates the resource saw presented on 200s (x5t#S256 → count).
    pub presented: BTreeMap<String, usize>,
    /// 200 echoes whose token `cnf` did not equal the presented certificate (must stay 0).
    pub cnf_mismatch: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.cnf_mismatch += other.cnf_mismatch;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in other.presented {
            *self.presented.entry(k).or_default() += v;
        }
    }

    /// Merges phases into one total.
    pub fn sum(phases: &[&Tally]) -> Tally {
        let mut total = Tally::default();
        for phase in phases {
            let mut copy = Tally {
                sent: phase.sent,
                ok: phase.ok,
                cnf_mismatch: phase.cnf_mismatch,
                ..Tally::default()
            };
            copy.outcomes = phase.outcomes.clone();
            copy.presented = phase.presented.clone();
            total.add(copy);
        }
        total
    }

    /// Failures as `status kind ×n`, for the table.
    pub fn failed_by_status(&self) -> String {
        let failed: Vec<String> = self
            .outcomes
            .iter()
            .filter(|(o, _)| o.status != 200)
            .map(|(o, n)| {
                if o.kind.is_empty() {
                    format!("{} ×{n}", o.status)
                } else {
                    format!("{} {} ×{n}", o.status, o.kind)
                }
            })
            .collect();
        if failed.is_empty() {
            "none".into()
        } else {
            failed.join(", ")
        }
    }

    /// Asserts every outcome is one of `allowed` (status, kind) and no echo had a cnf mismatch.
    pub fn assert_only(&self, phase: &str, allowed: &[(u16, &str)]) {
        assert_eq!(self.cnf_mismatch, 0, "{phase}: cnf != presented cert");
        for (outcome, n) in &self.outcomes {
            assert!(
                allowed
                    .iter()
                    .any(|(s, k)| *s == outcome.status && *k == outcome.kind),
                "{phase}: unexpected {outcome:?} ×{n}; allowed {allowed:?}; all {:?}",
                self.outcomes
            );
        }
        assert_eq!(
            self.sent,
            self.outcomes.values().sum::<usize>(),
            "{phase}: every request accounted for"
        );
    }
}

/// Prints one row of the reliability table (scenario, sent, ok, failed by status, invariant).
pub fn row(scenario: &str, total: &Tally, resource_seen: usize) {
    println!(
        "| {scenario} | {} | {} | {} | resource saw {resource_seen}, invalid_token 0; cnf = presented cert on all {} echoes |",
        total.sent,
        total.ok,
        total.failed_by_status(),
        total.ok,
    );
}

/// `clients` concurrent callers, each sending `per_client` sequential GETs over one keep-alive
/// connection (re-dialled after a failure). Bounded by [`PHASE_CAP`] and [`REQUEST_CAP`].
pub async fn load(
    proxy: SocketAddr,
    path_and_query: &str,
    clients: usize,
    per_client: usize,
) -> Tally {
    assert!(proxy.ip().is_loopback(), "load only ever targets loopback");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let path = path_and_query.to_string();
        tasks.spawn(async move { client(proxy, &path, per_client).await });
    }
    let all = async {
        let mut total = Tally::default();
        while let Some(done) = tasks.join_next().await {
            total.add(done.expect("load client task"));
        }
        total
    };
    tokio::time::timeout(PHASE_CAP, all)
        .await
        .expect("a load phase exceeded its hard time cap")
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn dial(proxy: SocketAddr) -> Option<Sender> {
    super::http::dial(proxy).await.ok()
}

async fn client(proxy: SocketAddr, path: &str, count: usize) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    for _ in 0..count {
        tally.sent += 1;
        let outcome = tokio::time::timeout(REQUEST_CAP, one(proxy, path, &mut sender, &mut tally))
            .await
            .expect("one request through popgate exceeded its cap");
        if outcome.status == 200 {
            tally.ok += 1;
        }
        *tally.outcomes.entry(outcome).or_default() += 1;
    }
    tally
}

async fn one(
    proxy: SocketAddr,
    path: &str,
    sender: &mut Option<Sender>,
    tally: &mut Tally,
) -> Outcome {
    let ready = match sender {
        Some(s) => s.ready().await.is_ok(),
        None => false,
    };
    if !ready {
        *sender = dial(proxy).await;
    }
    let Some(s) = sender.as_mut() else {
        return Outcome {
            status: 0,
            kind: "connect_failed".into(),
        };
    };
    let request = http::Request::get(format!("http://{GRAPH}{path}"))
        .header(http::header::HOST, GRAPH)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = match s.send_request(request).await {
        Ok(r) => r,
        Err(_) => {
            *sender = None;
            return Outcome {
                status: 0,
                kind: "no_response".into(),
            };
        }
    };
    let status = response.status().as_u16();
    let body = match response.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            *sender = None;
            return Outcome {
                status,
                kind: "body_cut".into(),
            };
        }
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let kind = if status == 200 {
        let cnf = json["cnf_x5t"].as_str();
        let presented = json["presented_x5t"].as_str();
        if let Some(presented) = presented {
            *tally.presented.entry(presented.to_string()).or_default() += 1;
        }
        // A Bearer token has no cnf; a PoP token's cnf must equal what TLS presented.
        if cnf.is_some() && cnf != presented {
            tally.cnf_mismatch += 1;
        }
        "echo".to_string()
    } else {
        json["error"].as_str().unwrap_or_default().to_string()
    };
    Outcome { status, kind }
}

/// 200 from the resource.
pub const ECHO: (u16, &str) = (200, "echo");
/// popgate's 503 when no usable token exists.
pub const NO_TOKEN: (u16, &str) = (503, "no_token");
