//! Data plane: forwarding, listeners and error answers through popgate in-process. One test binary;
//! each file is a module. The memory test (`dataplane_streaming`) is its own binary: it reads the
//! process's peak RSS.

#[path = "../kit/mod.rs"]
mod kit;

mod dataplane_errors;
mod dataplane_forwarding;
mod dataplane_listener;
mod upstream_first_contact;
mod upstream_h2_streams;
mod upstream_h2_token_index;
mod upstream_host;
mod upstream_http1_pool;
