//! Opening one intercepted tunnel: the CONNECT head, the route and caller checks, the `200`, and
//! the TLS handshake with the host's leaf. The connection's [`Activity`] sees the same phases as
//! on a TLS listener, so the accept loop's watchdog bounds a tunnel that never starts TLS, or
//! stalls in it, by the TLS handshake deadline.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::Interceptor;
use super::connect_head::{self, Opening};
use super::prefixed::Prefixed;
use crate::access::Caller;
use crate::dataplane::activity::Activity;
use crate::dataplane::error_response::Refusal;
use crate::dataplane::listener::ConnectionSettings;
use crate::dataplane::request::DataplaneTable;
use crate::metrics;
use crate::route::host::request_key;

/// The port a CONNECT target is expected to name; any other must be named by a route.
const HTTPS_PORT: u16 = 443;

/// How the connection goes on.
pub(crate) enum Opened<I> {
    /// Not a CONNECT: serve it as a plain connection (the bytes read are put back).
    Plain(Prefixed<I>),
    /// An intercepted tunnel: serve the requests inside; each must name `host` (a route-table
    /// lookup key: lowercase, port 443 folded away).
    Tunnel {
        tls: Box<TlsStream<Prefixed<I>>>,
        host: Box<str>,
    },
    /// Answered (refused) or gone: nothing more to serve.
    Closed,
}

/// Reads the connection's opening and, for a CONNECT, decides and opens the tunnel.
pub(crate) async fn open<I>(
    mut io: I,
    caller: &Caller,
    table: &ArcSwap<DataplaneTable>,
    settings: &ConnectionSettings,
    interceptor: &Interceptor,
    activity: &Arc<Activity>,
) -> Opened<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = &settings.limits;
    let opening = connect_head::read(
        &mut io,
        limits.max_header_bytes,
        limits.max_headers,
        settings.header_read_timeout,
    );
    // From the head's first bytes until the tunnel's handshake, the CONNECT is a request in
    // flight: `read`'s own deadline bounds the head; the first-byte deadline holds until then.
    let (authority, rest) = match opening.await {
        Opening::Other(read) => return Opened::Plain(Prefixed::new(read, io)),
        Opening::Closed => return Opened::Closed,
        Opening::Refused {
            status,
            reason,
            label,
        } => {
            tracing::info!(status = status.as_u16(), reason, "CONNECT refused");
            metrics::intercept::refused(label);
            let body = Refusal::BadRequest { reason }.body();
            connect_head::refuse(&mut io, status, &body).await;
            return Opened::Closed;
        }
        Opening::Connect { authority, rest } => (authority, rest),
    };
    let in_flight = activity.request();
    let Some(host) = request_key(&authority, HTTPS_PORT).map(|k| Box::<str>::from(&*k)) else {
        return refuse(
            &mut io,
            &Refusal::NoRoute {
                host: Some(&authority),
            },
            "no_route",
        )
        .await;
    };
    if let Err((refusal_route, reason)) = admit(table, &authority, caller) {
        let refusal = match &refusal_route {
            Some(route) => Refusal::NotAllowed { route },
            None => Refusal::NoRoute {
                host: Some(&authority),
            },
        };
        tracing::info!(target = %authority, reason, "CONNECT refused");
        return refuse(&mut io, &refusal, reason).await;
    }
    let name = leaf_name(&host);
    let config = match interceptor.leaves.config_for(&interceptor.ca, name).await {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(target = %authority, error = %e, "CONNECT refused: no leaf certificate");
            metrics::intercept::refused("mint_failed");
            let body = serde_json::json!({ "error": "intercept_failed", "message": e.to_string() });
            connect_head::refuse(&mut io, StatusCode::INTERNAL_SERVER_ERROR, &body).await;
            return Opened::Closed;
        }
    };
    if connect_head::established(&mut io).await.is_err() {
        return Opened::Closed;
    }
    metrics::intercept::opened();
    tracing::debug!(target = %authority, "CONNECT tunnel opened");
    // The tunnel's TLS handshake is bounded like a TLS listener's, from now; the CONNECT ends.
    activity.tunnel_handshake(in_flight);
    // The watchdog may be asleep on an earlier phase's deadline: bound the handshake here too.
    let handshake = handshake(Prefixed::new(rest, io), &authority, name, config);
    match tokio::time::timeout(settings.tls_handshake_timeout, handshake).await {
        Ok(Some(tls)) => {
            activity.handshake_done();
            Opened::Tunnel {
                tls: Box::new(tls),
                host,
            }
        }
        Ok(None) => Opened::Closed,
        Err(_) => {
            tracing::debug!(target = %authority, "tunnel TLS handshake outlived its deadline; closed");
            metrics::connections::deadline("caller", "tls_handshake");
            Opened::Closed
        }
    }
}

/// The tunnel's TLS handshake with the leaf for `name`; `None` (counted) when it fails or the
/// ClientHello names another host.
async fn handshake<I>(
    io: Prefixed<I>,
    authority: &str,
    name: &str,
    config: Arc<rustls::ServerConfig>,
) -> Option<TlsStream<Prefixed<I>>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let start = match LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await {
        Ok(start) => start,
        Err(e) => {
            tracing::info!(target = %authority, error = %e, "tunnel TLS handshake failed");
            metrics::intercept::refused("handshake_failed");
            return None;
        }
    };
    if let Some(sni) = start.client_hello().server_name()
        && !sni.trim_end_matches('.').eq_ignore_ascii_case(name)
    {
        tracing::info!(target = %authority, sni, "tunnel TLS names another host than its CONNECT; closed");
        metrics::intercept::refused("sni_mismatch");
        return None;
    }
    match start.into_stream(config).await {
        Ok(tls) => Some(tls),
        Err(e) => {
            tracing::info!(target = %authority, error = %e, "tunnel TLS handshake failed");
            metrics::intercept::refused("handshake_failed");
            None
        }
    }
}

/// Whether a tunnel to `authority` may open for `caller`: some route must name the host (and
/// its port, unless 443), and one of those routes must admit the caller. `Err((route, reason))`:
/// the route whose rules refused (none: no route), and the metric label.
fn admit(
    table: &ArcSwap<DataplaneTable>,
    authority: &str,
    caller: &Caller,
) -> Result<(), (Option<Arc<str>>, &'static str)> {
    let table = table.load();
    let routes = table.host_routes(authority, HTTPS_PORT);
    let Some(first) = routes.first() else {
        return Err((None, "no_route"));
    };
    if routes.iter().any(|r| r.payload().policy().admits(caller)) {
        Ok(())
    } else {
        Err((Some(Arc::clone(first.name_arc())), "not_allowed"))
    }
}

/// Answers `refusal` (403) to the CONNECT, counts it under `label` and closes.
async fn refuse<I: AsyncWrite + Unpin>(
    io: &mut I,
    refusal: &Refusal<'_>,
    label: &'static str,
) -> Opened<I> {
    metrics::intercept::refused(label);
    connect_head::refuse(io, refusal.status(), &refusal.body()).await;
    Opened::Closed
}

/// The host name of a lookup key (`name`, `name:port`, `[v6]` or `[v6]:port`): what the leaf
/// is for.
fn leaf_name(key: &str) -> &str {
    if key.starts_with('[') {
        return key.find(']').map_or(key, |i| &key[..=i]);
    }
    key.split(':').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_leaf_name_drops_the_port() {
        assert_eq!(
            super::leaf_name("graph.microsoft.com"),
            "graph.microsoft.com"
        );
        assert_eq!(super::leaf_name("svc.example:8443"), "svc.example");
        assert_eq!(super::leaf_name("[::1]:8443"), "[::1]");
    }
}
