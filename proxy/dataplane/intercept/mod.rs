//! CONNECT interception on listeners that opt in (`intercept:`): for apps whose `https://` URLs
//! cannot be changed to `http://`, popgate answers `CONNECT host:port` for a host some route
//! names, terminates the app's TLS with a leaf for that host signed by the listener's local CA,
//! and serves the requests inside exactly as plain ones (the same accept loop, deadlines, guard,
//! route, caller rules, token and re-origination over mTLS).
//!
//! Never a blind tunnel: a host no route names (or a port other than 443 that no route names) is
//! refused with 403 before anything else happens, and so is a caller that no route of that host
//! admits. The caller rules of each inner request's own route still apply as usual.

mod connect_head;
mod leaves;
mod prefixed;
mod tunnel;

use std::sync::Arc;

use crate::certs::intercept_ca::InterceptCa;

pub(crate) use tunnel::{Opened, open};

/// One listener's interception: its CA and the leaves minted with it.
#[derive(Debug)]
pub struct Interceptor {
    ca: Arc<InterceptCa>,
    leaves: leaves::LeafCache,
}

impl Interceptor {
    /// Interception signing leaves with `ca`.
    pub fn new(ca: Arc<InterceptCa>) -> Self {
        crate::metrics::intercept::init();
        Self {
            ca,
            leaves: leaves::LeafCache::default(),
        }
    }
}
