//! Entra ID's token endpoint: `POST /{tenant}/oauth2/v2.0/token` on `login.*` and
//! `[region.]mtlsauth.*`, plus the JWKS and OpenID discovery documents. Routing, faults and
//! observation live here; the rules live in the submodules.

pub mod assertion;
pub mod errors;
pub mod form;
pub mod grant;
pub mod host;
pub mod issue;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;

use crate::directory::Directory;
use crate::faults::{Endpoint, Fault, Faults};
use crate::observe::{Observations, RequestRecord};
use crate::pki::Pki;
use crate::settings::Settings;
use crate::signing::SigningKeys;
use crate::tls_server::ConnInfo;
use assertion::ReplayCache;
use errors::EstsError;
use form::TokenForm;

/// Token requests are a few hundred bytes; a client assertion with an `x5c` chain a few KB.
/// 64 KiB bounds memory per request with room to spare.
pub const MAX_TOKEN_REQUEST_BODY: usize = 64 * 1024;

/// Everything the token endpoint reads.
pub struct TokenEndpoint {
    pub directory: Arc<Directory>,
    pub pki: Arc<Pki>,
    pub keys: Arc<SigningKeys>,
    pub settings: Arc<Settings>,
    pub faults: Arc<Faults>,
    pub observations: Arc<Observations>,
    pub replay: ReplayCache,
}

impl std::fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEndpoint").finish_non_exhaustive()
    }
}

/// The connection is to be closed without an answer (a `Drop` fault).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
pub struct DroppedByFault;

type HttpResponse = Response<Full<Bytes>>;

/// The routes the token listener serves.
enum Route {
    Token(String),
    Keys,
    OpenIdConfiguration(String),
    NotFound,
}

fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] if !tenant.is_empty() => {
            Route::Token((*tenant).to_string())
        }
        [tenant, "discovery", "v2.0", "keys"] if !tenant.is_empty() => Route::Keys,
        [tenant, "v2.0", ".well-known", "openid-configuration"] if !tenant.is_empty() => {
            Route::OpenIdConfiguration((*tenant).to_string())
        }
        _ => Route::NotFound,
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    response
}

/// The host the request addressed: h2 `:authority`, else the `Host` header.
fn http_host<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

impl TokenEndpoint {
    /// Answers one request on the token listener.
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<ConnInfo>,
        req: Request<Incoming>,
    ) -> Result<HttpResponse, DroppedByFault> {
        match route(req.uri().path()) {
            Route::Token(tenant) => self.token(conn, tenant, req).await,
            Route::Keys if req.method() == Method::GET => {
                Ok(json_response(StatusCode::OK, &self.keys.jwks()))
            }
            Route::OpenIdConfiguration(tenant) if req.method() == Method::GET => {
                let host = http_host(&req)
                    .map(|h| host::without_port(&h).to_ascii_lowercase())
                    .unwrap_or_else(|| "login.microsoftonline.com".into());
                Ok(json_response(
                    StatusCode::OK,
                    &openid_configuration(&host, &tenant),
                ))
            }
            Route::Keys | Route::OpenIdConfiguration(_) => Ok(json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({"error": "method_not_allowed"}),
            )),
            Route::NotFound => Ok(json_response(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not_found", "path": req.uri().path()}),
            )),
        }
    }

    async fn token(
        &self,
        conn: Arc<ConnInfo>,
        tenant: String,
        req: Request<Incoming>,
    ) -> Result<HttpResponse, DroppedByFault> {
        let latency = self.faults.latency(Endpoint::Token);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let correlation_id = req
            .headers()
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| uuid::Uuid::try_parse(v).is_ok())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let echo_request_id = req
            .headers()
            .get("return-client-request-id")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let trace_id = uuid::Uuid::new_v4().to_string();
        let stamp = |mut response: HttpResponse| {
            if let Ok(v) = HeaderValue::from_str(&trace_id) {
                response.headers_mut().insert("x-ms-request-id", v);
            }
            if echo_request_id && let Ok(v) = HeaderValue::from_str(&correlation_id) {
                response.headers_mut().insert("client-request-id", v);
            }
            response
        };
        let mut record = RequestRecord {
            endpoint: Endpoint::Token,
            status: 0,
            client_id: None,
            outcome: String::new(),
            client_cert_x5t: conn.peer_x5t.clone(),
            host: conn.sni.clone(),
            request: None,
        };

        match self.faults.next(Endpoint::Token) {
            Some(Fault::Drop) => {
                record.outcome = "fault_drop".into();
                self.observations.record(record);
                tracing::info!(
                    endpoint = "token",
                    "dropping the connection (injected fault)"
                );
                return Err(DroppedByFault);
            }
            Some(Fault::Status {
                code,
                retry_after,
                body,
            }) => {
                let response = fault_response(code, retry_after, body, &trace_id, &correlation_id);
                record.status = response.status().as_u16();
                record.outcome = "fault_status".into();
                self.observations.record(record);
                return Ok(stamp(response));
            }
            Some(Fault::Delay { millis }) => {
                tokio::time::sleep(Duration::from_millis(millis)).await;
            }
            // An IMDS-only fault queued for the token endpoint has no meaning here: ignore it.
            Some(Fault::AttestationRequired) | None => {}
        }

        let outcome = self.decide(&conn, &tenant, req, &mut record).await;
        let response = match outcome {
            Ok((body, token_type)) => {
                record.status = 200;
                record.outcome = token_type;
                json_response(StatusCode::OK, &body)
            }
            Err(error) => {
                record.status = error.status.as_u16();
                record.outcome = format!("{}:{}", error.error, error.code);
                tracing::info!(
                    endpoint = "token",
                    status = record.status,
                    error = error.error,
                    code = error.code,
                    client_id = record.client_id.as_deref().unwrap_or(""),
                    correlation_id = %correlation_id,
                    "token request refused"
                );
                json_response(
                    error.status,
                    &error.body(&trace_id, &correlation_id, crate::tokens::unix_now()),
                )
            }
        };
        self.observations.record(record);
        Ok(stamp(response))
    }

    /// Everything after faults: method, host, form, decision, minting.
    async fn decide(
        &self,
        conn: &ConnInfo,
        tenant: &str,
        req: Request<Incoming>,
        record: &mut RequestRecord,
    ) -> Result<(serde_json::Value, String), EstsError> {
        if req.method() != Method::POST {
            return Err(EstsError::method_not_allowed(req.method().as_str()));
        }
        let addressed = host::addressed_host(conn.sni.as_deref(), http_host(&req).as_deref())?;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(req.into_body(), MAX_TOKEN_REQUEST_BODY)
            .collect()
            .await
            .map_err(|e| {
                EstsError::bad_request(format!(
                    "The request body could not be read (at most {MAX_TOKEN_REQUEST_BODY} bytes are accepted): {e}"
                ))
            })?
            .to_bytes();
        let form = TokenForm::parse(content_type.as_deref(), &body)?;
        record.client_id = form.get("client_id").map(str::to_ascii_lowercase);
        let decided = grant::decide(
            &grant::Context {
                directory: &self.directory,
                pki: &self.pki,
                keys: &self.keys,
                replay: &self.replay,
                now: crate::tokens::unix_now(),
            },
            &grant::Request {
                tenant,
                host: &addressed,
                form: &form,
                peer_cert: conn.peer_cert.as_ref().map(|c| c.as_ref()),
            },
        )?;
        let body =
            issue::response_body(&self.keys, &self.settings.tokens(), &decided).map_err(|e| {
                tracing::error!(error = %e, "cannot sign a token");
                EstsError::bad_request("The token could not be signed.")
            })?;
        let token_type = match decided.kind {
            grant::TokenKind::MtlsPop => "mtls_pop",
            grant::TokenKind::Bearer => "bearer",
        };
        // Debug, not info: a load test issues thousands of these a second.
        tracing::debug!(
            endpoint = "token",
            host = %addressed.name,
            client_id = %decided.subject.client_id,
            audience = %decided.audience,
            token_type,
            "token issued"
        );
        Ok((body, token_type.to_string()))
    }
}

/// The answer of a `Status` fault: the given body, else an ESTS-shaped one (the throttling
/// vector's shape for 429, a transient error otherwise).
fn fault_response(
    code: u16,
    retry_after: Option<u64>,
    body: Option<String>,
    trace_id: &str,
    correlation_id: &str,
) -> HttpResponse {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let now = crate::tokens::unix_now();
    let mut response = match body {
        Some(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r
        }
        None if status == StatusCode::TOO_MANY_REQUESTS => {
            let timestamp = errors::ests_timestamp(now);
            json_response(
                status,
                &serde_json::json!({
                    "error": "Server overload",
                    "error_description": "429: Too many requests error",
                    "error_codes": [90010],
                    "timestamp": timestamp,
                    "trace_id": trace_id,
                    "correlation_id": correlation_id,
                }),
            )
        }
        None => {
            let error = EstsError {
                status,
                error: "temporarily_unavailable",
                code: 90033,
                description: "A transient error has occurred. Please try again.".into(),
            };
            json_response(status, &error.body(trace_id, correlation_id, now))
        }
    };
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The OpenID Connect discovery document for `tenant` as served by `host`.
fn openid_configuration(host: &str, tenant: &str) -> serde_json::Value {
    let base = format!("https://{host}/{tenant}");
    serde_json::json!({
        "issuer": crate::tokens::issuer_for(tenant),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "tls_client_auth"],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256"],
        "tls_client_certificate_bound_access_tokens": true,
        "mtls_endpoint_aliases": {
            "token_endpoint": format!("https://mtlsauth.microsoft.com/{tenant}/oauth2/v2.0/token"),
        },
        "tenant_region_scope": "WW",
        "cloud_instance_name": "microsoftonline.com",
    })
}
