//! `/log-level` on the admin listener: `GET` answers the log filter in force, `PUT` replaces it
//! with the body (an `EnvFilter` directive list such as `debug` or
//! `info,popgate::dataplane=debug`). Anyone who can reach the admin listener can change it: keep
//! that listener on loopback or behind a NetworkPolicy.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use super::{AdminResponse, plain, respond};
use crate::logging::{self, MAX_FILTER_LEN, ReloadError};

/// The path.
pub(crate) const PATH: &str = "/log-level";

/// How long a `PUT` body may take to arrive: it is one short line.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Answers one `/log-level` request.
pub(crate) async fn answer(req: Request<Incoming>) -> AdminResponse {
    match *req.method() {
        Method::GET | Method::HEAD => match logging::current_filter() {
            Some(filter) => text(StatusCode::OK, format!("{filter}\n")),
            None => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the log filter is not reloadable in this process\n",
            ),
        },
        Method::PUT => put(req).await,
        _ => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
            r
        }
    }
}

async fn put(req: Request<Incoming>) -> AdminResponse {
    let body = Limited::new(req.into_body(), MAX_FILTER_LEN + 1).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the filter may be at most {MAX_FILTER_LEN} bytes\n"),
            );
        }
        Ok(Err(_)) => return plain(StatusCode::BAD_REQUEST, "the body could not be read\n"),
        Err(_) => {
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time\n",
            );
        }
    };
    let Ok(filter) = std::str::from_utf8(&body) else {
        return plain(StatusCode::BAD_REQUEST, "the filter must be UTF-8 text\n");
    };
    match logging::set_filter(filter) {
        Ok(now) => text(StatusCode::OK, format!("{now}\n")),
        Err(e @ ReloadError::BadFilter(_)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e @ ReloadError::NotReloadable) => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
    }
}

fn text(status: StatusCode, body: String) -> AdminResponse {
    respond(status, "text/plain; charset=utf-8", Bytes::from(body))
}
