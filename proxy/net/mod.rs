//! Outbound connections: dialing (resolve map, per-host caps), rustls client configs, the pooled
//! upstream client, and the transport that carries token requests.

pub mod client;
pub mod connect;
pub(crate) mod connection_header;
pub mod held_body;
pub(crate) mod h1_codec;
pub mod h1_own;
pub(crate) mod h2_lane;
pub(crate) mod h2_request_pipe;
pub(crate) mod h2_stream;
pub(crate) mod host_semaphores;
pub mod http1_pool;
pub mod kept_head;
pub(crate) mod pool_gate;
pub(crate) mod proxy_tunnel;
pub(crate) mod read_ahead_budget;
pub mod response_body;
pub(crate) mod stall_body;
#[cfg(test)]
pub(crate) mod test_support;
pub(crate) mod token_call_gate;
pub mod token_transport;
pub(crate) mod trailers;
pub(crate) mod upstream_body;
pub mod upstream_error;
pub mod upstream_tls;
pub mod pinned_tls;
