//! The leaf certificates of intercepted hosts, minted on first use and kept per host name in a
//! bounded cache, each as the TLS server configuration that presents it (so TLS session
//! resumption works per host).
//!
//! Minting (a P-256 key and one signature) runs under `spawn_blocking`, before the tunnel's
//! handshake starts, never on an async worker inside a handshake. The cache is a mutex-held map
//! touched once per tunnel (not per request); two tunnels that miss at once both mint, and the
//! second insert wins: harmless, and rarer than the lock a single-flight would add.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls::sign::SingleCertAndKey;

use crate::certs::intercept_ca::{InterceptCa, MintError};
use crate::locks::lock_unpoisoned;
use crate::metrics;

/// Hosts whose leaf is kept. Route hosts are few, but a wildcard route (`*.example.com`) lets a
/// caller name any number of hosts; past this many the entry due for renewal soonest is dropped,
/// so memory stays bounded (about 2 KiB per entry) whatever callers ask for.
pub(crate) const MAX_CACHED_LEAVES: usize = 1024;
/// A leaf's lifetime: short, so a leaf copied off this host is of little use, and long enough
/// that a busy host mints about once a day.
pub(crate) const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// When a cached leaf is replaced: at half its lifetime, so no tunnel ever gets a leaf close to
/// its end (a long-lived connection keeps the leaf it started with for up to 12 h more).
pub(crate) const LEAF_RENEW_AFTER: Duration = Duration::from_secs(12 * 3600);

struct Cached {
    config: Arc<ServerConfig>,
    renew_at: Instant,
}

/// Host name → the TLS server configuration presenting its leaf.
#[derive(Default)]
pub(crate) struct LeafCache {
    map: Mutex<HashMap<Box<str>, Cached>>,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("hosts", &self.lock().len())
            .finish()
    }
}

impl LeafCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Cached>> {
        // Every critical section is one lookup, insert or scan that cannot panic midway.
        lock_unpoisoned(&self.map)
    }

    /// The server configuration for `name` (lowercase, no port): the cached one while it is
    /// not due for renewal, else a newly minted one.
    pub(crate) async fn config_for(
        &self,
        ca: &Arc<InterceptCa>,
        name: &str,
    ) -> Result<Arc<ServerConfig>, MintError> {
        let now = Instant::now();
        if let Some(cached) = self.lock().get(name)
            && cached.renew_at > now
        {
            return Ok(Arc::clone(&cached.config));
        }
        let ca = Arc::clone(ca);
        let host = name.to_string();
        let config = tokio::task::spawn_blocking(move || server_config(&ca, &host))
            .await
            .map_err(|e| MintError::new(e.to_string()))??;
        metrics::intercept::minted();
        tracing::info!(
            host = name,
            "leaf certificate minted for an intercepted host"
        );
        let mut map = self.lock();
        if map.len() >= MAX_CACHED_LEAVES && !map.contains_key(name) {
            let soonest = map
                .iter()
                .min_by_key(|(_, c)| c.renew_at)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                map.remove(&k);
            }
        }
        map.insert(
            name.into(),
            Cached {
                config: Arc::clone(&config),
                renew_at: now + LEAF_RENEW_AFTER,
            },
        );
        Ok(config)
    }
}

/// A TLS server configuration presenting a new leaf for `host`: h2 and http/1.1 by ALPN, no
/// client certificate (the tunnel's caller was identified before the CONNECT was accepted).
fn server_config(ca: &InterceptCa, host: &str) -> Result<Arc<ServerConfig>, MintError> {
    let leaf = ca.mint(host, LEAF_LIFETIME)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MintError::new(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf.certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
