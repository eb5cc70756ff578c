//! Where tokens and binding certificates come from.

pub mod binding;
pub mod token;

pub mod client_assertion;
pub mod csr;
pub mod ests_error;
pub mod imds_endpoint;
pub mod imds_v2;
pub mod outbound_request;
pub mod response_json;
pub mod token_request;
pub mod token_response;
