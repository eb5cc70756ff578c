//! Scrape time: the process-wide families plus values read from the running app's state — the
//! token cache's own counters (not counted twice) and each route's token expiry and state.

use std::sync::Arc;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use prometheus::{
    Encoder as _, Gauge, GaugeVec, IntCounter, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::engine::cache::TokenCache;
use crate::engine::credential::EngineError;
use crate::route::slot::RouteSlot;

/// The `Content-Type` of the text exposition format (version 0.0.4).
pub(crate) const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The route states, as `popgate_route_state` label values.
const ROUTE_STATES: [&str; 4] = ["pending", "ready", "stale", "failed"];

/// The failure classes, as `popgate_route_failure` label values (`EngineError::failure_class`).
const FAILURE_CLASSES: [&str; 2] = ["permanent_failure", "transient_failure"];

/// What the admin listener reads at scrape time, as of the running config.
#[derive(Clone, Debug)]
pub struct ScrapeView {
    /// Every route's slot (state and published snapshot).
    pub slots: Vec<Arc<RouteSlot>>,
    /// The engine's shared token cache.
    pub cache: Arc<TokenCache<EngineError>>,
}

/// A handle on the current [`ScrapeView`]. A reload stores a new view (new routes, and a new
/// cache when the network settings changed), so `/metrics` and `/readyz` never report a config
/// that is no longer served. It also carries whether popgate is draining (a stop signal came):
/// from then on `/readyz` answers 503 whatever the routes' state.
#[derive(Clone, Debug)]
pub struct ScrapeSources {
    view: Arc<ArcSwap<ScrapeView>>,
    draining: Arc<AtomicBool>,
}

impl ScrapeSources {
    pub fn new(view: ScrapeView) -> Self {
        Self {
            view: Arc::new(ArcSwap::from_pointee(view)),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The view the next scrape reads.
    pub fn load(&self) -> Arc<ScrapeView> {
        self.view.load_full()
    }

    /// Replaces the view (after a reload).
    pub fn store(&self, view: ScrapeView) {
        self.view.store(Arc::new(view));
    }

    /// Marks popgate as draining: `/readyz` answers 503 from the next request on. Never undone.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether a stop signal came.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Why a scrape could not be rendered (an internal error; never a secret).
#[derive(Debug, thiserror::Error)]
#[error("cannot render metrics: {0}")]
pub(crate) struct ScrapeError(#[from] prometheus::Error);

/// Renders every family in the Prometheus text format.
pub(crate) fn render(sources: &ScrapeSources) -> Result<String, ScrapeError> {
    let sources = &*sources.load();
    let mut families = crate::metrics::global().registry().gather();
    families.extend(app_registry(sources)?.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out)?;
    // The text encoder writes only UTF-8 (names, label values and numbers).
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn counter(r: &Registry, name: &str, help: &str, value: u64) -> Result<(), ScrapeError> {
    let c = IntCounter::new(name, help)?;
    c.inc_by(value);
    r.register(Box::new(c))?;
    Ok(())
}

/// A throwaway registry holding this scrape's values from the app's state.
fn app_registry(sources: &ScrapeView) -> Result<Registry, ScrapeError> {
    let r = Registry::new();
    crate::metrics::process::register(&r)?;
    let stats = sources.cache.stats();
    counter(
        &r,
        "popgate_token_cache_hits_total",
        "Token requests answered from the cache.",
        stats.hits.load(Ordering::Relaxed),
    )?;
    counter(
        &r,
        "popgate_token_cache_misses_total",
        "Token requests that found no usable cached token.",
        stats.misses.load(Ordering::Relaxed),
    )?;
    counter(
        &r,
        "popgate_token_cache_acquisitions_total",
        "Acquisitions the cache ran (token endpoint or IMDS calls, retries included in one).",
        stats.acquisitions.load(Ordering::Relaxed),
    )?;
    counter(
        &r,
        "popgate_token_cache_failures_total",
        "Acquisitions that failed.",
        stats.failures.load(Ordering::Relaxed),
    )?;
    counter(
        &r,
        "popgate_token_retry_after_blocks_total",
        "Acquisitions not sent because the peer's Retry-After had not passed.",
        stats.blocked.load(Ordering::Relaxed),
    )?;

    let expires = GaugeVec::new(
        Opts::new(
            "popgate_route_token_expires_in_seconds",
            "Seconds until each route's published token expires (absent: none published).",
        ),
        &["route"],
    )?;
    let state = IntGaugeVec::new(
        Opts::new(
            "popgate_route_state",
            "1 for each route's current token state (pending, ready, stale, failed).",
        ),
        &["route", "state"],
    )?;
    let failure = IntGaugeVec::new(
        Opts::new(
            "popgate_route_failure",
            "1 for the class of each route's last acquisition failure while it is failing (stale or failed): permanent_failure (a 4xx refusal, retried every 5 to 30 minutes or at a reload) or transient_failure (retried within a minute); 0 otherwise.",
        ),
        &["route", "class"],
    )?;
    let now = SystemTime::now();
    for slot in &sources.slots {
        if let Some(snapshot) = slot.snapshot.load().as_ref() {
            let left = match snapshot.expires_at.duration_since(now) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            };
            expires.with_label_values(&[slot.name()]).set(left);
        }
        let status = slot.status();
        let current = status.label();
        for s in ROUTE_STATES {
            state
                .with_label_values(&[slot.name(), s])
                .set(i64::from(s == current));
        }
        let class = status.error().map(|e| e.failure_class());
        for c in FAILURE_CLASSES {
            failure
                .with_label_values(&[slot.name(), c])
                .set(i64::from(class == Some(c)));
        }
    }
    r.register(Box::new(expires))?;
    r.register(Box::new(state))?;
    r.register(Box::new(failure))?;
    let routes = Gauge::new("popgate_routes", "Routes in the running config.")?;
    routes.set(sources.slots.len() as f64);
    r.register(Box::new(routes))?;
    Ok(r)
}
