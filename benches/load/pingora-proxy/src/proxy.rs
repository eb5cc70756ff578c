//! The proxy logic: every request goes to one upstream over TLS, with the Authorization header
//! replaced by the configured token and Host set to the SNI name. Everything per-request is
//! prebuilt once, so the hot path is a clone of a peer and two header inserts.

use async_trait::async_trait;
use http::{HeaderValue, Uri};
use pingora::Result;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};

pub struct BenchProxy {
    /// TLS on, SNI set, certificate and hostname verification on (pingora's defaults), ALPN
    /// `http/1.1`. The client certificate is connector-wide (see main), so this peer carries none:
    /// a per-peer certificate would make pingora rebuild its rustls config on every new connection.
    peer: HttpPeer,
    /// Secret: marked sensitive, never logged.
    authorization: HeaderValue,
    host: HeaderValue,
}

impl BenchProxy {
    pub fn new(peer: HttpPeer, authorization: HeaderValue, host: HeaderValue) -> Self {
        Self {
            peer,
            authorization,
            host,
        }
    }
}

#[async_trait]
impl ProxyHttp for BenchProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        // Same peer (same hash) every time, so pingora's pool hands back a kept-alive connection.
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        // insert_header replaces any value the caller sent.
        upstream_request.insert_header("Authorization", self.authorization.clone())?;
        upstream_request.insert_header("Host", self.host.clone())?;
        // A caller using us as HTTP_PROXY sends absolute-form (`GET http://host/p`); the origin
        // expects origin-form. The usual harness request is already origin-form and skips this.
        if upstream_request.uri.scheme().is_some() {
            let origin_form = upstream_request
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .parse::<Uri>()
                // Cannot fail: a path-and-query taken from a parsed Uri is a valid Uri; keep the
                // request as sent rather than panic all the same.
                .unwrap_or_else(|_| upstream_request.uri.clone());
            upstream_request.set_uri(origin_form);
        }
        Ok(())
    }
}
