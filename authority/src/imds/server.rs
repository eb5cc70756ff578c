//! The IMDS listener: plain HTTP/1.1 on loopback, routing to v1, v2 and App Service handlers, with
//! fault injection and observation around every request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::backend::ImdsBackend;
use super::mi_sources::{self, ArcChallenges, ArcSettings};
use super::respond::{Answer, v2_error};
use super::{app_service, v1, v2};
use crate::faults::{Endpoint, Fault, Faults};
use crate::observe::{Observations, RequestRecord};

/// Real IMDS certificates live about 7 days (protocol.md §3).
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The `Server` header real IMDS sends (from the getplatformmetadata vector's recording).
pub const DEFAULT_SERVER_HEADER: &str = "IMDS/150.870.65.1854";
/// A slow-loris client must not pin a connection task forever; real clients send headers at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Back off briefly after a failed accept (e.g. out of file descriptors) instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// IMDS v1 token path.
pub const PATH_V1_TOKEN: &str = "/metadata/identity/oauth2/token";
/// IMDSv2 platform metadata path.
pub const PATH_PLATFORM_METADATA: &str = "/metadata/identity/getplatformmetadata";
/// IMDSv2 certificate issuance path.
pub const PATH_ISSUE_CREDENTIAL: &str = "/metadata/identity/issuecredential";
/// The App Service identity endpoint path (this authority's `IDENTITY_ENDPOINT`).
pub const PATH_APP_SERVICE: &str = "/msi/token";
/// The Azure Arc agent's endpoint path on this listener (the real agent listens on its own port
/// at IMDS v1's path).
pub const PATH_AZURE_ARC: &str = "/arc/metadata/identity/oauth2/token";
/// The Cloud Shell endpoint path (`MSI_ENDPOINT`).
pub const PATH_CLOUD_SHELL: &str = "/cloudshell/oauth2/token";
/// The Azure Machine Learning endpoint path (`MSI_ENDPOINT`).
pub const PATH_MACHINE_LEARNING: &str = "/ml/msi/token";
/// The Service Fabric endpoint path, on its own TLS listener.
pub const PATH_SERVICE_FABRIC: &str = "/metadata/identity/oauth2/token";
/// Largest request body the identity endpoints read (Cloud Shell's form).
const MAX_FORM_BODY: usize = 8192;

/// How this IMDS behaves.
#[derive(Clone)]
pub struct ImdsSettings {
    /// Lifetime of certificates `issuecredential` issues.
    pub cert_lifetime: Duration,
    /// `false`: the v2 paths answer 404, as an IMDS without v2 does.
    pub v2_enabled: bool,
    /// The v2 query key naming a UAMI by resource id (`mi_res_id` as MSAL.NET sends; the Python
    /// MSI v2 client sends `msi_res_id`; which one real IMDS takes is unproven).
    pub v2_uami_resource_id_key: String,
    /// The App Service `X-IDENTITY-HEADER` secret; `None` turns the `/msi/token` endpoint off.
    pub app_service_identity_header: Option<String>,
    /// The `Server` header on IMDS responses (popgate checks it contains `IMDS`).
    pub server_header: String,
    /// `attestationEndpoint` in getplatformmetadata (never called: attestation is simulated).
    pub attestation_endpoint: String,
    /// Azure Arc: `Some` turns the endpoint on, writing challenge files where it says.
    pub arc: Option<ArcSettings>,
    /// Cloud Shell: `true` turns the endpoint on.
    pub cloud_shell: bool,
    /// Azure ML's `MSI_SECRET`; `None` turns the endpoint off.
    pub machine_learning_secret: Option<String>,
    /// Service Fabric's `IDENTITY_HEADER`; `Some` starts its TLS listener.
    pub service_fabric_secret: Option<String>,
}

impl Default for ImdsSettings {
    fn default() -> Self {
        Self {
            cert_lifetime: DEFAULT_CERT_LIFETIME,
            v2_enabled: true,
            v2_uami_resource_id_key: "mi_res_id".into(),
            app_service_identity_header: None,
            server_header: DEFAULT_SERVER_HEADER.into(),
            attestation_endpoint: "https://attestation.authority.invalid".into(),
            arc: None,
            cloud_shell: false,
            machine_learning_secret: None,
            service_fabric_secret: None,
        }
    }
}

impl std::fmt::Debug for ImdsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImdsSettings")
            .field("cert_lifetime", &self.cert_lifetime)
            .field("v2_enabled", &self.v2_enabled)
            .field("v2_uami_resource_id_key", &self.v2_uami_resource_id_key)
            .field(
                "app_service_identity_header",
                &self
                    .app_service_identity_header
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .field("server_header", &self.server_header)
            .field("attestation_endpoint", &self.attestation_endpoint)
            .field("arc", &self.arc)
            .field("cloud_shell", &self.cloud_shell)
            .field(
                "machine_learning_secret",
                &self.machine_learning_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "service_fabric_secret",
                &self.service_fabric_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A running IMDS. Dropping it stops the listener and closes every open connection.
#[derive(Debug)]
pub struct ImdsHandle {
    addr: SocketAddr,
    _shutdown: watch::Sender<()>,
}

impl ImdsHandle {
    /// The address IMDS listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port` (or the listener's address).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct Ctx {
    backend: Arc<dyn ImdsBackend>,
    faults: Arc<Faults>,
    observations: Arc<Observations>,
    settings: ImdsSettings,
    arc_challenges: ArcChallenges,
    /// This is Service Fabric's TLS listener: it serves that endpoint only.
    service_fabric_listener: bool,
}

/// Serves IMDS on `listener` until the returned handle is dropped.
pub async fn spawn(
    listener: TcpListener,
    backend: Arc<dyn ImdsBackend>,
    faults: Arc<Faults>,
    observations: Arc<Observations>,
    settings: ImdsSettings,
) -> std::io::Result<ImdsHandle> {
    let addr = listener.local_addr()?;
    let (shutdown, stop) = watch::channel(());
    let ctx = Arc::new(Ctx {
        backend,
        faults,
        observations,
        settings,
        arc_challenges: ArcChallenges::default(),
        service_fabric_listener: false,
    });
    tokio::spawn(accept_loop(listener, ctx, stop));
    Ok(ImdsHandle {
        addr,
        _shutdown: shutdown,
    })
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, mut stop: watch::Receiver<()>) {
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "imds accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { handle(req, &ctx).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.changed() => {}
                result = conn => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "imds connection ended with an error");
                    }
                }
            }
        });
    }
}

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct DroppedByFault;

/// Serves Service Fabric's identity endpoint on `listener` over TLS (`tls`: the certificate
/// clients pin by `IDENTITY_SERVER_THUMBPRINT`) until the handle is dropped.
pub fn spawn_service_fabric(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    backend: Arc<dyn ImdsBackend>,
    faults: Arc<Faults>,
    observations: Arc<Observations>,
    settings: ImdsSettings,
) -> crate::tls_server::ServerHandle {
    let ctx = Arc::new(Ctx {
        backend,
        faults,
        observations,
        settings,
        arc_challenges: ArcChallenges::default(),
        service_fabric_listener: true,
    });
    crate::tls_server::spawn(listener, tls, "service_fabric", move |_conn, req| {
        let ctx = ctx.clone();
        async move { handle(req, &ctx).await }
    })
}

fn endpoint_for(path: &str, ctx: &Ctx) -> Option<Endpoint> {
    let settings = &ctx.settings;
    if ctx.service_fabric_listener {
        return (path == PATH_SERVICE_FABRIC && settings.service_fabric_secret.is_some())
            .then_some(Endpoint::ServiceFabric);
    }
    match path {
        PATH_AZURE_ARC if settings.arc.is_some() => Some(Endpoint::AzureArc),
        PATH_CLOUD_SHELL if settings.cloud_shell => Some(Endpoint::CloudShell),
        PATH_MACHINE_LEARNING if settings.machine_learning_secret.is_some() => {
            Some(Endpoint::MachineLearning)
        }
        PATH_V1_TOKEN => Some(Endpoint::ImdsV1Token),
        PATH_PLATFORM_METADATA => Some(Endpoint::ImdsPlatformMetadata),
        PATH_ISSUE_CREDENTIAL => Some(Endpoint::ImdsIssueCredential),
        PATH_APP_SERVICE if settings.app_service_identity_header.is_some() => {
            Some(Endpoint::AppService)
        }
        _ => None,
    }
}

async fn handle(
    req: Request<Incoming>,
    ctx: &Ctx,
) -> Result<Response<Full<Bytes>>, DroppedByFault> {
    let Some(endpoint) = endpoint_for(req.uri().path(), ctx) else {
        let answer = v2_error(StatusCode::NOT_FOUND, "not_found", "no such IMDS endpoint");
        return Ok(render(answer, None));
    };
    let is_imds = matches!(
        endpoint,
        Endpoint::ImdsV1Token | Endpoint::ImdsPlatformMetadata | Endpoint::ImdsIssueCredential
    );
    let server_header = is_imds.then_some(&ctx.settings.server_header);
    let shape = (!is_imds).then(|| mi_sources::shape(req.method(), req.uri(), req.headers()));
    let is_v2 = matches!(
        endpoint,
        Endpoint::ImdsPlatformMetadata | Endpoint::ImdsIssueCredential
    );
    if is_v2 && !ctx.settings.v2_enabled {
        let answer = v2_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "IMDSv2 credential endpoints are not available on this VM",
        );
        return Ok(finish(ctx, endpoint, answer, server_header, shape));
    }

    let latency = ctx.faults.latency(endpoint);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut attestation_required = false;
    match ctx.faults.next(endpoint) {
        None => {}
        Some(Fault::Drop) => {
            record(ctx, endpoint, 0, None, "dropped", shape);
            tracing::info!(?endpoint, "imds fault: dropping the connection");
            return Err(DroppedByFault);
        }
        Some(Fault::Delay { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
        Some(Fault::Status {
            code,
            retry_after,
            body,
        }) => {
            let answer = status_fault(code, retry_after, body.as_deref());
            return Ok(finish_raw(ctx, endpoint, answer, server_header, shape));
        }
        Some(Fault::AttestationRequired) => {
            // Only issuecredential knows attestation; elsewhere the fault has no meaning.
            attestation_required = endpoint == Endpoint::ImdsIssueCredential;
        }
    }

    let backend = ctx.backend.as_ref();
    let answer = match endpoint {
        Endpoint::ImdsV1Token => v1::token(&req.into_parts().0, backend),
        Endpoint::ImdsPlatformMetadata => {
            v2::platform_metadata(&req.into_parts().0, backend, &ctx.settings)
        }
        Endpoint::ImdsIssueCredential => {
            v2::issue_credential(req, backend, &ctx.settings, attestation_required).await
        }
        Endpoint::AppService => match ctx.settings.app_service_identity_header.as_deref() {
            Some(secret) => app_service::token(&req.into_parts().0, backend, secret),
            // endpoint_for only routes here with a secret configured; never compare against none.
            None => v2_error(StatusCode::NOT_FOUND, "not_found", "no such IMDS endpoint"),
        },
        Endpoint::AzureArc => match &ctx.settings.arc {
            Some(arc) => {
                mi_sources::arc_token(&req.into_parts().0, backend, arc, &ctx.arc_challenges)
            }
            None => v2_error(StatusCode::NOT_FOUND, "not_found", "no such IMDS endpoint"),
        },
        Endpoint::ServiceFabric => match ctx.settings.service_fabric_secret.as_deref() {
            Some(secret) => mi_sources::service_fabric_token(&req.into_parts().0, backend, secret),
            None => v2_error(StatusCode::NOT_FOUND, "not_found", "no such IMDS endpoint"),
        },
        Endpoint::MachineLearning => match ctx.settings.machine_learning_secret.as_deref() {
            Some(secret) => {
                mi_sources::machine_learning_token(&req.into_parts().0, backend, secret)
            }
            None => v2_error(StatusCode::NOT_FOUND, "not_found", "no such IMDS endpoint"),
        },
        Endpoint::CloudShell => {
            let (parts, body) = req.into_parts();
            match http_body_util::Limited::new(body, MAX_FORM_BODY)
                .collect()
                .await
            {
                Ok(body) => mi_sources::cloud_shell_token(&parts, &body.to_bytes(), backend),
                Err(e) => v2_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("cannot read the request body: {e}"),
                ),
            }
        }
        // endpoint_for never yields these.
        Endpoint::Token | Endpoint::Resource => {
            v2_error(StatusCode::NOT_FOUND, "not_found", "no such IMDS endpoint")
        }
    };
    Ok(finish(ctx, endpoint, answer, server_header, shape))
}

/// A response chosen by a `Fault::Status`: its status, `Retry-After`, and body (or a short JSON one).
struct RawAnswer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Bytes,
    content_type: &'static str,
}

fn status_fault(code: u16, retry_after: Option<u64>, body: Option<&str>) -> RawAnswer {
    let Ok(status) = StatusCode::from_u16(code) else {
        return RawAnswer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            retry_after: None,
            body: Bytes::from(format!(
                "{{\"error\":\"bad_fault\",\"error_description\":\"injected status {code} is not an HTTP status\"}}"
            )),
            content_type: "application/json; charset=utf-8",
        };
    };
    match body {
        Some(text) => RawAnswer {
            status,
            retry_after,
            body: Bytes::from(text.to_string()),
            content_type: if text.trim_start().starts_with('{') {
                "application/json; charset=utf-8"
            } else {
                "text/plain; charset=utf-8"
            },
        },
        None => RawAnswer {
            status,
            retry_after,
            body: Bytes::from(
                serde_json::json!({
                    "error": status.canonical_reason().unwrap_or("error"),
                    "error_description": format!("injected fault: HTTP {code}"),
                })
                .to_string(),
            ),
            content_type: "application/json; charset=utf-8",
        },
    }
}

fn record(
    ctx: &Ctx,
    endpoint: Endpoint,
    status: u16,
    client_id: Option<String>,
    outcome: &str,
    request: Option<String>,
) {
    ctx.observations.record(RequestRecord {
        endpoint,
        status,
        client_id,
        outcome: outcome.to_string(),
        client_cert_x5t: None,
        host: None,
        request,
    });
}

fn finish(
    ctx: &Ctx,
    endpoint: Endpoint,
    answer: Answer,
    server_header: Option<&String>,
    request: Option<String>,
) -> Response<Full<Bytes>> {
    tracing::info!(
        ?endpoint,
        status = answer.status.as_u16(),
        client_id = answer.client_id.as_deref().unwrap_or(""),
        outcome = %answer.outcome,
        "imds request"
    );
    record(
        ctx,
        endpoint,
        answer.status.as_u16(),
        answer.client_id.clone(),
        &answer.outcome,
        request,
    );
    render(answer, server_header)
}

fn finish_raw(
    ctx: &Ctx,
    endpoint: Endpoint,
    raw: RawAnswer,
    server_header: Option<&String>,
    request: Option<String>,
) -> Response<Full<Bytes>> {
    tracing::info!(
        ?endpoint,
        status = raw.status.as_u16(),
        "imds fault: status"
    );
    record(
        ctx,
        endpoint,
        raw.status.as_u16(),
        None,
        "injected_status",
        request,
    );
    let mut response = Response::new(Full::new(raw.body));
    *response.status_mut() = raw.status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(raw.content_type),
    );
    if let Some(secs) = raw.retry_after {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    add_server_header(headers, server_header);
    response
}

fn add_server_header(headers: &mut http::HeaderMap, server_header: Option<&String>) {
    if let Some(value) = server_header.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert(http::header::SERVER, value);
    }
}

fn render(answer: Answer, server_header: Option<&String>) -> Response<Full<Bytes>> {
    let body = Bytes::from(answer.body.to_string());
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    add_server_header(headers, server_header);
    response
}
