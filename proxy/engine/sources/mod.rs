//! Token sources: one [`TokenSource`](super::token_source::TokenSource) per identity kind and
//! flow, each acquiring over [`Transport`](crate::net::token_transport::Transport) and retrying per
//! protocol.md §7; [`Cached`](super::cached::Cached) puts each behind the shared token cache. The
//! static file is its own [`Credential`](super::credential::Credential) (see `static_file`).

pub(crate) mod attestation;
pub(crate) mod cert_app;
pub(crate) mod cert_watch;
pub(crate) mod errors;
pub(crate) mod fic;
pub(crate) mod imds_v2_binding;
pub(crate) mod managed_identity_bearer;
pub(crate) mod managed_identity_pop;
pub mod retry;
pub(crate) mod static_file;
pub(crate) mod token_call;
pub(crate) mod workload_identity;
