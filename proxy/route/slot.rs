//! What the data plane reads per request: a route's current snapshot (the prebuilt `Authorization`
//! value and the client that presents the matching certificate), published through an `ArcSwap`.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::HeaderValue;
use tokio::sync::Notify;

use crate::identity::token::Token;
use crate::metrics::{self, RouteMetrics};
use crate::net::client::{UpstreamClient, UpstreamSettings};
use crate::net::upstream_tls::{self, UpstreamTlsError};
use crate::route::demand::{DemandCell, DemandReader};
use crate::route::policy::RoutePolicy;

use crate::route::status::RouteStatus;

/// Why a snapshot cannot be built from a token.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The token cannot be sent as an Authorization header (it holds invalid characters).
    #[error("the token cannot be sent as an Authorization header (it holds invalid characters)")]
    BadHeaderValue,
    /// An mtls_pop token needs its binding certificate.
    #[error("an mtls_pop token needs its binding certificate")]
    PopWithoutCertificate,
    /// The upstream TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] UpstreamTlsError),
}

/// Everything one request needs, built ahead of time. Replaced whole on refresh or rotation.
pub struct Snapshot {
    /// `Bearer …` or `mtls_pop …`, marked sensitive.
    pub authorization: HeaderValue,
    /// The thumbprint of the certificate the client presents (`None`: no client certificate).
    pub x5t_s256: Option<String>,
    /// When the token expires.
    pub expires_at: SystemTime,
    /// Increases with every snapshot published for a route.
    pub generation: u64,
    /// The pooled client presenting the token's binding certificate.
    pub client: UpstreamClient,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("authorization", &"<redacted>")
            .field("x5t_s256", &self.x5t_s256)
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Builds a snapshot from a token: the `ClientConfig` presenting `token.binding` (none when the
    /// token has no binding; shared with the other routes presenting that same certificate) and a
    /// new client with its own pool. Never reuses a config or pool from another certificate.
    pub fn build(
        token: &Token,
        upstream: &UpstreamSettings,
        generation: u64,
    ) -> Result<Self, SnapshotError> {
        if token.token_type == crate::identity::token::TokenType::MtlsPop && token.binding.is_none()
        {
            return Err(SnapshotError::PopWithoutCertificate);
        }
        let authorization = token
            .authorization_header()
            .map_err(|_| SnapshotError::BadHeaderValue)?;
        let tls =
            upstream_tls::shared_client_config(token.binding.as_ref(), &upstream.extra_roots)?;
        Ok(Self {
            authorization,
            x5t_s256: token.binding.as_ref().map(|b| b.x5t_s256().to_string()),
            expires_at: token.expires_at,
            generation,
            client: UpstreamClient::new(tls, upstream),
        })
    }

    /// Like [`Snapshot::build`], but keeps `previous`'s client (its `ClientConfig`, session cache
    /// and warm pool) when it presents the same certificate as `token.binding`: a token refresh
    /// for an unchanged certificate changes only the header, so reconnecting would buy nothing
    /// but a burst of mTLS handshakes. A different certificate (or none instead of one) always
    /// gets a new config and pool, so certificate A is never presented with a token bound to B.
    pub fn build_reusing(
        token: &Token,
        upstream: &UpstreamSettings,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Self, SnapshotError> {
        let x5t = token.binding.as_ref().map(|b| b.x5t_s256());
        let Some(previous) = previous.filter(|p| p.x5t_s256.as_deref() == x5t) else {
            return Self::build(token, upstream, generation);
        };
        if token.token_type == crate::identity::token::TokenType::MtlsPop && x5t.is_none() {
            return Err(SnapshotError::PopWithoutCertificate);
        }
        let authorization = token
            .authorization_header()
            .map_err(|_| SnapshotError::BadHeaderValue)?;
        Ok(Self {
            authorization,
            x5t_s256: previous.x5t_s256.clone(),
            expires_at: token.expires_at,
            generation,
            client: previous.client.clone(),
        })
    }
}

/// What a route's slot knows besides its snapshot: used in 503 bodies and for the wait bounds.
#[derive(Clone, Debug, Default)]
pub struct RouteInfo {
    /// The identity the route's token is acquired for (routes.yaml name).
    pub identity: Option<Arc<str>>,
    /// The route's own request timeout (`None`: the data plane's default).
    pub request_timeout: Option<Duration>,
    /// Acquire on the first request instead of at start.
    pub lazy: bool,
}

/// A route's published state. `None` means "no usable token": the data plane answers 503 naming
/// the route's [`RouteStatus`].
pub struct RouteSlot {
    name: Arc<str>,
    info: RouteInfo,
    /// Caller rules and body limit (`dataplane::route_policy`); default: none. Swappable so a
    /// reload that changes only these keeps the route's token and pool.
    policy: ArcSwap<RoutePolicy>,
    /// The current snapshot; the credential engine stores, the data plane loads.
    pub snapshot: ArcSwapOption<Snapshot>,
    status: ArcSwap<RouteStatus>,
    /// Told on every publish, withdraw and status change, so slow paths can wait for one
    /// ([`RouteSlot::wait_until`]). Held inline: a `watch` channel was an allocation of ~350 B
    /// per route (benches/README.md, memory with 1,000 routes).
    changed: Notify,
    demand: DemandCell,
    /// The route's metric handles, kept once the route is registered (see [`RouteSlot::metrics`]).
    metrics: OnceLock<Arc<RouteMetrics>>,
}

impl AsRef<DemandCell> for RouteSlot {
    fn as_ref(&self) -> &DemandCell {
        &self.demand
    }
}

impl fmt::Debug for RouteSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteSlot")
            .field("name", &self.name)
            .field("info", &self.info)
            .field("policy", &self.policy.load())
            .field("snapshot", &self.snapshot.load())
            .field("status", &self.status.load())
            .finish()
    }
}

impl RouteSlot {
    /// An empty slot (no snapshot yet) for an eager route with no identity named.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self::for_route(name, RouteInfo::default())
    }

    /// An empty slot for a route described by `info`.
    pub fn for_route(name: impl Into<Arc<str>>, info: RouteInfo) -> Self {
        let status = RouteStatus::pending(info.lazy);
        Self {
            name: name.into(),
            info,
            policy: ArcSwap::from_pointee(RoutePolicy::default()),
            snapshot: ArcSwapOption::empty(),
            status: ArcSwap::from_pointee(status),
            changed: Notify::new(),
            demand: DemandCell::default(),
            metrics: OnceLock::new(),
        }
    }

    /// A slot already holding a snapshot.
    pub fn with_snapshot(name: impl Into<Arc<str>>, snapshot: Snapshot) -> Self {
        let slot = Self::new(name);
        slot.set_status(RouteStatus::Ready {
            expires_at: snapshot.expires_at,
            generation: snapshot.generation,
        });
        slot.publish(snapshot);
        slot
    }

    /// This slot with the route's caller rules and body limit.
    pub fn with_policy(self, policy: RoutePolicy) -> Self {
        self.set_policy(policy);
        self
    }

    /// Replaces the route's caller rules and body limit; the next request sees them (a reload
    /// that changes only `allow` or `max_body_bytes` calls this on the kept slot).
    pub fn set_policy(&self, policy: RoutePolicy) {
        self.policy.store(Arc::new(policy));
    }

    /// The route's current caller rules and body limit (do not hold across an `await`).
    pub fn policy(&self) -> arc_swap::Guard<Arc<RoutePolicy>> {
        self.policy.load()
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The metric handles of requests routed here under the route name `route`: what
    /// `metrics::route(route)` answers, without its map lookup per request once the route is
    /// registered (registrations are never undone, so the kept handles stay the map's).
    pub fn metrics(&self, route: &str) -> Arc<RouteMetrics> {
        if *self.name != *route {
            // A slot placed under another route name (only tests build such tables).
            return metrics::route(route);
        }
        if let Some(handles) = self.metrics.get() {
            return Arc::clone(handles);
        }
        match metrics::registered(route) {
            Some(handles) => Arc::clone(self.metrics.get_or_init(|| handles)),
            None => metrics::unrouted(),
        }
    }

    /// The route's identity, request timeout and acquisition mode.
    pub fn info(&self) -> &RouteInfo {
        &self.info
    }

    /// Publishes a new snapshot; requests already in flight keep the old one until they finish.
    pub fn publish(&self, snapshot: Snapshot) {
        self.publish_arc(Arc::new(snapshot));
    }

    /// Publishes a snapshot the caller keeps a handle on.
    pub fn publish_arc(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(Some(snapshot));
        self.changed.notify_waiters();
    }

    /// Withdraws the snapshot: requests get 503 until the next publish.
    pub fn withdraw(&self) {
        self.snapshot.store(None);
        self.changed.notify_waiters();
    }

    /// The route's status (lock-free).
    pub fn status(&self) -> Arc<RouteStatus> {
        self.status.load_full()
    }

    /// Replaces the route's status.
    pub fn set_status(&self, status: RouteStatus) {
        self.status.store(Arc::new(status));
        self.changed.notify_waiters();
    }

    /// Waits (at most `timeout`) until `ready(self)` holds; returns whether it did. `ready` is
    /// checked at once and after every publish, withdraw and status change.
    pub async fn wait_until(&self, timeout: Duration, ready: impl Fn(&RouteSlot) -> bool) -> bool {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                // Registered before the check, so a change between the check and the wait is
                // seen (`notify_waiters` wakes only registered waiters).
                changed.as_mut().enable();
                if ready(self) {
                    return true;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// True while a driver watches this slot (so waiting for it to publish makes sense).
    pub fn has_driver(&self) -> bool {
        self.demand.has_reader()
    }

    /// The driver's view of what the data plane asked for (one driver per slot).
    pub fn demand(self: &Arc<Self>) -> DemandReader<RouteSlot> {
        DemandReader::new(Arc::clone(self))
    }

    /// Asks the driver of a lazy route to start acquiring (no-op once started).
    pub fn demand_start(&self) {
        self.demand.start();
    }

    /// Asks the driver of a failing route to retry now (a reload kept the route).
    pub fn demand_retry(&self) {
        self.demand.retry();
    }

    /// Asks the driver to stop (the route is retired). A slot has one driver in its life.
    pub fn demand_stop(&self) {
        self.demand.stop();
    }

    /// Tells the driver the upstream refused the token of snapshot `generation`.
    pub fn demand_invalidate(&self, generation: u64) {
        self.demand.invalidate(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::token::{AccessToken, TokenType};
    use crate::net::upstream_tls::ExtraRoots;
    use std::time::Duration;

    fn settings() -> UpstreamSettings {
        let ca = rcgen::CertifiedIssuer::self_signed(
            {
                let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p
            },
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        let mut extra = ExtraRoots::default();
        extra.add_der("test-ca", ca.der().clone());
        UpstreamSettings {
            extra_roots: extra,
            ..UpstreamSettings::default()
        }
    }

    fn token(kind: TokenType, secret: &str) -> Token {
        Token {
            access_token: AccessToken::new(kind, secret.into()),
            token_type: kind,
            expires_at: SystemTime::now() + Duration::from_secs(3600),
            refresh_in: None,
            binding: None,
        }
    }

    #[tokio::test]
    async fn debug_redacts_the_authorization_value() {
        let snap =
            Snapshot::build(&token(TokenType::Bearer, "s3cr3t-token"), &settings(), 7).unwrap();
        let shown = format!("{snap:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("generation: 7"), "{shown}");
        assert!(snap.authorization.is_sensitive());
        assert_eq!(snap.x5t_s256, None);
        let slot = RouteSlot::with_snapshot("r", snap);
        assert!(!format!("{slot:?}").contains("s3cr3t"));
        slot.withdraw();
        assert!(slot.snapshot.load().is_none());
    }

    #[test]
    fn pop_without_certificate_is_refused() {
        let err = Snapshot::build(&token(TokenType::MtlsPop, "abc"), &settings(), 1).unwrap_err();
        assert!(matches!(err, SnapshotError::PopWithoutCertificate), "{err}");
    }

    #[test]
    fn a_token_with_control_characters_is_refused_without_showing_it() {
        let err =
            Snapshot::build(&token(TokenType::Bearer, "abc\ndef"), &settings(), 1).unwrap_err();
        assert!(matches!(err, SnapshotError::BadHeaderValue), "{err}");
        assert!(!err.to_string().contains("abc"));
    }

    fn binding(cn: &str) -> crate::certs::binding::BindingCert {
        crate::certs::binding::test_binding(cn)
    }

    fn pop(secret: &str, cert: &crate::certs::binding::BindingCert) -> Token {
        let mut t = token(TokenType::MtlsPop, secret);
        t.binding = Some(cert.clone());
        t
    }

    #[tokio::test]
    async fn same_certificate_reuses_the_client_other_certificates_never_do() {
        let settings = settings();
        let (a, b) = (binding("a"), binding("b"));
        let first = Snapshot::build(&pop("t1", &a), &settings, 1).unwrap();
        let refreshed =
            Snapshot::build_reusing(&pop("t2", &a), &settings, 2, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(
            first.client.tls_config(),
            refreshed.client.tls_config()
        ));
        assert_eq!(refreshed.authorization.to_str().unwrap(), "mtls_pop t2");
        assert_eq!(refreshed.generation, 2);

        let rotated =
            Snapshot::build_reusing(&pop("t3", &b), &settings, 3, Some(&refreshed)).unwrap();
        assert!(!Arc::ptr_eq(
            refreshed.client.tls_config(),
            rotated.client.tls_config()
        ));
        assert_eq!(rotated.x5t_s256.as_deref(), Some(b.x5t_s256()));

        // A Bearer token without a certificate never reuses a client that presents one.
        let bearer = Snapshot::build_reusing(
            &token(TokenType::Bearer, "t4"),
            &settings,
            4,
            Some(&rotated),
        )
        .unwrap();
        assert!(!Arc::ptr_eq(
            rotated.client.tls_config(),
            bearer.client.tls_config()
        ));
        assert_eq!(bearer.x5t_s256, None);
        let err = Snapshot::build_reusing(
            &token(TokenType::MtlsPop, "t5"),
            &settings,
            5,
            Some(&bearer),
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotError::PopWithoutCertificate), "{err}");
    }

    #[tokio::test]
    async fn waiters_see_status_changes() {
        let slot = Arc::new(RouteSlot::for_route(
            "r",
            RouteInfo {
                identity: Some("app".into()),
                request_timeout: None,
                lazy: true,
            },
        ));
        assert!(slot.status().is_pending());

        // A waiter wakes on the status change made after it started waiting.
        let waiter = {
            let slot = Arc::clone(&slot);
            tokio::spawn(async move {
                slot.wait_until(Duration::from_secs(30), |s| s.status().is_serving())
                    .await
            })
        };
        tokio::task::yield_now().await;
        slot.set_status(RouteStatus::Ready {
            expires_at: SystemTime::now(),
            generation: 1,
        });
        assert!(waiter.await.unwrap());
        // And gives up at its bound when nothing happens.
        assert!(
            !slot
                .wait_until(Duration::from_millis(1), |s| s.status().is_pending())
                .await
        );
    }
}
