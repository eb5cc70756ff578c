//! The local authority's tests: token endpoint, IMDS v1 and v2, PKI, resource server, admin
//! API and the binary. One test binary; each file is a module.

#[path = "../kit/mod.rs"]
mod kit;

mod authority_api;
mod binary_admin;
mod imds_v1;
mod imds_v2;
mod pki_certificates;
mod resource_server;
mod token_bearer_assertion;
mod token_cert_pop;
mod token_fic;
mod token_managed_identity;
mod token_protocol;
