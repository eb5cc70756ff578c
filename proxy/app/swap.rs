//! Applying a new, already validated config to a running popgate: reuse what did not change,
//! prepare what did, then swap the route table in one store.
//!
//! Order: engine dependencies (kept unless `network` changed) → credentials (unchanged ones are
//! the same `Arc`, with their cached tokens) → routes (an unchanged route keeps its slot, driver,
//! published token and upstream pool; a new or changed one gets a new slot and driver) → new
//! eager routes' first acquisition, bounded by [`RELOAD_READY_WAIT`] → one `ArcSwap::store` of the
//! new table → retired routes' drivers stop. Listeners and caller-facing limits are bound at start:
//! changes to them are logged as needing a restart and otherwise ignored.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, InboundTls, Intercept, Listener, Network};
use crate::engine::build::{self, BuildError, EngineDeps};
use crate::engine::schedule::RefreshPolicy;
use crate::engine::sources::retry::RetryTiming;

use super::live::{self, LiveRoute};
use super::{App, RunError, routes};

/// Longest a reload waits for new eager routes' first tokens before swapping the table anyway:
/// a token endpoint answers in well under a second; ten seconds covers a slow one and an IMDSv2
/// certificate mint, yet keeps a reload from stalling behind an outage. Routes still acquiring
/// after it are swapped in pending (requests wait, bounded, as at startup) or failed (503).
pub const RELOAD_READY_WAIT: Duration = Duration::from_secs(10);

/// Why a new config could not be applied; the running config stays in place.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config's credentials or engine dependencies cannot be built.
    #[error("cannot set up token acquisition: {0}")]
    Build(#[from] BuildError),
    /// The new routes cannot be served.
    #[error(transparent)]
    Routes(#[from] RunError),
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Routes kept running untouched (same slot, token and pool).
    pub kept: Vec<String>,
    /// Routes new in this config.
    pub added: Vec<String>,
    /// Routes whose definition changed (new slot and driver; their credential may be reused).
    pub changed: Vec<String>,
    /// Routes no longer in the config.
    pub removed: Vec<String>,
    /// New or changed eager routes that had no token yet when the table was swapped.
    pub not_ready: Vec<String>,
    /// Settings that changed but only take effect on restart (`listeners`, `limits`, `admin`, `timeouts.drain`, `workers`).
    pub needs_restart: Vec<&'static str>,
}

impl App {
    /// Applies `config` (already loaded and validated). On error nothing changed: the old table,
    /// routes and credentials keep serving.
    pub async fn reload(&mut self, config: Config) -> Result<ReloadSummary, ReloadError> {
        let mut summary = ReloadSummary {
            needs_restart: restart_only_changes(&self.config, &config),
            ..ReloadSummary::default()
        };
        let deps = if same_network(&self.config.network, &config.network) {
            self.deps.clone()
        } else {
            EngineDeps::from_config(&config, RefreshPolicy::default(), RetryTiming::default())?
        };
        let credentials = build::build_credential_set(&config, &deps, Some(&self.credentials))?;
        let mut shared = routes::shared_upstream(&config)?;
        shared.lanes = self.workers;

        // Nothing is taken from `self.live` until the table is built, so every early return
        // leaves the running routes as they were.
        let mut next = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let Some(credential) = credentials.by_route.get(&route.name) else {
                stop_started(next).await;
                return Err(RunError::MissingCredential {
                    route: route.name.clone(),
                }
                .into());
            };
            let same_name = self.live.iter().position(|r| r.slot().name() == route.name);
            match same_name {
                Some(i) if self.live[i].serves_as(route, credential) => {
                    summary.kept.push(route.name.clone());
                    next.push(Entry::Kept(i));
                }
                found => {
                    if found.is_some() {
                        summary.changed.push(route.name.clone());
                    } else {
                        summary.added.push(route.name.clone());
                    }
                    next.push(Entry::Started(LiveRoute::spawn(route, credential, &shared)));
                }
            }
        }
        let slots: Vec<_> = next
            .iter()
            .map(|e| match e {
                Entry::Kept(i) => Arc::clone(self.live[*i].slot()),
                Entry::Started(r) => Arc::clone(r.slot()),
            })
            .collect();
        let table = routes::table_of(&config, &slots);
        let fresh: Vec<_> = next
            .iter()
            .filter_map(|e| match e {
                Entry::Started(r) => Some(Arc::clone(r.slot())),
                Entry::Kept(_) => None,
            })
            .collect();

        // New eager routes get their first token before any request can reach them.
        super::wait_eager(fresh.iter(), RELOAD_READY_WAIT).await;
        for slot in fresh.iter().filter(|s| !s.info().lazy) {
            let status = slot.status();
            if !matches!(*status, crate::route::status::RouteStatus::Ready { .. }) {
                summary.not_ready.push(slot.name().to_string());
                super::log_route_state(slot);
            }
        }

        crate::metrics::register_routes(config.routes.iter().map(|r| r.name.as_str()));
        // A kept route keeps its slot (token, pool), but its caller rules and body limit are
        // whatever the new file says; set them with the swap, so a refused reload changes nothing.
        for (route, entry) in config.routes.iter().zip(&next) {
            if let Entry::Kept(i) = entry {
                self.live[*i]
                    .slot()
                    .set_policy(crate::route::policy::RoutePolicy::of(route));
            }
        }
        self.table.store(Arc::new(table));

        let mut old: Vec<Option<LiveRoute>> = std::mem::take(&mut self.live)
            .into_iter()
            .map(Some)
            .collect();
        self.live = next
            .into_iter()
            .filter_map(|e| match e {
                Entry::Kept(i) => old[i].take(),
                Entry::Started(r) => Some(r),
            })
            .collect();
        let retired: Vec<LiveRoute> = old.into_iter().flatten().collect();
        summary.removed = retired
            .iter()
            .map(|r| r.slot().name().to_string())
            .filter(|name| !config.routes.iter().any(|r| &r.name == name))
            .collect();
        self.deps = deps;
        self.credentials = credentials;
        self.config = config;
        self.scrape.store(crate::admin::scrape::ScrapeView {
            slots: self.live.iter().map(|r| Arc::clone(r.slot())).collect(),
            cache: Arc::clone(&self.deps.cache),
        });
        // A failing kept route retries now, whatever its backoff: the reload may be the fix.
        for route in self
            .live
            .iter()
            .filter(|r| summary.kept.iter().any(|k| **k == *r.slot().name()))
        {
            route.slot().demand_retry();
        }
        // Requests already routed to a retired slot keep its snapshot until they finish.
        live::stop_all(retired).await;
        Ok(summary)
    }
}

/// A route of the new config: a running one kept (its index in the running list) or a new one.
enum Entry {
    Kept(usize),
    Started(LiveRoute),
}

/// Stops the drivers a failed reload started.
async fn stop_started(next: Vec<Entry>) {
    let started = next
        .into_iter()
        .filter_map(|e| match e {
            Entry::Started(r) => Some(r),
            Entry::Kept(_) => None,
        })
        .collect();
    live::stop_all(started).await;
}

/// Network settings the engine dependencies are built from.
fn same_network(a: &Network, b: &Network) -> bool {
    a.imds_endpoint == b.imds_endpoint
        && a.resolve == b.resolve
        && a.extra_ca == b.extra_ca
        && a.proxy == b.proxy
}

fn same_tls(a: &Option<InboundTls>, b: &Option<InboundTls>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.server == b.server && a.client_ca == b.client_ca,
        _ => false,
    }
}

fn same_listeners(a: &[Listener], b: &[Listener]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.address == b.address
                && same_tls(&a.tls, &b.tls)
                && same_intercept(&a.intercept, &b.intercept)
        })
}

/// The same interception CA (file and certificate): a new CA takes a restart, as TLS does.
fn same_intercept(a: &Option<Intercept>, b: &Option<Intercept>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.ca_cert_file == b.ca_cert_file && a.ca.cert_der() == b.ca.cert_der()
        }
        _ => false,
    }
}

/// The top-level keys whose changes only a restart applies.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if !same_listeners(&old.listeners, &new.listeners) {
        keys.push("listeners");
    }
    if old.limits != new.limits {
        keys.push("limits");
    }
    if old.admin != new.admin {
        keys.push("admin");
    }
    if old.timeouts.drain != new.timeouts.drain {
        keys.push("timeouts.drain");
    }
    if old.workers != new.workers {
        keys.push("workers");
    }
    keys
}

#[cfg(test)]
mod intercept_tests {
    use std::sync::Arc;

    use super::*;
    use crate::certs::intercept_ca::{InterceptCa, generate};

    fn intercept(dir: &std::path::Path, name: &str) -> Intercept {
        let (cert, key) = generate(name).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key.as_bytes()).unwrap();
        Intercept {
            ca: Arc::new(InterceptCa::load(&c, &k).unwrap()),
            ca_cert_file: c,
        }
    }

    fn listener(intercept: Option<Intercept>) -> Listener {
        Listener {
            address: "127.0.0.1:3128".parse().unwrap(),
            tls: None,
            intercept,
        }
    }

    #[test]
    fn turning_interception_on_or_changing_its_ca_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (intercept(dir.path(), "a"), intercept(dir.path(), "b"));
        let same = |x: Option<&Intercept>, y: Option<&Intercept>| {
            same_listeners(&[listener(x.cloned())], &[listener(y.cloned())])
        };
        assert!(same(None, None));
        assert!(same(Some(&a), Some(&a)));
        assert!(!same(None, Some(&a)));
        assert!(!same(Some(&a), Some(&b)));
    }
}
