//! Token sources: one [`TokenSource`](super::token_source::TokenSource) per identity kind and
//! flow, each acquiring over [`Transport`](crate::net::token_transport::Transport) and retrying per
//! protocol.md §7; [`Cached`](super::cached::Cached) puts each behind the shared token cache. The
//! static file is its own [`Credential`](super::credential::Credential) (see `static_file`).

pub mod attestation;
pub mod cert_app;
pub mod cert_watch;
pub mod errors;
pub mod fic;
pub mod imds_v2_binding;
pub mod managed_identity_bearer;
pub mod managed_identity_pop;
pub mod retry;
pub mod static_file;
pub(crate) mod token_call;
pub mod workload_identity;
