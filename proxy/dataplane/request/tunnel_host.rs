//! Inside a CONNECT tunnel, every request must name the tunnel's host: the app asked for a
//! tunnel to one host, got a certificate for that host, and may not use the tunnel to reach
//! another route's host (whose own CONNECT might have been refused to this caller).

use http::{Request, header};

use super::Step;
use super::respond::refuse;
use crate::dataplane::error_response::Refusal;
use crate::route::host::request_key;

/// The port of the `https://` URL a tunnelled request was for.
const TUNNEL_DEFAULT_PORT: u16 = 443;

/// 400 unless the request's host (absolute-form authority or h2 `:authority`, else `Host`) is
/// `tunnel`'s, ports normalised; nothing to check outside a tunnel.
pub(super) fn check<B>(request: &Request<B>, tunnel: Option<&str>) -> Step<()> {
    let Some(tunnel) = tunnel else {
        return Ok(());
    };
    let host = match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok()),
    };
    let same = host
        .and_then(|h| request_key(h, TUNNEL_DEFAULT_PORT))
        .is_some_and(|key| *key == *tunnel);
    if same {
        return Ok(());
    }
    tracing::info!(
        tunnel,
        host = host.unwrap_or(""),
        "request names another host than its CONNECT tunnel; refused"
    );
    Err(refuse(&Refusal::BadRequest {
        reason: "the request's host differs from the host of its CONNECT tunnel",
    }))
}
