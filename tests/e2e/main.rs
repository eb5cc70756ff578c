//! End to end through the real proxy against the local authority: the flow matrix, load, and faults
//! at the token endpoint, IMDS and upstream. One test binary; each file is a module.

#[path = "../kit/mod.rs"]
mod kit;

mod e2e_load;
mod e2e_matrix;
mod e2e_mi_sources;
mod empty_body_length;
mod faults_imds;
mod faults_token_endpoint;
mod faults_upstream;
mod intercept;
mod intercept_mtls;
mod outbound_proxy;
mod upstream_pool;
mod upstream_lanes;
