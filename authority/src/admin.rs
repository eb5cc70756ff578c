//! The standalone binary's admin API: plain HTTP on loopback, JSON in and out.
//!
//! - `GET /counts` — requests seen per endpoint
//! - `GET /log` — every request record, oldest first
//! - `POST /faults` — `{"endpoint":"token","fault":{"kind":"status","code":429,"retry_after":120,"body":null},"times":2}`
//!   or `{"endpoint":"token","latency_ms":50}`
//! - `DELETE /faults` — clear every fault and latency
//! - `GET /settings`, `POST /settings` — `{"lifetime_secs":60,"refresh_in_secs":30,"numbers_as_strings":true}`
//!   (`"clear_refresh_in":true` removes `refresh_in`)
//! - `POST /apps` — `{"common_name":"my-app"}`: registers a certificate app, writes its
//!   certificate and key PEM files into the state directory and returns their paths.
//! - `POST /certificates` — `{"client_id":"…","common_name":"my-app"}`: one more certificate for an
//!   existing app (rotation: old and new are both accepted); writes and returns the new pair's paths.
//! - `POST /resources` — `{"audience":"https://api.contoso.test","hosts":["api.contoso.test"]}`
//!   (optional `"bearer"`, `"mtls_pop"`, default both): a resource tokens can be issued for.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin_directory;
use crate::directory::{DEFAULT_TENANT_ID, Directory};
use crate::faults::{Endpoint, Fault, Faults};
use crate::observe::Observations;
use crate::pki::Pki;
use crate::settings::Settings;

/// Admin requests are small JSON documents.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;
/// Admin clients are scripts and tests; a slow one should not hold a connection forever.
const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A fault queued `times` times; more than this is a typo, not a test.
const MAX_FAULT_TIMES: usize = 100_000;

/// What the admin API can read and change.
#[derive(Clone)]
pub struct AdminState {
    pub directory: Arc<Directory>,
    pub pki: Arc<Pki>,
    pub settings: Arc<Settings>,
    pub faults: Arc<Faults>,
    pub observations: Arc<Observations>,
    /// Where `POST /apps` writes credentials.
    pub state_dir: PathBuf,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    endpoint: Endpoint,
    fault: Option<Fault>,
    #[serde(default = "one")]
    times: usize,
    latency_ms: Option<u64>,
}

fn one() -> usize {
    1
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRequest {
    lifetime_secs: Option<u64>,
    ext_lifetime_secs: Option<u64>,
    refresh_in_secs: Option<u64>,
    #[serde(default)]
    clear_refresh_in: bool,
    numbers_as_strings: Option<bool>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppRequest {
    common_name: Option<String>,
}

/// A running admin server; stops when dropped.
#[derive(Debug)]
pub struct AdminHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// Serves the admin API on `listener` (HTTP/1.1).
pub fn spawn(listener: TcpListener, state: AdminState) -> AdminHandle {
    let state = Arc::new(state);
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let (tcp, _) = tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(listener = "admin", %error, "accept failed");
                        tokio::time::sleep(crate::tls_server::ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                },
            };
            let state = state.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(ADMIN_HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    AdminHandle { stop, task }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn bad(message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"error": message.to_string()}),
    )
}

async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, String> {
    let bytes = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the body (at most {MAX_ADMIN_BODY} bytes): {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("the body is not valid JSON for this call: {e}"))
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/counts") => {
            let counts = state.observations.counts();
            reply(StatusCode::OK, serde_json::json!(counts))
        }
        (Method::GET, "/log") => reply(StatusCode::OK, serde_json::json!(state.observations.log())),
        (Method::POST, "/faults") => match json_body::<FaultRequest>(req).await {
            Ok(request) => add_fault(state, request),
            Err(e) => bad(e),
        },
        (Method::DELETE, "/faults") => {
            state.faults.clear();
            reply(StatusCode::OK, serde_json::json!({"cleared": true}))
        }
        (Method::GET, "/settings") => reply(StatusCode::OK, settings_json(&state.settings)),
        (Method::POST, "/settings") => match json_body::<SettingsRequest>(req).await {
            Ok(request) => change_settings(state, request),
            Err(e) => bad(e),
        },
        (Method::POST, "/apps") => match json_body::<AppRequest>(req).await {
            Ok(request) => new_app(state, request),
            Err(e) => bad(e),
        },
        (Method::POST, "/certificates") => {
            match json_body::<admin_directory::CertificateRequest>(req).await {
                Ok(request) => answer(admin_directory::add_certificate(
                    &state.directory,
                    &state.pki,
                    &state.state_dir,
                    request,
                )),
                Err(e) => bad(e),
            }
        }
        (Method::POST, "/resources") => {
            match json_body::<admin_directory::ResourceRequest>(req).await {
                Ok(request) => answer(admin_directory::add_resource(&state.directory, request)),
                Err(e) => bad(e),
            }
        }
        (
            _,
            "/counts" | "/log" | "/faults" | "/settings" | "/apps" | "/certificates" | "/resources",
        ) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": format!("{} is not allowed on {path}", req.method())}),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no admin route {path}")}),
        ),
    }
}

fn answer(result: Result<serde_json::Value, String>) -> Response<Full<Bytes>> {
    match result {
        Ok(value) => reply(StatusCode::OK, value),
        Err(e) => bad(e),
    }
}

fn add_fault(state: &AdminState, request: FaultRequest) -> Response<Full<Bytes>> {
    if request.times > MAX_FAULT_TIMES {
        return bad(format!("times must be at most {MAX_FAULT_TIMES}"));
    }
    if let Some(Fault::Status { code, .. }) = &request.fault
        && !(100..=599).contains(code)
    {
        return bad(format!(
            "status code {code} is not an HTTP status (100-599)"
        ));
    }
    match (request.fault, request.latency_ms) {
        (Some(fault), None) => {
            state.faults.push(request.endpoint, fault, request.times);
            reply(StatusCode::OK, serde_json::json!({"queued": request.times}))
        }
        (None, Some(ms)) => {
            state
                .faults
                .set_latency(request.endpoint, Duration::from_millis(ms));
            reply(StatusCode::OK, serde_json::json!({"latency_ms": ms}))
        }
        _ => bad("give exactly one of 'fault' and 'latency_ms'"),
    }
}

fn settings_json(settings: &Settings) -> serde_json::Value {
    let s = settings.tokens();
    serde_json::json!({
        "lifetime_secs": s.lifetime.as_secs(),
        "ext_lifetime_secs": s.ext_lifetime.map(|d| d.as_secs()),
        "refresh_in_secs": s.refresh_in.map(|d| d.as_secs()),
        "numbers_as_strings": s.numbers_as_strings,
    })
}

fn change_settings(state: &AdminState, request: SettingsRequest) -> Response<Full<Bytes>> {
    if request.clear_refresh_in && request.refresh_in_secs.is_some() {
        return bad("give either 'refresh_in_secs' or 'clear_refresh_in', not both");
    }
    let mut s = state.settings.tokens();
    if let Some(secs) = request.lifetime_secs {
        s.lifetime = Duration::from_secs(secs);
    }
    if let Some(secs) = request.ext_lifetime_secs {
        s.ext_lifetime = Some(Duration::from_secs(secs));
    }
    if let Some(secs) = request.refresh_in_secs {
        s.refresh_in = Some(Duration::from_secs(secs));
    }
    if request.clear_refresh_in {
        s.refresh_in = None;
    }
    if let Some(b) = request.numbers_as_strings {
        s.numbers_as_strings = b;
    }
    state.settings.set_tokens(s);
    reply(StatusCode::OK, settings_json(&state.settings))
}

fn new_app(state: &AdminState, request: AppRequest) -> Response<Full<Bytes>> {
    let common_name = request.common_name.unwrap_or_else(|| "popgate-app".into());
    let credential = match state.pki.issue_app_credential(&common_name) {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    let client_id = uuid::Uuid::new_v4().to_string();
    if let Err(e) = state.directory.register_certificate_app(
        DEFAULT_TENANT_ID,
        &client_id,
        credential.cert_der.as_ref(),
    ) {
        return bad(e);
    }
    let (cert_path, key_path) = match write_credential(&state.state_dir, &client_id, &credential) {
        Ok(paths) => paths,
        Err(e) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": e}),
            );
        }
    };
    tracing::info!(client_id = %client_id, x5t = %credential.x5t_s256, "certificate app registered");
    reply(
        StatusCode::OK,
        serde_json::json!({
            "client_id": client_id,
            "tenant_id": DEFAULT_TENANT_ID,
            "x5t_s256": credential.x5t_s256,
            "cert_path": cert_path,
            "key_path": key_path,
        }),
    )
}

/// Writes `credential` as `{stem}.cert.pem` (public) and `{stem}.key.pem` (owner only) into `dir`.
pub fn write_credential(
    dir: &std::path::Path,
    stem: &str,
    credential: &crate::pki::AppCredential,
) -> Result<(PathBuf, PathBuf), String> {
    let cert_path = dir.join(format!("{stem}.cert.pem"));
    let key_path = dir.join(format!("{stem}.key.pem"));
    write_public(&cert_path, credential.cert_pem.as_bytes())?;
    write_private(&key_path, credential.key_pem.as_bytes())?;
    Ok((cert_path, key_path))
}

/// Writes a file anyone may read (certificates).
pub fn write_public(path: &std::path::Path, contents: &[u8]) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes a file only its owner may read (private keys).
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(contents))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
