//! Request limits checked before a caller's request is forwarded: URI length, header count and
//! size, declared body size, and ambiguous framing. Each refusal is a JSON answer sent with
//! `Connection: close`, so a caller that tried to smuggle or flood cannot keep the connection.
//!
//! hyper already refuses some of these on HTTP/1 before a request exists (see `listener.rs` for
//! how it is configured); the checks here also cover HTTP/2, where hyper has no header-count or
//! URI limit, and the cases hyper accepts (a request with both `Content-Length` and
//! `Transfer-Encoding` is parsed as chunked; two equal `Content-Length` lines are merged).

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::config::limits::{DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, DEFAULT_MAX_URI_BYTES};

/// Limits applied to every caller request on a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most header lines (431 beyond).
    pub max_headers: usize,
    /// Most bytes in the request head (431 beyond).
    pub max_header_bytes: usize,
    /// Most bytes in the request target (414 beyond).
    pub max_uri_bytes: usize,
    /// Most body bytes (413 when `Content-Length` says more; a chunked body is cut off when it
    /// grows past it). `None`: no global limit.
    pub max_body_bytes: Option<u64>,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_body_bytes: None,
        }
    }
}

/// Why a request was refused before forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitRefusal {
    /// 414: the request target is longer than allowed.
    UriTooLong {
        /// The request target's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// 431: more header lines than allowed.
    TooManyHeaders {
        /// The number of header lines.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// 431: the header block is larger than allowed.
    HeadersTooLarge {
        /// The header block's size in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// 431: the HTTP/1 request head, with any blank lines sent before it, is larger than the
    /// framing guard follows.
    HeadTooLarge {
        /// The limit.
        max: usize,
    },
    /// 413: the declared or received body is larger than allowed.
    BodyTooLarge {
        /// The limit.
        max: u64,
    },
    /// 400: the request's framing is ambiguous (a smuggling attempt or a broken client).
    AmbiguousFraming {
        /// Why it was refused.
        reason: &'static str,
    },
}

impl LimitRefusal {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            LimitRefusal::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            LimitRefusal::TooManyHeaders { .. }
            | LimitRefusal::HeadersTooLarge { .. }
            | LimitRefusal::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            LimitRefusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            LimitRefusal::AmbiguousFraming { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body: a stable `error` code and a message naming the limit.
    pub fn body(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            LimitRefusal::UriTooLong { len, max } => json!({
                "error": "uri_too_long",
                "message": format!("the request target is {len} bytes; the limit is {max}"),
            }),
            LimitRefusal::TooManyHeaders { count, max } => json!({
                "error": "request_header_fields_too_large",
                "message": format!("the request has {count} header lines; the limit is {max}"),
            }),
            LimitRefusal::HeadersTooLarge { bytes, max } => json!({
                "error": "request_header_fields_too_large",
                "message": format!("the request headers are {bytes} bytes; the limit is {max}"),
            }),
            LimitRefusal::HeadTooLarge { max } => json!({
                "error": "request_header_fields_too_large",
                "message": format!("the request head is larger than the {max}-byte limit"),
            }),
            LimitRefusal::BodyTooLarge { max } => json!({
                "error": "payload_too_large",
                "message": format!("the request body is larger than the {max}-byte limit"),
            }),
            LimitRefusal::AmbiguousFraming { reason } => {
                json!({ "error": "bad_request", "message": reason })
            }
        }
    }

    /// The complete response, with `Connection: close` so the caller's connection ends after it
    /// (hyper honours the header on HTTP/1 and drops it on HTTP/2).
    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body().to_string())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::VIA, HeaderValue::from_static("1.1 popgate"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

impl fmt::Display for LimitRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.body()["message"].as_str() {
            Some(m) => f.write_str(m),
            None => write!(f, "{}", self.status()),
        }
    }
}

/// Checks a request's head against `limits` (no body is read). Call it before forwarding.
pub fn check_request<B>(request: &Request<B>, limits: &RequestLimits) -> Result<(), LimitRefusal> {
    let uri = request.uri();
    let uri_len = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(LimitRefusal::UriTooLong {
            len: uri_len,
            max: limits.max_uri_bytes,
        });
    }
    check_headers(request.headers(), limits)?;
    check_framing(request.headers())?;
    if let Some(max) = limits.max_body_bytes {
        check_declared_length(request.headers(), max)?;
    }
    Ok(())
}

/// Header count and size. The size counts `name: value\r\n`, as on the wire for HTTP/1.
fn check_headers(headers: &http::HeaderMap, limits: &RequestLimits) -> Result<(), LimitRefusal> {
    let count = headers.len();
    if count > limits.max_headers {
        return Err(LimitRefusal::TooManyHeaders {
            count,
            max: limits.max_headers,
        });
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(LimitRefusal::HeadersTooLarge {
            bytes,
            max: limits.max_header_bytes,
        });
    }
    Ok(())
}

/// `Content-Length` with `Transfer-Encoding`, or `Content-Length` more than once: RFC 9112 §6.1
/// and §6.3 let a server treat these as errors, and a proxy should, because the next hop may
/// frame the message differently. Likewise a second `Host` line (RFC 9112 §3.2 requires a 400):
/// a next hop may route on either one.
fn check_framing(headers: &http::HeaderMap) -> Result<(), LimitRefusal> {
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(LimitRefusal::AmbiguousFraming {
            reason: framing::DUPLICATE_HOST,
        });
    }
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 0 && headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(LimitRefusal::AmbiguousFraming {
            reason: framing::CL_AND_TE,
        });
    }
    let comma_list = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes().contains(&b','));
    if lengths > 1 || comma_list {
        return Err(LimitRefusal::AmbiguousFraming {
            reason: framing::DUPLICATE_CL,
        });
    }
    Ok(())
}

/// 413 when the declared `Content-Length` exceeds `max`. Exposed for per-route limits: the
/// forwarder calls it with the route's `max_body_bytes` once the route is known.
pub fn check_declared_length(headers: &http::HeaderMap, max: u64) -> Result<(), LimitRefusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max => Err(LimitRefusal::BodyTooLarge { max }),
        _ => Ok(()),
    }
}

/// The reasons framing checks give, shared with the HTTP/1 framing guard.
pub(crate) mod framing {
    /// Both framing headers at once.
    pub(crate) const CL_AND_TE: &str =
        "the request has both Content-Length and Transfer-Encoding; send only one";
    /// `Content-Length` repeated.
    pub(crate) const DUPLICATE_CL: &str = "the request has more than one Content-Length";
    /// `Host` repeated.
    pub(crate) const DUPLICATE_HOST: &str =
        "the request has more than one Host header (RFC 9112 section 3.2); send exactly one";
    /// A chunk-size line that is not hexadecimal.
    pub(crate) const BAD_CHUNK: &str = "the request body has an invalid chunk size line";
    /// A header line or framing header popgate cannot read, so it cannot tell where the body ends.
    pub(crate) const UNFOLLOWABLE: &str =
        "the request has a malformed header line, Content-Length or Transfer-Encoding";
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn req(build: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Request<()> {
        build(Request::builder()).body(()).unwrap()
    }

    #[test]
    fn each_limit_refuses_with_its_status() {
        let limits = RequestLimits {
            max_headers: 3,
            max_header_bytes: 100,
            max_uri_bytes: 30,
            max_body_bytes: Some(10),
        };
        let ok = req(|b| b.uri("/short").header("content-length", "10"));
        assert_eq!(check_request(&ok, &limits), Ok(()));

        let long = req(|b| b.uri(format!("http://h/{}", "a".repeat(30))));
        let e = check_request(&long, &limits).unwrap_err();
        assert_eq!(e.status(), 414);
        assert!(e.to_string().contains("limit is 30"), "{e}");

        let many = req(|b| {
            b.uri("/")
                .header("a", "1")
                .header("b", "1")
                .header("c", "1")
                .header("d", "1")
        });
        assert_eq!(check_request(&many, &limits).unwrap_err().status(), 431);

        let big = req(|b| b.uri("/").header("a", "x".repeat(100)));
        let e = check_request(&big, &limits).unwrap_err();
        assert!(matches!(e, LimitRefusal::HeadersTooLarge { .. }), "{e:?}");

        let body = req(|b| b.uri("/").header("content-length", "11"));
        assert_eq!(check_request(&body, &limits).unwrap_err().status(), 413);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let limits = RequestLimits::default();
        let clte = req(|b| {
            b.uri("/")
                .header("content-length", "3")
                .header("transfer-encoding", "chunked")
        });
        assert_eq!(
            check_request(&clte, &limits),
            Err(LimitRefusal::AmbiguousFraming {
                reason: framing::CL_AND_TE
            })
        );
        let dup = req(|b| {
            b.uri("/")
                .header("content-length", "3")
                .header("content-length", "3")
        });
        assert_eq!(check_request(&dup, &limits).unwrap_err().status(), 400);
        let list = req(|b| b.uri("/").header("content-length", "3, 3"));
        assert_eq!(check_request(&list, &limits).unwrap_err().status(), 400);
        let hosts = req(|b| b.uri("/").header("host", "a").header("host", "a"));
        assert_eq!(
            check_request(&hosts, &limits),
            Err(LimitRefusal::AmbiguousFraming {
                reason: framing::DUPLICATE_HOST
            })
        );
    }

    #[tokio::test]
    async fn refusal_is_json_and_closes() {
        let r = LimitRefusal::BodyTooLarge { max: 5 }.response();
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()["connection"], "close");
        assert_eq!(r.headers()["content-type"], "application/json");
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], "payload_too_large");
    }
}
