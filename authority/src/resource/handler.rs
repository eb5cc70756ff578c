//! One request to the resource: pick the audience by host, apply faults, authorize, read the body
//! as a stream, answer the echo (or a generated body of the requested size).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::authorize::{authorize, www_authenticate};
use super::body::{BodyError, GeneratedBody, digest_body};
use super::echo::{ascii_json, echo};
use super::{Audience, ResourceCtx};
use crate::faults::{Endpoint, Fault};
use crate::observe::RequestRecord;

/// The response body: a small JSON document or a generated stream.
pub type ResourceBody = Either<Full<Bytes>, GeneratedBody>;

/// `?delay_ms` above this is refused: tests need short stalls, not hung connections.
const MAX_DELAY_MS: u64 = 60_000;
/// `?pace_ms` above this is refused: a pause between chunks, not a hung stream.
const MAX_PACE_MS: u64 = 10_000;
/// `?size` above this is refused: 64 GiB is far beyond any test or bench yet still bounded.
const MAX_RESPONSE_SIZE: u64 = 64 << 30;

/// Returned by the service to make hyper drop the connection (h1) or reset the stream (h2).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
pub struct DroppedByFault;

/// What the client asked of the response (`?size`, `x-response-size`, `?status`, `?delay_ms`,
/// `?chunked`, `?pace_ms`).
#[derive(Debug, Default)]
struct Shape {
    size: Option<u64>,
    status: Option<StatusCode>,
    delay: Option<Duration>,
    /// `?chunked=1`: a generated body without a declared length (sent chunked).
    chunked: bool,
    /// `?pace_ms`: a pause before each generated chunk after the first.
    pace: Option<Duration>,
}

fn parse_shape(parts: &http::request::Parts) -> Result<Shape, String> {
    let mut shape = Shape::default();
    let number = |key: &str, value: &str, max: u64| -> Result<u64, String> {
        let n: u64 = value
            .parse()
            .map_err(|_| format!("'{key}' must be a non-negative integer; got '{value}'"))?;
        if n > max {
            return Err(format!("'{key}' must be at most {max}; got {n}"));
        }
        Ok(n)
    };
    if let Some(v) = parts.headers.get("x-response-size") {
        let v = v
            .to_str()
            .map_err(|_| "'x-response-size' is not ASCII".to_string())?;
        shape.size = Some(number("x-response-size", v, MAX_RESPONSE_SIZE)?);
    }
    let query = parts.uri.query().unwrap_or("");
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "size" => shape.size = Some(number("size", &value, MAX_RESPONSE_SIZE)?),
            "delay_ms" => {
                shape.delay = Some(Duration::from_millis(number(
                    "delay_ms",
                    &value,
                    MAX_DELAY_MS,
                )?))
            }
            "chunked" => shape.chunked = number("chunked", &value, 1)? == 1,
            "pace_ms" => {
                shape.pace = Some(Duration::from_millis(number(
                    "pace_ms",
                    &value,
                    MAX_PACE_MS,
                )?))
            }
            "status" => {
                let code = number("status", &value, 599)?;
                let status = u16::try_from(code)
                    .ok()
                    .filter(|c| *c >= 200)
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| format!("'status' must be 200..=599; got {code}"))?;
                shape.status = Some(status);
            }
            _ => {}
        }
    }
    Ok(shape)
}

/// The host the request names: `:authority` (h2, absolute-form) or `Host`, without the port.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    if let Some(host) = req.uri().host() {
        return Some(host.to_ascii_lowercase());
    }
    let host = req.headers().get(http::header::HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = host.parse().ok()?;
    Some(authority.host().to_ascii_lowercase())
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ResourceBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

struct Outcome<'a> {
    status: u16,
    appid: Option<String>,
    outcome: &'a str,
}

fn record(ctx: &ResourceCtx, presented_x5t: Option<&str>, o: Outcome<'_>) {
    tracing::info!(
        status = o.status,
        appid = o.appid.as_deref().unwrap_or(""),
        outcome = o.outcome,
        presented_x5t = presented_x5t.unwrap_or(""),
        "resource request"
    );
    ctx.observations.record(RequestRecord {
        endpoint: Endpoint::Resource,
        status: o.status,
        client_id: o.appid,
        outcome: o.outcome.to_string(),
        client_cert_x5t: presented_x5t.map(str::to_string),
        host: None,
        request: None,
    });
}

fn refused(
    ctx: &ResourceCtx,
    presented_x5t: Option<&str>,
    status: StatusCode,
    error: &str,
    description: &str,
) -> Response<ResourceBody> {
    record(
        ctx,
        presented_x5t,
        Outcome {
            status: status.as_u16(),
            appid: None,
            outcome: error,
        },
    );
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// Serves one request on a connection whose client certificate has thumbprint `presented_x5t`.
pub async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ResourceCtx>,
    presented_x5t: Option<Arc<str>>,
) -> Result<Response<ResourceBody>, DroppedByFault> {
    let presented = presented_x5t.as_deref();
    let Some(host) = request_host(&req) else {
        return Ok(refused(
            &ctx,
            presented,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request names no host (Host header or :authority)",
        ));
    };
    let Some(audience): Option<Audience> = (ctx.audiences)(&host) else {
        return Ok(refused(
            &ctx,
            presented,
            StatusCode::NOT_FOUND,
            "unknown_resource",
            &format!("no resource is served at host '{host}'"),
        ));
    };

    let latency = ctx.faults.latency(Endpoint::Resource);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match ctx.faults.next(Endpoint::Resource) {
        None | Some(Fault::AttestationRequired) => {}
        Some(Fault::Drop) => {
            record(
                &ctx,
                presented,
                Outcome {
                    status: 0,
                    appid: None,
                    outcome: "dropped",
                },
            );
            return Err(DroppedByFault);
        }
        Some(Fault::Delay { millis }) => tokio::time::sleep(Duration::from_millis(millis)).await,
        Some(Fault::Status {
            code,
            retry_after,
            body,
        }) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let text = body.unwrap_or_else(|| {
                json!({"error": "injected_fault", "error_description": format!("HTTP {code}")})
                    .to_string()
            });
            record(
                &ctx,
                presented,
                Outcome {
                    status: status.as_u16(),
                    appid: None,
                    outcome: "injected_status",
                },
            );
            let mut response = Response::new(Either::Left(Full::new(Bytes::from(text))));
            *response.status_mut() = status;
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return Ok(response);
        }
    }

    let authorized = match authorize(
        req.headers().get(http::header::AUTHORIZATION),
        &audience,
        &ctx.keys,
        presented,
    ) {
        Ok(a) => a,
        Err(refusal) => {
            record(
                &ctx,
                presented,
                Outcome {
                    status: 401,
                    appid: None,
                    outcome: "invalid_token",
                },
            );
            let mut response = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "invalid_token", "error_description": refusal.0 }),
            );
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                www_authenticate(Some(&audience), &refusal),
            );
            return Ok(response);
        }
    };
    let appid = authorized.claims.appid.clone();

    let (parts, body) = req.into_parts();
    let shape = match parse_shape(&parts) {
        Ok(s) => s,
        Err(e) => {
            return Ok(refused(
                &ctx,
                presented,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &e,
            ));
        }
    };
    if let Some(delay) = shape.delay {
        tokio::time::sleep(delay).await;
    }
    let digested = match digest_body(body).await {
        Ok(d) => d,
        Err(e) => {
            let status = match e {
                BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Read(_) => StatusCode::BAD_REQUEST,
            };
            return Ok(refused(
                &ctx,
                presented,
                status,
                "invalid_request",
                &e.to_string(),
            ));
        }
    };
    let summary = echo(
        &parts,
        &audience.audience,
        &authorized,
        presented,
        &digested,
    );
    let status = shape.status.unwrap_or(StatusCode::OK);
    record(
        &ctx,
        presented,
        Outcome {
            status: status.as_u16(),
            appid: Some(appid),
            outcome: authorized.scheme.as_str(),
        },
    );
    let response = match shape.size {
        None => json_response(status, &summary),
        Some(size) => {
            let mut body = GeneratedBody::new(size);
            if shape.chunked {
                body = body.undeclared();
            }
            if let Some(pause) = shape.pace {
                body = body.paced(pause);
            }
            let mut response = Response::new(Either::Right(body));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(value) = HeaderValue::from_str(&ascii_json(&summary)) {
                headers.insert("x-echo", value);
            }
            response
        }
    };
    Ok(response)
}
