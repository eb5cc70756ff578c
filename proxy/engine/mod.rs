//! The token engine: where tokens come from and how routes get them.
//!
//! Each identity kind and flow is a [`TokenSource`](token_source::TokenSource) (acquire only);
//! [`Cached`](cached::Cached) puts any source behind the shared [`cache`] (single flight,
//! refresh ahead, Retry-After blocks) as the [`Credential`](credential::Credential) routes use;
//! [`build`] makes one per distinct need. One [`driver`] per route keeps a usable token published
//! in its slot, on the [`schedule`], retrying with [`backoff`].

pub(crate) mod backoff;
pub mod build;
pub mod cache;
pub(crate) mod cached;
pub mod credential;
pub mod driver;
pub mod schedule;
pub mod sources;
pub(crate) mod token_source;
