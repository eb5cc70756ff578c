//! The token cache: one entry per (identity, scope, token type, binding certificate), a single
//! acquisition in flight per entry, Retry-After blocks, and a failed refresh that keeps serving the
//! still-usable token.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::identity::token::{Token, TokenType};

use super::schedule::RefreshPolicy;
use crate::locks::lock_unpoisoned;

/// Retry-After values above this are clamped (one bound for the whole token path).
pub use crate::identity::retry_policy::MAX_RETRY_AFTER;

/// What a cached token is keyed by (protocol.md §6). The binding is the certificate's `x5t#S256`
/// (whole DER), never the public key: a same-key renewal is a different entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The identity's name in routes.yaml.
    pub identity: Arc<str>,
    /// The scope asked for (`{resource}/.default`).
    pub scope: Arc<str>,
    /// Bearer or mtls_pop.
    pub token_type: TokenType,
    /// The binding certificate's `x5t#S256` (mtls_pop only).
    pub binding_x5t: Option<Arc<str>>,
}

/// A token as cached, with what the refresh schedule needs.
#[derive(Clone, Debug)]
pub struct CachedToken {
    /// The token.
    pub token: Token,
    /// When the token was acquired.
    pub acquired_at: SystemTime,
    /// Increases with every acquisition for the key; names the token in `invalidate`.
    pub generation: u64,
}

/// An acquisition that failed, with the peer's `Retry-After` if it sent one.
#[derive(Clone, Debug)]
pub struct Failure<E> {
    /// The failure.
    pub error: E,
    /// The peer's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl<E> Failure<E> {
    /// A failure without a `Retry-After`.
    pub fn new(error: E) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// Why the cache could not hand out a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheError<E> {
    /// The peer asked us to wait (Retry-After) and that time has not come; `last` is its answer.
    Blocked {
        /// Identical requests are not sent before this time.
        until: SystemTime,
        /// The failure that set the block.
        last: E,
    },
    /// The acquisition itself failed.
    Acquire(E),
}

#[derive(Debug)]
struct EntryState<E> {
    current: Option<CachedToken>,
    blocked: Option<(SystemTime, E)>,
    generation: u64,
}

type Entry<E> = Arc<tokio::sync::Mutex<EntryState<E>>>;

/// Counters for metrics: how often a request found a usable token, and how many acquisitions ran.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: AtomicU64,
    /// Lookups that found no usable token.
    pub misses: AtomicU64,
    /// Tokens acquired from a peer.
    pub acquisitions: AtomicU64,
    /// Acquisitions that failed.
    pub failures: AtomicU64,
    /// Lookups refused while a `Retry-After` block held.
    pub blocked: AtomicU64,
}

/// The cache. Cloneable handles share it.
#[derive(Debug)]
pub struct TokenCache<E> {
    policy: RefreshPolicy,
    entries: Mutex<HashMap<CacheKey, Entry<E>>>,
    stats: CacheStats,
}

impl<E: Clone> TokenCache<E> {
    /// An empty cache that refreshes tokens by `policy`.
    pub fn new(policy: RefreshPolicy) -> Self {
        Self {
            policy,
            entries: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
        }
    }

    /// The refresh policy.
    pub fn policy(&self) -> RefreshPolicy {
        self.policy
    }

    /// Counters of hits, misses, acquisitions, failures and blocks.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    fn entry(&self, key: &CacheKey) -> Entry<E> {
        // The map lock is held only to find or insert the entry, never across an await.
        let mut entries = lock_unpoisoned(&self.entries);
        Arc::clone(entries.entry(key.clone()).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(EntryState {
                current: None,
                blocked: None,
                generation: 0,
            }))
        }))
    }

    fn usable(&self, cached: &CachedToken, now: SystemTime) -> bool {
        self.policy
            .is_usable(cached.acquired_at, cached.token.expires_at, now)
    }

    /// A usable token for `key`: the cached one, or one `acquire` fetches. Concurrent callers for
    /// the same key wait for a single acquisition and share its result.
    pub async fn get<F, Fut>(
        &self,
        key: &CacheKey,
        acquire: F,
    ) -> Result<CachedToken, CacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, Failure<E>>>,
    {
        let entry = self.entry(key);
        let mut state = entry.lock().await;
        if let Some(cached) = &state.current
            && self.usable(cached, SystemTime::now())
        {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(cached.clone());
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        self.acquire_locked(&mut state, acquire).await
    }

    /// Acquire a new token even though the cached one may still be usable (refresh ahead). On
    /// failure the cached token stays in place and keeps being served while it is usable.
    ///
    /// `seen` is the generation the caller scheduled its refresh from: when another caller (a
    /// route sharing the key) has already replaced it, that newer token is returned instead of
    /// acquiring again, so N routes on one key cost one refresh.
    pub async fn refresh<F, Fut>(
        &self,
        key: &CacheKey,
        seen: Option<u64>,
        acquire: F,
    ) -> Result<CachedToken, CacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, Failure<E>>>,
    {
        let entry = self.entry(key);
        let mut state = entry.lock().await;
        if let (Some(seen), Some(current)) = (seen, &state.current)
            && current.generation > seen
            && self.usable(current, SystemTime::now())
        {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(current.clone());
        }
        self.acquire_locked(&mut state, acquire).await
    }

    async fn acquire_locked<F, Fut>(
        &self,
        state: &mut EntryState<E>,
        acquire: F,
    ) -> Result<CachedToken, CacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, Failure<E>>>,
    {
        if let Some((until, last)) = &state.blocked {
            if SystemTime::now() < *until {
                self.stats.blocked.fetch_add(1, Ordering::Relaxed);
                return Err(CacheError::Blocked {
                    until: *until,
                    last: last.clone(),
                });
            }
            state.blocked = None;
        }
        self.stats.acquisitions.fetch_add(1, Ordering::Relaxed);
        let acquired_at = SystemTime::now();
        match acquire().await {
            Ok(token) => {
                state.generation += 1;
                let cached = CachedToken {
                    token,
                    acquired_at,
                    generation: state.generation,
                };
                state.current = Some(cached.clone());
                Ok(cached)
            }
            Err(failure) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                if let Some(wait) = failure.retry_after {
                    let until = SystemTime::now() + wait.min(MAX_RETRY_AFTER);
                    state.blocked = Some((until, failure.error.clone()));
                }
                Err(CacheError::Acquire(failure.error))
            }
        }
    }

    /// The cached token, usable or not (for metrics and the refresh loop).
    pub async fn peek(&self, key: &CacheKey) -> Option<CachedToken> {
        let entry = self.entry(key);
        let state = entry.lock().await;
        state.current.clone()
    }

    /// Drop the token of `generation` (the resource said `invalid_token`). A newer token that
    /// another caller already fetched is kept, so a burst of 401s costs one acquisition.
    pub async fn invalidate(&self, key: &CacheKey, generation: u64) -> bool {
        let entry = self.entry(key);
        let mut state = entry.lock().await;
        match &state.current {
            Some(cached) if cached.generation == generation => {
                state.current = None;
                true
            }
            _ => false,
        }
    }

    /// Forget every entry whose identity is `identity` (its configuration changed).
    pub fn forget_identity(&self, identity: &str) {
        let mut entries = lock_unpoisoned(&self.entries);
        entries.retain(|key, _| &*key.identity != identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::token::AccessToken;
    use std::sync::atomic::AtomicUsize;

    fn key() -> CacheKey {
        CacheKey {
            identity: "app".into(),
            scope: "https://graph.microsoft.com/.default".into(),
            token_type: TokenType::MtlsPop,
            binding_x5t: Some("x5t".into()),
        }
    }

    fn token(secret: &str, lifetime: Duration) -> Token {
        Token {
            access_token: AccessToken::new(TokenType::MtlsPop, secret.into()),
            token_type: TokenType::MtlsPop,
            expires_at: SystemTime::now() + lifetime,
            refresh_in: None,
            binding: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// `get` for `key`, acquiring an hour's token `secret` if it has to; panics on an error.
    async fn get_or_acquire(
        cache: &TokenCache<String>,
        key: &CacheKey,
        secret: &str,
    ) -> CachedToken {
        cache
            .get(key, || async { Ok(token(secret, HOUR)) })
            .await
            .unwrap()
    }

    /// `refresh` for `key` from generation `seen`, acquiring `fresh` if it has to; panics on an
    /// error.
    async fn refresh_with(
        cache: &TokenCache<String>,
        key: &CacheKey,
        seen: Option<u64>,
        fresh: Token,
    ) -> CachedToken {
        cache
            .refresh(key, seen, || async { Ok(fresh) })
            .await
            .unwrap()
    }

    /// A `get` for `key()` whose acquisition is throttled (a 429) with `retry_after`: its error.
    async fn throttled(cache: &TokenCache<String>, retry_after: Duration) -> CacheError<String> {
        cache
            .get(&key(), || async {
                Err(Failure {
                    error: "429".to_string(),
                    retry_after: Some(retry_after),
                })
            })
            .await
            .unwrap_err()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_cold_callers_share_one_acquisition() {
        let cache: Arc<TokenCache<String>> = Arc::new(TokenCache::new(RefreshPolicy::default()));
        let calls = Arc::new(AtomicUsize::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let cache = Arc::clone(&cache);
            let calls = Arc::clone(&calls);
            let entered = Arc::clone(&entered);
            let mut gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                // Counted in the same poll that queues the caller on the entry lock.
                entered.fetch_add(1, Ordering::SeqCst);
                cache
                    .get(&key(), || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Hold the acquisition open until every caller has queued behind it.
                        let _ = gate.wait_for(|open| *open).await;
                        Ok(token("t1", HOUR))
                    })
                    .await
            }));
        }
        // Open the gate only once every caller is inside `get`, so none can be served by a token
        // that was already cached when it arrived: each one either shares the flight or fails.
        while entered.load(Ordering::SeqCst) < 200 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        for task in tasks {
            let got = task.await.unwrap().unwrap();
            assert_eq!(got.token.access_token.expose_secret(), "t1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().acquisitions.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unusable_token_is_replaced() {
        let cache: TokenCache<String> = TokenCache::new(RefreshPolicy::default());
        // 4 minutes left of a 1-hour token: inside the 5-minute margin, so not usable.
        let mut stale = token("old", Duration::from_secs(240));
        stale.expires_at = SystemTime::now() + Duration::from_secs(240);
        refresh_with(&cache, &key(), None, stale).await;
        let got = get_or_acquire(&cache, &key(), "new").await;
        // A 240 s lifetime has a 60 s margin (a quarter), so it is still usable right after.
        assert_eq!(got.token.access_token.expose_secret(), "old");
        let mut expired = token("expired", HOUR);
        expired.expires_at = SystemTime::now() - Duration::from_secs(1);
        refresh_with(&cache, &key(), None, expired).await;
        let got = get_or_acquire(&cache, &key(), "new").await;
        assert_eq!(got.token.access_token.expose_secret(), "new");
    }

    #[tokio::test]
    async fn failed_refresh_keeps_the_usable_token() {
        let cache: TokenCache<String> = TokenCache::new(RefreshPolicy::default());
        get_or_acquire(&cache, &key(), "t1").await;
        let err = cache
            .refresh(&key(), None, || async {
                Err(Failure::new("AADSTS50000".to_string()))
            })
            .await
            .unwrap_err();
        assert_eq!(err, CacheError::Acquire("AADSTS50000".to_string()));
        let got = cache
            .get(&key(), || async { panic!("must not acquire while usable") })
            .await
            .unwrap();
        assert_eq!(got.token.access_token.expose_secret(), "t1");
    }

    #[tokio::test]
    async fn retry_after_blocks_identical_requests() {
        let cache: TokenCache<String> = TokenCache::new(RefreshPolicy::default());
        let err = throttled(&cache, Duration::from_secs(120)).await;
        assert_eq!(err, CacheError::Acquire("429".to_string()));
        let err = cache
            .get(&key(), || async { panic!("must not call while blocked") })
            .await
            .unwrap_err();
        match err {
            CacheError::Blocked { until, last } => {
                assert_eq!(last, "429");
                let wait = until.duration_since(SystemTime::now()).unwrap();
                assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
            }
            other => panic!("expected Blocked, got {other:?}"),
        }
        // Another key is not blocked.
        let mut other = key();
        other.scope = "https://vault.azure.net/.default".into();
        get_or_acquire(&cache, &other, "v").await;
    }

    #[tokio::test]
    async fn retry_after_is_capped_at_an_hour() {
        let cache: TokenCache<String> = TokenCache::new(RefreshPolicy::default());
        let _ = throttled(&cache, Duration::from_secs(86_400)).await;
        match cache.get(&key(), || async { panic!("blocked") }).await {
            Err(CacheError::Blocked { until, .. }) => {
                assert!(until <= SystemTime::now() + MAX_RETRY_AFTER);
            }
            other => panic!("expected Blocked, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn invalidate_drops_only_the_named_generation() {
        let cache: TokenCache<String> = TokenCache::new(RefreshPolicy::default());
        let first = get_or_acquire(&cache, &key(), "t1").await;
        let second = refresh_with(&cache, &key(), None, token("t2", HOUR)).await;
        assert!(!cache.invalidate(&key(), first.generation).await);
        assert!(cache.invalidate(&key(), second.generation).await);
        let third = get_or_acquire(&cache, &key(), "t3").await;
        assert_eq!(third.token.access_token.expose_secret(), "t3");
        assert!(third.generation > second.generation);
    }

    #[tokio::test]
    async fn refresh_from_a_stale_generation_reuses_the_newer_token() {
        let cache: TokenCache<String> = TokenCache::new(RefreshPolicy::default());
        let first = get_or_acquire(&cache, &key(), "t1").await;
        // Route A refreshes first...
        let second = refresh_with(&cache, &key(), Some(first.generation), token("t2", HOUR)).await;
        // ...route B, scheduled from the same first token, gets t2 without a second acquisition.
        let b = cache
            .refresh(&key(), Some(first.generation), || async {
                panic!("already refreshed")
            })
            .await
            .unwrap();
        assert_eq!(b.generation, second.generation);
        assert_eq!(cache.stats().acquisitions.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn keys_differ_by_binding_certificate() {
        let cache: TokenCache<String> = TokenCache::new(RefreshPolicy::default());
        get_or_acquire(&cache, &key(), "a").await;
        let mut renewed = key();
        renewed.binding_x5t = Some("renewed-same-key".into());
        let got = get_or_acquire(&cache, &renewed, "b").await;
        assert_eq!(got.token.access_token.expose_secret(), "b");
        cache.forget_identity("app");
        let got = get_or_acquire(&cache, &key(), "c").await;
        assert_eq!(got.token.access_token.expose_secret(), "c");
    }
}
