//! [`Cached`]: the one [`Credential`] implementation for every [`TokenSource`]. It looks the token
//! up in the shared [`TokenCache`] (one acquisition in flight per entry, Retry-After blocks, a
//! failed refresh keeps the usable token), and when the token endpoint refuses the binding
//! certificate lets the source offer another one, once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::identity::token::TokenType;

use super::cache::{CacheKey, CachedToken, TokenCache};
use super::credential::{BoxFuture, Credential, CredentialLabels, EngineError};
use super::sources::errors;
use super::token_source::{Target, TokenSource};
use crate::locks::lock_unpoisoned;

/// Whether a caller wants any usable token or a fresh one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// The cached token while usable.
    Usable,
    /// A new one unless a newer generation than this already exists.
    Refresh(u64),
}

/// A [`TokenSource`] behind the token cache.
pub(crate) struct Cached<S: TokenSource> {
    target: Target,
    /// [`Target::cache_identity`], computed once.
    cache_identity: String,
    source: S,
    cache: Arc<TokenCache<EngineError>>,
    /// The entry of the last token handed out: `invalidate` names a generation of it, and needs
    /// no new input (no leg-1 call, no certificate mint) to find it.
    last_key: Mutex<Option<CacheKey>>,
}

impl<S: TokenSource> Cached<S> {
    /// `source`'s tokens for `target`, cached in `cache` (shared by every credential: keys
    /// never collide).
    pub(crate) fn new(target: Target, source: S, cache: Arc<TokenCache<EngineError>>) -> Self {
        Self {
            cache_identity: target.cache_identity(),
            target,
            source,
            cache,
            last_key: Mutex::new(None),
        }
    }

    async fn obtain(&self, want: Want) -> Result<CachedToken, EngineError> {
        let input = self.source.input().await?;
        let refused = AtomicBool::new(false);
        let first = self.through_cache(&input, want, &refused).await;
        if first.is_ok() || !refused.load(Ordering::SeqCst) {
            return first;
        }
        // The token endpoint refused the certificate: a source that can get another one (an
        // IMDSv2 re-mint) does, and the token is tried once more with it.
        let Some(renewed) = self.source.rebind(&self.target, &input).await else {
            return first;
        };
        let renewed = renewed?;
        self.through_cache(&renewed, Want::Usable, &AtomicBool::new(false))
            .await
    }

    /// The entry of a token acquired with `input`. A Bearer token is not bound: a certificate
    /// change does not make it a different token. A PoP token's entry is its certificate's.
    fn key(&self, input: &S::Input) -> CacheKey {
        let token_type = self.target.labels.token_type;
        let x5t = match token_type {
            TokenType::MtlsPop => self.source.binding(input).map(|b| b.x5t_s256()),
            TokenType::Bearer => None,
        };
        CacheKey {
            identity: Arc::from(self.cache_identity.as_str()),
            scope: Arc::from(self.target.scope.as_str()),
            token_type,
            binding_x5t: x5t.map(Arc::from),
        }
    }

    /// Runs one acquisition through the cache as `want` asks; `refused` records whether the
    /// acquisition (when one ran) saw its certificate refused.
    async fn through_cache(
        &self,
        input: &S::Input,
        want: Want,
        refused: &AtomicBool,
    ) -> Result<CachedToken, EngineError> {
        let key = self.key(input);
        let acquire = || async {
            self.source.acquire(&self.target, input).await.map_err(|e| {
                if e.binding_refused {
                    refused.store(true, Ordering::SeqCst);
                }
                e.into_failure()
            })
        };
        let result = match want {
            Want::Usable => self.cache.get(&key, acquire).await,
            Want::Refresh(seen) => self.cache.refresh(&key, Some(seen), acquire).await,
        };
        if result.is_ok() {
            *lock_unpoisoned(&self.last_key) = Some(key);
        }
        result.map_err(errors::from_cache)
    }
}

impl<S: TokenSource> Credential for Cached<S> {
    fn labels(&self) -> &CredentialLabels {
        &self.target.labels
    }

    fn get(&self) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(self.obtain(Want::Usable))
    }

    fn refresh(&self, seen: u64) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(self.obtain(Want::Refresh(seen)))
    }

    fn invalidate(&self, generation: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let key = lock_unpoisoned(&self.last_key).clone();
            if let Some(key) = key {
                self.cache.invalidate(&key, generation).await;
            }
        })
    }

    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.source.binding_changes()
    }
}
