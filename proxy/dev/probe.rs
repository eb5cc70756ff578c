//! One request per route through popgate's real listener, and what the local authority's resource
//! echoed back: the status, the scheme it saw, and whether the token's `cnf` matched the
//! certificate presented in TLS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::config::model::{Config, Flow, Identity, Route};
use crate::identity::token::TokenType;

use super::targets::{ProbeTarget, probe_target};

/// Bound on one probe: the default request timeout (60 s) plus a lazy route's first acquisition.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on a probe's response body: the resource's echo is a few KiB, a 503 body less.
pub const MAX_PROBE_BODY: usize = 1 << 20;
/// Most characters of a failure cause shown in the table: room for popgate's longest cause (an
/// ESTS description is cut at 512 characters, plus the prefix and a hint), yet one bounded line.
const MAX_CAUSE_CHARS: usize = 1024;

/// What "binding verified" says for a Bearer route.
pub const BINDING_NOT_APPLICABLE: &str = "n/a (bearer)";

/// One row of the table.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    /// The route's name.
    pub route: String,
    /// `vanilla` or `fic`.
    pub flow: &'static str,
    /// The identity kind(s), e.g. `SAMI` or `certificate app -> FIC app`.
    pub identity: String,
    /// The configured final token type.
    pub token_type: &'static str,
    /// The HTTP status popgate answered with, if it answered.
    pub status: Option<u16>,
    /// `yes`, `NO`, `n/a (bearer)` or `-` (no echo to judge by).
    pub binding: String,
    /// Time from sending the request to the whole response.
    pub latency: Duration,
    /// Why the row is not OK; `None` when it is.
    pub problem: Option<String>,
    /// The request that was sent.
    pub target: ProbeTarget,
}

impl ProbeResult {
    /// Whether the route served the request as configured.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

fn token_type_label(t: TokenType) -> &'static str {
    match t {
        TokenType::MtlsPop => "mtls_pop",
        TokenType::Bearer => "bearer",
    }
}

fn identity_label(config: &Config, name: &str) -> String {
    match config.identity(name) {
        Some(Identity::ManagedIdentity(mi)) => {
            let who = match &mi.selector {
                None => "SAMI",
                Some(crate::config::model::UamiSelector::ClientId(_)) => "UAMI (client_id)",
                Some(crate::config::model::UamiSelector::ResourceId(_)) => "UAMI (resource_id)",
                Some(crate::config::model::UamiSelector::ObjectId(_)) => "UAMI (object_id)",
            };
            match mi.source.kind() {
                crate::config::model::MiSourceKind::Imds => who.into(),
                other => format!("{who} via {other}"),
            }
        }
        Some(Identity::ConfidentialClient(cc)) if cc.certificate.is_some() => {
            "certificate app".into()
        }
        Some(Identity::ConfidentialClient(_)) => "FIC app".into(),
        Some(Identity::WorkloadIdentity(_)) => "workload identity".into(),
        Some(Identity::Static(_)) => "static".into(),
        None => format!("unknown `{name}`"),
    }
}

/// Sends `route`'s probe through the listener at `listener` and judges the answer.
pub async fn probe(listener: SocketAddr, config: &Config, route: &Route) -> ProbeResult {
    let (flow, identity) = match &route.flow {
        Flow::Vanilla { identity } => ("vanilla", identity_label(config, identity)),
        Flow::Fic { leg1, leg2, .. } => (
            "fic",
            format!(
                "{} -> {}",
                identity_label(config, leg1),
                identity_label(config, leg2)
            ),
        ),
    };
    let target = probe_target(route);
    let started = Instant::now();
    let answer = tokio::time::timeout(PROBE_TIMEOUT, send(listener, &target)).await;
    let latency = started.elapsed();
    let mut result = ProbeResult {
        route: route.name.clone(),
        flow,
        identity,
        token_type: token_type_label(route.token_type),
        status: None,
        binding: "-".into(),
        latency,
        problem: None,
        target,
    };
    match answer {
        Err(_) => result.problem = Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        Ok(Err(e)) => result.problem = Some(e),
        Ok(Ok((status, www_authenticate, body))) => {
            result.status = Some(status);
            judge(
                &mut result,
                route.token_type,
                status,
                www_authenticate,
                &body,
            );
        }
    }
    result
}

/// Fills `binding` and `problem` from the answer.
fn judge(
    result: &mut ProbeResult,
    wanted: TokenType,
    status: u16,
    www_authenticate: Option<String>,
    body: &[u8],
) {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        result.problem = Some(failure_cause(json.as_ref(), www_authenticate, body));
        return;
    }
    let Some(echo) = json else {
        result.problem = Some("the answer is not the resource's JSON echo".into());
        return;
    };
    let scheme = echo["scheme"].as_str().unwrap_or("");
    if scheme != token_type_label(wanted) {
        result.problem = Some(format!(
            "the resource saw scheme `{scheme}`, the route asks for {}",
            token_type_label(wanted)
        ));
        return;
    }
    if wanted == TokenType::Bearer {
        result.binding = BINDING_NOT_APPLICABLE.into();
        return;
    }
    let cnf = echo["cnf_x5t"].as_str();
    let presented = echo["presented_x5t"].as_str();
    match (cnf, presented) {
        (Some(cnf), Some(presented)) if cnf == presented => result.binding = "yes".into(),
        _ => {
            result.binding = "NO".into();
            result.problem = Some(format!(
                "token bound to {} but TLS presented {}",
                cnf.unwrap_or("nothing"),
                presented.unwrap_or("no certificate")
            ));
        }
    }
}

/// One line saying why: popgate's own refusal (`error`, `cause`/`message`), or the resource's
/// `WWW-Authenticate` challenge, or the raw body.
fn failure_cause(
    json: Option<&serde_json::Value>,
    www_authenticate: Option<String>,
    body: &[u8],
) -> String {
    let mut parts = Vec::new();
    if let Some(j) = json {
        for key in ["error", "cause", "message", "error_description"] {
            if let Some(v) = j[key].as_str() {
                parts.push(v.to_string());
            }
        }
    }
    if let Some(w) = www_authenticate {
        parts.push(format!("WWW-Authenticate: {w}"));
    }
    if parts.is_empty() {
        parts.push(String::from_utf8_lossy(body).trim().to_string());
    }
    let line = parts.join(": ").replace(['\n', '\r'], " ");
    if line.chars().count() > MAX_CAUSE_CHARS {
        let cut: String = line.chars().take(MAX_CAUSE_CHARS).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// The status, the `WWW-Authenticate` header and the body of one request over a fresh connection.
async fn send(
    listener: SocketAddr,
    target: &ProbeTarget,
) -> Result<(u16, Option<String>, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(listener)
        .await
        .map_err(|e| format!("cannot connect to popgate at {listener}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with popgate failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let (uri, host) = match &target.host {
        Some(host) => (format!("http://{host}{}", target.path), host.clone()),
        None => (target.path.clone(), listener.to_string()),
    };
    let request = http::Request::get(uri)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "popgate-dev")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the probe request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("popgate did not answer: {e}"))?;
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = Limited::new(response.into_body(), MAX_PROBE_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?
        .to_bytes();
    driver.abort();
    Ok((status, www_authenticate, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> ProbeResult {
        ProbeResult {
            route: "r".into(),
            flow: "vanilla",
            identity: "SAMI".into(),
            token_type: "mtls_pop",
            status: Some(200),
            binding: "-".into(),
            latency: Duration::ZERO,
            problem: None,
            target: ProbeTarget {
                host: None,
                path: "/".into(),
            },
        }
    }

    /// A blank row judged from an answer: `status`, WWW-Authenticate and body.
    fn judged(
        wanted: TokenType,
        status: u16,
        www_authenticate: Option<String>,
        body: &[u8],
    ) -> ProbeResult {
        let mut r = blank();
        judge(&mut r, wanted, status, www_authenticate, body);
        r
    }

    #[test]
    fn pop_rows_need_matching_thumbprints() {
        let r = judged(
            TokenType::MtlsPop,
            200,
            None,
            br#"{"scheme":"mtls_pop","cnf_x5t":"A","presented_x5t":"A"}"#,
        );
        assert!(r.ok());
        assert_eq!(r.binding, "yes");
        let r = judged(
            TokenType::MtlsPop,
            200,
            None,
            br#"{"scheme":"mtls_pop","cnf_x5t":"A","presented_x5t":"B"}"#,
        );
        assert!(!r.ok());
        assert_eq!(r.binding, "NO");
    }

    #[test]
    fn bearer_rows_and_downgrades() {
        let r = judged(TokenType::Bearer, 200, None, br#"{"scheme":"bearer"}"#);
        assert!(r.ok());
        assert_eq!(r.binding, BINDING_NOT_APPLICABLE);
        let r = judged(TokenType::MtlsPop, 200, None, br#"{"scheme":"bearer"}"#);
        assert!(r.problem.unwrap().contains("scheme `bearer`"));
    }

    #[test]
    fn failures_carry_popgates_cause_on_one_line() {
        let r = judged(
            TokenType::Bearer,
            503,
            None,
            b"{\"error\":\"no_token\",\"cause\":\"AADSTS700016: unknown\\napp\"}",
        );
        assert_eq!(r.problem.unwrap(), "no_token: AADSTS700016: unknown app");
        let r = judged(
            TokenType::Bearer,
            401,
            Some("Bearer error=\"invalid_token\"".into()),
            b"",
        );
        assert!(r.problem.unwrap().contains("invalid_token"));
    }
}
