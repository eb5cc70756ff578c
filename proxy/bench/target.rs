//! What each benchmarked route is sent: `--route NAME[=[METHOD ]PATH]`, plus the body file and
//! headers every route's requests carry.

use std::net::IpAddr;
use std::path::Path;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use crate::config::model::Config;
use crate::route::probe::{probe_target, upstream_host};

use super::BenchError;

/// Largest `--body` file: a benchmark body is a representative request, not a bulk upload, and
/// every connection shares one copy of it.
pub(crate) const MAX_BODY_BYTES: u64 = 16 << 20;
/// Most routes side by side: each is a column in the table and a line in the report.
pub(crate) const MAX_ROUTES: usize = 16;

/// One route's requests.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The route's name.
    pub route: String,
    /// Request method.
    pub method: Method,
    /// `Host` header; `None` for a path-only route (the listener's address is sent).
    pub host: Option<String>,
    /// Origin-form path (and query).
    pub path: String,
    /// Extra headers, the same for every route.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body (empty without `--body`).
    pub body: Bytes,
    /// Whether the route's upstream is on loopback (or the run is `--dev`).
    pub loopback: bool,
    /// Whose acquisition steps are the route's: (name prefix, identity, token type), leg 1 first
    /// for a FIC route.
    pub token_keys: Vec<TokenKey>,
}

/// Which `popgate_token_step_duration_seconds` series belong to a route: its steps are shown as
/// `prefix` + step name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenKey {
    /// `""`, or `"leg1 "` for a FIC route's first leg.
    pub prefix: &'static str,
    /// The identity's name.
    pub identity: String,
    /// `mtls_pop` or `bearer`.
    pub token_type: &'static str,
}

fn token_keys(route: &crate::config::model::Route) -> Vec<TokenKey> {
    use crate::config::model::Flow;
    let last = |identity: &str| TokenKey {
        prefix: "",
        identity: identity.to_string(),
        token_type: route.token_type.as_str(),
    };
    match &route.flow {
        Flow::Vanilla { identity } => vec![last(identity)],
        Flow::Fic {
            leg1,
            leg2,
            leg1_token_type,
        } => vec![
            TokenKey {
                prefix: "leg1 ",
                identity: leg1.clone(),
                token_type: leg1_token_type.as_str(),
            },
            last(leg2),
        ],
    }
}

fn usage(message: String) -> BenchError {
    BenchError::Usage(message)
}

/// Resolves every `--route` spec against `config`. `dev`: every upstream is the local authority.
pub(crate) fn resolve(
    config: &Config,
    specs: &[String],
    body: Option<&Path>,
    headers: &[String],
    dev: bool,
) -> Result<Vec<Target>, BenchError> {
    if specs.is_empty() {
        return Err(usage("name at least one --route".into()));
    }
    if specs.len() > MAX_ROUTES {
        return Err(usage(format!("at most {MAX_ROUTES} --route flags")));
    }
    let body = match body {
        None => Bytes::new(),
        Some(path) => read_body(path)?,
    };
    let headers = headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out: Vec<Target> = Vec::with_capacity(specs.len());
    for spec in specs {
        let (name, request) = spec.split_once('=').unwrap_or((spec, ""));
        let Some(route) = config.routes.iter().find(|r| r.name == name) else {
            let known: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
            return Err(usage(format!(
                "--route {spec}: no route named `{name}` in the config (routes: {})",
                known.join(", ")
            )));
        };
        if out.iter().any(|t| t.route == name) {
            return Err(usage(format!("--route {name} is given twice")));
        }
        let probe = probe_target(route);
        let (method, path) = parse_request(spec, request, &probe.path)?;
        out.push(Target {
            route: name.to_string(),
            method,
            host: probe.host,
            path,
            headers: headers.clone(),
            body: body.clone(),
            loopback: dev || upstream_is_loopback(config, route),
            token_keys: token_keys(route),
        });
    }
    Ok(out)
}

/// `""`, `PATH` or `METHOD PATH`.
fn parse_request(
    spec: &str,
    request: &str,
    default_path: &str,
) -> Result<(Method, String), BenchError> {
    let (method, path) = match request.trim().split_once(' ') {
        Some((m, p)) => (m, p.trim()),
        None if request.trim().is_empty() => ("GET", default_path),
        None => ("GET", request.trim()),
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| usage(format!("--route {spec}: `{method}` is not an HTTP method")))?;
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(usage(format!(
            "--route {spec}: `{path}` is not a path (write NAME, NAME=/path or NAME=METHOD /path)"
        )));
    }
    Ok((method, path.to_string()))
}

fn read_body(path: &Path) -> Result<Bytes, BenchError> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| usage(format!("--body {shown}: cannot read it: {e}")))?;
    if meta.len() > MAX_BODY_BYTES {
        return Err(usage(format!(
            "--body {shown}: {} bytes, more than the {MAX_BODY_BYTES}-byte maximum",
            meta.len()
        )));
    }
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| usage(format!("--body {shown}: cannot read it: {e}")))
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), BenchError> {
    // The value is never echoed: it may be a credential.
    let bad = |why: &str| usage(format!("--header: {why} (write `Name: value`)"));
    let (name, value) = text.split_once(':').ok_or_else(|| bad("no `:`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| bad(&format!("`{}` is not a header name", name.trim())))?;
    if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
        return Err(bad(&format!("`{name}` is set by the bench itself")));
    }
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| bad(&format!("the value of `{name}` has invalid characters")))?;
    Ok((name, value))
}

/// Whether `route`'s upstream is a loopback address, or a name `network.resolve` maps to one.
fn upstream_is_loopback(config: &Config, route: &crate::config::model::Route) -> bool {
    let Some((host, port)) = upstream_host(route) else {
        return false;
    };
    if host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    config
        .network
        .resolve
        .get(&format!("{host}:{port}"))
        .is_some_and(|addr| addr.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_specs_parse_or_explain() {
        let (m, p) = parse_request("a", "", "/x/popgate-dev").unwrap();
        assert_eq!((m, p.as_str()), (Method::GET, "/x/popgate-dev"));
        let (m, p) = parse_request("a=POST /v1/items?x=1", "POST /v1/items?x=1", "/").unwrap();
        assert_eq!((m, p.as_str()), (Method::POST, "/v1/items?x=1"));
        let e = parse_request("a=items", "items", "/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`items` is not a path"), "{e}");
        assert!(parse_request("a=GE(T /", "GE(T /", "/").is_err());
    }

    #[test]
    fn headers_parse_and_never_echo_values() {
        let (n, v) = parse_header("X-Test:  1").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-test", "1"));
        let e = parse_header("Authorization: secret\u{7f}")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
        assert!(parse_header("Host: x").is_err());
        assert!(parse_header("novalue").is_err());
    }
}
