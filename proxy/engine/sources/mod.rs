//! Token sources: one [`Credential`](super::credential::Credential) implementation per identity
//! kind and flow, each acquiring over [`Transport`](crate::net::token_transport::Transport),
//! caching in the shared [`TokenCache`], retrying per protocol.md §7.

pub mod cert_app;
pub mod cert_watch;
pub mod errors;
pub mod fic;
pub mod managed_identity_bearer;
pub mod managed_identity_pop;
pub mod retry;
pub mod static_file;
pub mod workload_identity;

use std::future::Future;
use std::sync::Arc;

use crate::identity::token::{Token, TokenType};

use super::cache::{CacheKey, CachedToken, Failure, TokenCache};
use super::credential::EngineError;

/// Whether a caller wants any usable token or a fresh one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// The cached token while usable.
    Usable,
    /// A new one unless a newer generation than this already exists.
    Refresh(u64),
}

/// The cache key of (identity, scope, token type, binding x5t#S256).
pub(crate) fn cache_key(
    identity: &str,
    scope: &str,
    token_type: TokenType,
    binding_x5t: Option<&str>,
) -> CacheKey {
    CacheKey {
        identity: Arc::from(identity),
        scope: Arc::from(scope),
        token_type,
        binding_x5t: binding_x5t.map(Arc::from),
    }
}

/// Runs `acquire` through the cache as `want` asks (single flight per key).
pub(crate) async fn through_cache<F, Fut>(
    cache: &TokenCache<EngineError>,
    key: &CacheKey,
    want: Want,
    acquire: F,
) -> Result<CachedToken, EngineError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Token, Failure<EngineError>>>,
{
    let result = match want {
        Want::Usable => cache.get(key, acquire).await,
        Want::Refresh(seen) => cache.refresh(key, Some(seen), acquire).await,
    };
    result.map_err(errors::from_cache)
}
