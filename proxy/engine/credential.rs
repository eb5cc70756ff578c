//! The seam between where tokens come from (one `Credential` per identity × resource × token type ×
//! flow) and who uses them (the per-route drivers that publish snapshots).

use std::future::Future;
use std::pin::Pin;

use super::cache::CachedToken;
pub use crate::metrics::CredentialLabels;
pub use crate::route::status::EngineError;

/// A boxed future, so `Credential` stays object-safe (`Arc<dyn Credential>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of tokens for one (identity, resource, token type, flow), as routes use it.
/// Implemented once for every [`TokenSource`](super::token_source::TokenSource) by
/// [`Cached`](super::cached::Cached) (cache entries, single flight, retries), and by the static
/// token file.
pub trait Credential: Send + Sync + 'static {
    /// What this credential is, for logs, metrics labels and error bodies.
    fn labels(&self) -> &CredentialLabels;

    /// A usable token: the cached one, or one acquisition shared by every concurrent caller. A PoP
    /// token carries its binding certificate (`token.binding`).
    fn get(&self) -> BoxFuture<'_, Result<CachedToken, EngineError>>;

    /// Refresh ahead of expiry. `seen` is the generation the caller holds; when another route on the
    /// same credential already replaced it, the newer token comes back without a new acquisition.
    /// On failure the still-usable token stays cached.
    fn refresh(&self, seen: u64) -> BoxFuture<'_, Result<CachedToken, EngineError>>;

    /// The resource refused the token of `generation` (`401 invalid_token`): forget it so the next
    /// `get` acquires a new one.
    fn invalidate(&self, generation: u64) -> BoxFuture<'_, ()>;

    /// Changes whenever the binding certificate changes (certificate file rotated, IMDS certificate
    /// re-minted), so drivers fetch a token for the new certificate at once.
    fn binding_changes(&self) -> tokio::sync::watch::Receiver<u64>;
}
