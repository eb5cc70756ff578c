//! The Entra ID and IMDS wire protocol: request builders and response parsers, no I/O of its own.

pub mod app_service;
pub(crate) mod authority_host;
pub mod client_assertion;
pub mod csr;
pub mod ests_error;
pub(crate) mod expiry;
pub mod imds_endpoint;
pub mod imds_v1;
pub mod imds_v2;
pub(crate) mod mi_token_response;
pub mod outbound_request;
pub mod response_json;
pub mod retry_policy;
pub mod static_token;
pub mod token;
pub mod token_request;
pub mod token_response;
pub(crate) mod workload_identity;
pub mod azure_arc;
pub mod cloud_shell;
pub mod machine_learning;
pub mod mi_retry;
pub mod mi_source;
pub mod service_fabric;
