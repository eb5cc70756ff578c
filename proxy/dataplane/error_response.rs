//! The JSON answers popgate gives when it cannot forward a request.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// What a 503 says about a route's missing token; every field is optional (present when known).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NoTokenDetail<'a> {
    /// The identity the route's token is for.
    pub identity: Option<&'a str>,
    /// Why there is no token (the engine's last error, or what the route is waiting for).
    pub cause: Option<&'a str>,
    /// The identity whose acquisition failed, when it is not `identity` (a FIC leg 1).
    pub failed_identity: Option<&'a str>,
    /// The AADSTS code the token endpoint answered with.
    pub aadsts: Option<u32>,
    /// The token endpoint's correlation id.
    pub correlation_id: Option<&'a str>,
    /// Seconds until the engine tries again.
    pub retry_after: Option<u64>,
}

impl NoTokenDetail<'_> {
    fn fill(&self, body: &mut serde_json::Map<String, serde_json::Value>) {
        use serde_json::Value;
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                body.insert(key.to_string(), v);
            }
        };
        put("identity", self.identity.map(Value::from));
        put("failed_identity", self.failed_identity.map(Value::from));
        put("cause", self.cause.map(Value::from));
        put("aadsts", self.aadsts.map(Value::from));
        put("correlation_id", self.correlation_id.map(Value::from));
        put("retry_after", self.retry_after.map(Value::from));
    }
}

/// Why popgate answered itself instead of forwarding.
#[derive(Debug)]
pub(crate) enum Refusal<'a> {
    /// 403: no route matches; the request never leaves.
    NoRoute { host: Option<&'a str> },
    /// 403: the route's `allow` rules admit no one like this caller; nothing is forwarded.
    NotAllowed { route: &'a str },
    /// 405: CONNECT tunnels are not offered.
    Connect,
    /// 400: the request cannot be forwarded as given.
    BadRequest { reason: &'a str },
    /// 408: an HTTP/2 request body made no progress for `limits.request_body_timeout`; the
    /// upstream exchange was aborted.
    BodyStalled,
    /// 503: the route has no usable token.
    NoToken {
        route: &'a str,
        detail: NoTokenDetail<'a>,
    },
    /// 503: the route's token has expired and no fresher one was published.
    TokenExpired {
        route: &'a str,
        detail: NoTokenDetail<'a>,
    },
    /// 502: connecting or the TLS handshake failed, or the upstream broke the exchange.
    Unreachable { route: &'a str, cause: &'a str },
    /// 504: the upstream did not answer in time.
    Timeout { route: &'a str, cause: &'a str },
    /// 503 + `Retry-After`: every upstream connection of the route's host was busy (the waiting
    /// line was full, or the caller's wait for one expired); nothing was sent.
    UpstreamBusy {
        route: &'a str,
        cause: &'a str,
        retry_after: u64,
    },
}

impl Refusal<'_> {
    /// The status code for this refusal.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::NoRoute { .. } | Refusal::NotAllowed { .. } => StatusCode::FORBIDDEN,
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Refusal::BodyStalled => StatusCode::REQUEST_TIMEOUT,
            Refusal::NoToken { .. }
            | Refusal::TokenExpired { .. }
            | Refusal::UpstreamBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            Refusal::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Refusal::NoRoute { host } => json!({ "error": "no_route", "host": host }),
            Refusal::NotAllowed { route } => json!({
                "error": "caller_not_allowed",
                "route": route,
                "message": "this caller is not in the route's allow list",
            }),
            Refusal::Connect => json!({
                "error": "connect_not_supported",
                "message": "popgate does not tunnel CONNECT here: send plain http:// URLs through \
                            popgate and it forwards them over mTLS, or give the listener \
                            `intercept:` (CONNECT must open its connection)",
            }),
            Refusal::BadRequest { reason } => json!({ "error": "bad_request", "message": reason }),
            Refusal::BodyStalled => json!({
                "error": "request_body_timeout",
                "message": "the request body made no progress for limits.request_body_timeout; the upstream exchange was aborted",
            }),
            Refusal::NoToken { route, detail } => {
                let mut body = serde_json::Map::new();
                body.insert("error".into(), "no_token".into());
                body.insert("route".into(), (*route).into());
                detail.fill(&mut body);
                serde_json::Value::Object(body)
            }
            Refusal::TokenExpired { route, detail } => {
                let mut body = serde_json::Map::new();
                body.insert("error".into(), "no_token".into());
                body.insert("route".into(), (*route).into());
                body.insert(
                    "reason".into(),
                    "the route's token has expired and no fresh one is available".into(),
                );
                detail.fill(&mut body);
                serde_json::Value::Object(body)
            }
            Refusal::Unreachable { route, cause } => {
                json!({ "error": "upstream_unreachable", "route": route, "cause": cause })
            }
            Refusal::Timeout { route, cause } => {
                json!({ "error": "upstream_timeout", "route": route, "cause": cause })
            }
            Refusal::UpstreamBusy {
                route,
                cause,
                retry_after,
            } => json!({
                "error": "upstream_busy",
                "route": route,
                "cause": cause,
                "retry_after": retry_after,
            }),
        }
    }

    /// The complete response.
    pub(crate) fn response(&self) -> Response<Full<Bytes>> {
        let body = Bytes::from(self.body().to_string());
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::VIA, HeaderValue::from_static("1.1 popgate"));
        if let Refusal::NoToken { detail, .. } | Refusal::TokenExpired { detail, .. } = self
            && let Some(secs) = detail.retry_after
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Refusal::UpstreamBusy { retry_after, .. } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if matches!(self, Refusal::Connect) {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn json(r: Refusal<'_>) -> (StatusCode, serde_json::Value) {
        let resp = r.response();
        assert_eq!(resp.headers()["content-type"], "application/json");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn no_token_names_route_identity_and_the_upstream_error() {
        let refusal = Refusal::NoToken {
            route: "graph",
            detail: NoTokenDetail {
                identity: Some("app"),
                cause: Some("token endpoint refused: invalid_client AADSTS7000218"),
                failed_identity: Some("mi"),
                aadsts: Some(7_000_218),
                correlation_id: Some("c0ffee"),
                retry_after: Some(4),
            },
        };
        let resp = refusal.response();
        assert_eq!(resp.headers()["retry-after"], "4");
        let (s, b) = json(refusal).await;
        assert_eq!(s, 503);
        assert_eq!(b["error"], "no_token");
        assert_eq!(b["route"], "graph");
        assert_eq!(b["identity"], "app");
        assert_eq!(b["failed_identity"], "mi");
        assert!(b["cause"].as_str().unwrap().contains("AADSTS7000218"));
        assert_eq!(b["aadsts"], 7_000_218);
        assert_eq!(b["correlation_id"], "c0ffee");
        assert_eq!(b["retry_after"], 4);
    }

    #[tokio::test]
    async fn bodies_name_what_went_wrong() {
        let (s, b) = json(Refusal::NoRoute {
            host: Some("evil.example"),
        })
        .await;
        assert_eq!(s, 403);
        assert_eq!(b["error"], "no_route");
        assert_eq!(b["host"], "evil.example");

        let (s, b) = json(Refusal::NoRoute { host: None }).await;
        assert_eq!(s, 403);
        assert!(b["host"].is_null());

        let (s, b) = json(Refusal::NotAllowed { route: "graph" }).await;
        assert_eq!(s, 403);
        assert_eq!(b["error"], "caller_not_allowed");
        assert_eq!(b["route"], "graph");

        let (s, b) = json(Refusal::Connect).await;
        assert_eq!(s, 405);
        assert!(b["message"].as_str().unwrap().contains("http://"));

        let (s, b) = json(Refusal::NoToken {
            route: "graph",
            detail: NoTokenDetail::default(),
        })
        .await;
        assert_eq!((s.as_u16(), b["route"].as_str()), (503, Some("graph")));
        // Unknown fields are left out rather than sent as null.
        assert_eq!(b.as_object().unwrap().len(), 2, "{b}");

        let (s, b) = json(Refusal::TokenExpired {
            route: "graph",
            detail: NoTokenDetail {
                identity: Some("app"),
                ..NoTokenDetail::default()
            },
        })
        .await;
        assert_eq!((s.as_u16(), b["error"].as_str()), (503, Some("no_token")));
        assert!(b["reason"].as_str().unwrap().contains("expired"));
        assert_eq!(b["identity"], "app");

        let (s, b) = json(Refusal::Unreachable {
            route: "graph",
            cause: "refused \"x\"",
        })
        .await;
        assert_eq!(s, 502);
        assert_eq!(b["cause"], "refused \"x\"");

        let (s, b) = json(Refusal::Timeout {
            route: "graph",
            cause: "slow",
        })
        .await;
        assert_eq!(
            (s.as_u16(), b["error"].as_str()),
            (504, Some("upstream_timeout"))
        );

        let busy = Refusal::UpstreamBusy {
            route: "graph",
            cause: "all 2 upstream connections are busy",
            retry_after: 1,
        };
        assert_eq!(busy.response().headers()["retry-after"], "1");
        let (s, b) = json(busy).await;
        assert_eq!(
            (s.as_u16(), b["error"].as_str(), b["retry_after"].as_u64()),
            (503, Some("upstream_busy"), Some(1))
        );
        assert!(b["cause"].as_str().unwrap().contains("busy"), "{b}");

        let (s, b) = json(Refusal::BadRequest { reason: "no host" }).await;
        assert_eq!((s.as_u16(), b["message"].as_str()), (400, Some("no host")));
    }
}
