//! The managed-identity sources beyond IMDS and App Service, as strict as the real ones: Azure Arc
//! (`401` + `WWW-Authenticate: Basic realm=<file>`, then `Authorization: Basic <file content>`),
//! Service Fabric (`secret` header, served over TLS with a certificate clients pin by
//! thumbprint), Cloud Shell (`POST` form, `Metadata: true`) and Azure Machine Learning
//! (`secret` header, `clientid`). Request shapes are MSAL.NET's.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use bytes::Bytes;
use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::json;

use super::backend::{ImdsBackend, ManagedIdentity, UamiSelector};
use super::query::{Query, metadata_header_problem, method_problem, resolve_identity};
use super::respond::{Answer, app_service_error, unix_now};

/// Azure Arc's identity API version.
pub const ARC_API_VERSION: &str = "2020-06-01";
/// Service Fabric's (MSAL.NET ≥ 4.83).
pub const SERVICE_FABRIC_API_VERSION: &str = "2020-05-01";
/// Azure Machine Learning's.
pub const MACHINE_LEARNING_API_VERSION: &str = "2017-09-01";
/// How many Arc challenge secrets stay valid: a handful of identities acquire at once at most.
const ARC_SECRETS_KEPT: usize = 16;
/// Largest Cloud Shell form body: `resource=<url>`.
const MAX_CLOUD_SHELL_BODY: usize = 4096;

fn bad(description: &str) -> Answer {
    app_service_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn secret_problem(parts: &Parts, header: &str, secret: &str) -> Option<Answer> {
    match parts.headers.get(header) {
        None => Some(bad(&format!("The {header} header is missing"))),
        Some(given) if verify_slices_are_equal(given.as_bytes(), secret.as_bytes()).is_err() => {
            Some(app_service_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("The {header} header does not match this host's identity secret"),
            ))
        }
        Some(_) => None,
    }
}

/// `uri`'s query (only `allowed` keys), with the `expected` api-version and a `resource`: the
/// query and its resource, or the 400 that refuses it (the checks every source makes alike).
fn versioned_query(
    uri: &http::Uri,
    allowed: &[&str],
    expected: &str,
) -> Result<(Query, String), Answer> {
    let query = Query::parse(uri, allowed).map_err(|e| bad(&e.0))?;
    if let Some(answer) = api_version_problem(&query, expected) {
        return Err(answer);
    }
    let Some(resource) = query.get("resource").map(str::to_string) else {
        return Err(bad("Required query parameter 'resource' is missing"));
    };
    Ok((query, resource))
}

fn api_version_problem(query: &Query, expected: &str) -> Option<Answer> {
    match query.get("api-version") {
        None => Some(bad("Required query parameter 'api-version' is missing")),
        Some(v) if v == expected => None,
        Some(v) => Some(bad(&format!(
            "api-version '{v}' is not supported (use {expected})"
        ))),
    }
}

/// A Bearer token for `identity` and `resource`, in the string-valued shape every source uses.
fn mint(
    backend: &dyn ImdsBackend,
    identity: &ManagedIdentity,
    resource: &str,
    outcome: &str,
) -> Answer {
    match backend.mint_bearer_token(identity, resource) {
        Ok(minted) => Answer::ok(
            json!({
                "access_token": minted.access_token,
                "expires_on": unix_now().saturating_add(minted.expires_in).to_string(),
                "resource": resource,
                "token_type": "Bearer",
            }),
            identity.client_id.clone(),
            outcome,
        ),
        Err(e) => app_service_error(
            StatusCode::BAD_REQUEST,
            &e.error,
            &format!("AADSTS{}: {}", e.code, e.description),
        )
        .for_client(&identity.client_id),
    }
}

fn system_assigned(backend: &dyn ImdsBackend) -> Result<ManagedIdentity, Answer> {
    resolve_identity(backend, None).map_err(|e| bad(&e))
}

/// Azure Arc's secrets: each challenge writes a fresh `<random>.key` file; a request carrying
/// one of the recent ones as `Authorization: Basic` gets a token.
#[derive(Debug, Default)]
pub struct ArcChallenges {
    issued: Mutex<VecDeque<String>>,
}

impl ArcChallenges {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a new secret file in `dir` (mode 0600) and returns its path.
    fn issue(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let path = dir.join(format!("{}.key", uuid::Uuid::new_v4().simple()));
        write_private(&path, secret.as_bytes())?;
        let mut issued = self.lock();
        if issued.len() >= ARC_SECRETS_KEPT {
            issued.pop_front();
        }
        issued.push_back(secret);
        Ok(path)
    }

    /// Remembers `secret` (the content of a file a test named as the challenge).
    fn remember(&self, secret: String) {
        let mut issued = self.lock();
        if issued.len() >= ARC_SECRETS_KEPT {
            issued.pop_front();
        }
        issued.push_back(secret);
    }

    fn accepts(&self, given: &[u8]) -> bool {
        self.lock()
            .iter()
            .any(|s| verify_slices_are_equal(s.as_bytes(), given).is_ok())
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(data)
}

/// Where Arc's challenges point: a fresh file in `dir`, or (tests of client-side checks) always
/// `fixed`, whose content is then the secret.
#[derive(Clone, Debug)]
pub struct ArcSettings {
    /// The agent's token directory.
    pub dir: PathBuf,
    /// Name this file in every challenge instead of writing a new one.
    pub fixed_challenge: Option<PathBuf>,
}

/// Azure Arc `GET {IDENTITY_ENDPOINT}?api-version=2020-06-01&resource=…`, `Metadata: true`.
pub(crate) fn arc_token(
    parts: &Parts,
    backend: &dyn ImdsBackend,
    settings: &ArcSettings,
    challenges: &ArcChallenges,
) -> Answer {
    if let Some(status) = method_problem(&parts.method, &Method::GET) {
        return app_service_error(
            status,
            "method_not_allowed",
            "the Arc identity endpoint accepts GET only",
        );
    }
    if let Some(problem) = metadata_header_problem(&parts.headers) {
        return bad(problem);
    }
    let (_, resource) =
        match versioned_query(&parts.uri, &["api-version", "resource"], ARC_API_VERSION) {
            Ok(parsed) => parsed,
            Err(answer) => return answer,
        };
    let resource = resource.as_str();
    let basic = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Basic "));
    match basic {
        Some(given) if challenges.accepts(given) => {}
        Some(_) => {
            return app_service_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "The Basic secret is not one this agent issued",
            );
        }
        None => {
            let path = match &settings.fixed_challenge {
                Some(path) => {
                    if let Ok(content) = std::fs::read_to_string(path) {
                        challenges.remember(content);
                    }
                    path.clone()
                }
                None => match challenges.issue(&settings.dir) {
                    Ok(path) => path,
                    Err(e) => {
                        return app_service_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "server_error",
                            &format!("cannot write the challenge file: {e}"),
                        );
                    }
                },
            };
            let mut answer = app_service_error(
                StatusCode::UNAUTHORIZED,
                "challenge",
                "Authorization with the Basic secret in the challenge file is required",
            );
            answer.headers.push((
                "www-authenticate",
                format!("Basic realm={}", path.display()),
            ));
            return answer;
        }
    }
    match system_assigned(backend) {
        Ok(identity) => mint(backend, &identity, resource, "bearer"),
        Err(answer) => answer,
    }
}

/// Service Fabric `GET {IDENTITY_ENDPOINT}?api-version=2020-05-01&resource=…[&principalId=…]`,
/// `secret: {IDENTITY_HEADER}` (served over TLS by [`super::server::spawn_service_fabric`]).
pub(crate) fn service_fabric_token(
    parts: &Parts,
    backend: &dyn ImdsBackend,
    secret: &str,
) -> Answer {
    if let Some(status) = method_problem(&parts.method, &Method::GET) {
        return app_service_error(
            status,
            "method_not_allowed",
            "the Service Fabric identity endpoint accepts GET only",
        );
    }
    if let Some(answer) = secret_problem(parts, "secret", secret) {
        return answer;
    }
    let (query, resource) = match versioned_query(
        &parts.uri,
        &["api-version", "resource", "principalId"],
        SERVICE_FABRIC_API_VERSION,
    ) {
        Ok(parsed) => parsed,
        Err(answer) => return answer,
    };
    let resource = resource.as_str();
    let selector = query
        .get("principalId")
        .map(|v| UamiSelector::ObjectId(v.to_string()));
    match resolve_identity(backend, selector.as_ref()) {
        Ok(identity) => mint(backend, &identity, resource, "bearer"),
        Err(e) => bad(&e),
    }
}

/// Azure ML `GET {MSI_ENDPOINT}?api-version=2017-09-01&resource=…&clientid=…`, `Metadata: true`,
/// `secret: {MSI_SECRET}`.
pub(crate) fn machine_learning_token(
    parts: &Parts,
    backend: &dyn ImdsBackend,
    secret: &str,
) -> Answer {
    if let Some(status) = method_problem(&parts.method, &Method::GET) {
        return app_service_error(
            status,
            "method_not_allowed",
            "the Machine Learning identity endpoint accepts GET only",
        );
    }
    if let Some(problem) = metadata_header_problem(&parts.headers) {
        return bad(problem);
    }
    if let Some(answer) = secret_problem(parts, "secret", secret) {
        return answer;
    }
    let (query, resource) = match versioned_query(
        &parts.uri,
        &["api-version", "resource", "clientid"],
        MACHINE_LEARNING_API_VERSION,
    ) {
        Ok(parsed) => parsed,
        Err(answer) => return answer,
    };
    let resource = resource.as_str();
    let Some(client_id) = query.get("clientid") else {
        return bad("Required query parameter 'clientid' is missing");
    };
    // The system-assigned identity is named by its client id too (DEFAULT_IDENTITY_CLIENT_ID).
    let identity = match system_assigned(backend) {
        Ok(sami) if sami.client_id.eq_ignore_ascii_case(client_id) => Ok(sami),
        _ => resolve_identity(
            backend,
            Some(&UamiSelector::ClientId(client_id.to_string())),
        ),
    };
    match identity {
        Ok(identity) => mint(backend, &identity, resource, "bearer"),
        Err(e) => bad(&e),
    }
}

/// Cloud Shell `POST {MSI_ENDPOINT}` with `Metadata: true` and the form `resource=…`.
pub(crate) fn cloud_shell_token(parts: &Parts, body: &Bytes, backend: &dyn ImdsBackend) -> Answer {
    if let Some(status) = method_problem(&parts.method, &Method::POST) {
        return app_service_error(
            status,
            "method_not_allowed",
            "the Cloud Shell identity endpoint accepts POST only",
        );
    }
    if let Some(problem) = metadata_header_problem(&parts.headers) {
        return bad(problem);
    }
    if parts.uri.query().is_some() {
        return bad("the Cloud Shell identity endpoint takes no query parameters");
    }
    let form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return bad("Content-Type must be application/x-www-form-urlencoded");
    }
    if body.len() > MAX_CLOUD_SHELL_BODY {
        return bad("the form is too large");
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let resource = match pairs.as_slice() {
        [(key, value)] if key == "resource" && !value.is_empty() => value.clone(),
        _ => return bad("the form must be exactly resource=<resource>"),
    };
    match system_assigned(backend) {
        Ok(identity) => mint(backend, &identity, &resource, "bearer"),
        Err(answer) => answer,
    }
}

/// What a request looked like, for the log: method, path and query, and its header names
/// (sorted; values left out, they may be secrets).
pub(crate) fn shape(method: &Method, uri: &http::Uri, headers: &http::HeaderMap) -> String {
    let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    format!(
        "{} {} [{}]",
        method,
        uri.path_and_query().map_or("/", |p| p.as_str()),
        names.join(", ")
    )
}
