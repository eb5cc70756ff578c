//! Where `popgate dev` sends each route's probe request (and `popgate bench` its load by default),
//! and which upstream host that reaches: the concrete names the local authority must answer as.

use crate::config::model::{HostPattern, Route};

/// The label a wildcard host pattern is filled in with, and the last path segment of every probe,
/// so the authority's echo and any log line show the request came from `popgate dev`.
pub(crate) const PROBE_LABEL: &str = "popgate-dev";

/// The HTTPS port upstreams default to.
const HTTPS_PORT: u16 = 443;

/// One route's probe: the request host (absent for a path-prefix-only route, which callers reach in
/// origin form) and the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// `host[:port]` for the request line / `Host` header; `None` for origin-form routes.
    pub host: Option<String>,
    /// Path (the route's prefix plus [`PROBE_LABEL`]).
    pub path: String,
}

impl ProbeTarget {
    /// The URL a user would give curl: absolute for host routes (`curl -x`), else on the listener.
    pub fn curl_command(&self, listener: &str) -> String {
        match &self.host {
            Some(host) => format!("curl -x http://{listener} http://{host}{}", self.path),
            None => format!("curl http://{listener}{}", self.path),
        }
    }

    /// The same request as an app with a compiled-in `https://` URL sends it: CONNECT through
    /// the intercepting `listener`, trusting the CA in `ca`. `None` for origin-form routes.
    pub fn https_curl_command(&self, listener: &str, ca: &std::path::Path) -> Option<String> {
        let host = self.host.as_ref()?;
        Some(format!(
            "curl --cacert {} -x http://{listener} https://{host}{}",
            ca.display(),
            self.path
        ))
    }
}

/// The probe for `route`: its host (a wildcard filled with [`PROBE_LABEL`]) and a path under its
/// prefix.
pub(crate) fn probe_target(route: &Route) -> ProbeTarget {
    let host = route.host.as_ref().map(|pattern| match pattern {
        HostPattern::Exact { host, port } => with_port(host, *port),
        HostPattern::Wildcard { suffix, port } => {
            with_port(&format!("{PROBE_LABEL}.{suffix}"), *port)
        }
    });
    let prefix = route.path_prefix.as_deref().unwrap_or("/");
    let path = if prefix.ends_with('/') {
        format!("{prefix}{PROBE_LABEL}")
    } else {
        format!("{prefix}/{PROBE_LABEL}")
    };
    ProbeTarget { host, path }
}

fn with_port(host: &str, port: Option<u16>) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// The upstream `(host, port)` the probe of `route` is forwarded to: the route's `upstream`, else
/// the probe's own host on 443. `None` only for a route with neither (validation refuses those).
pub(crate) fn upstream_host(route: &Route) -> Option<(String, u16)> {
    if let Some(upstream) = &route.upstream {
        let uri = upstream.uri();
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        return Some((
            host.to_ascii_lowercase(),
            uri.port_u16().unwrap_or(HTTPS_PORT),
        ));
    }
    match route.host.as_ref()? {
        HostPattern::Exact { host, port } => {
            Some((host.to_ascii_lowercase(), port.unwrap_or(HTTPS_PORT)))
        }
        HostPattern::Wildcard { suffix, port } => Some((
            format!("{PROBE_LABEL}.{suffix}").to_ascii_lowercase(),
            port.unwrap_or(HTTPS_PORT),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<HostPattern>, prefix: Option<&str>, upstream: Option<&str>) -> Route {
        Route {
            name: "r".into(),
            host,
            path_prefix: prefix.map(str::to_string),
            strip_prefix: false,
            upstream: upstream.map(|u| u.parse().unwrap()),
            resource: "https://graph.microsoft.com".into(),
            flow: crate::config::model::Flow::Vanilla {
                identity: "app".into(),
            },
            token_type: crate::identity::token::TokenType::MtlsPop,
            acquire: crate::config::model::Acquire::Eager,
            timeouts: Default::default(),
            max_body_bytes: None,
            upstream_pool: Default::default(),
            allow: None,
        }
    }

    #[test]
    fn wildcard_hosts_get_a_concrete_probe_host_and_upstream() {
        let r = route(
            Some(HostPattern::Wildcard {
                suffix: "blob.core.windows.net".into(),
                port: None,
            }),
            None,
            None,
        );
        let t = probe_target(&r);
        assert_eq!(t.host.as_deref(), Some("popgate-dev.blob.core.windows.net"));
        assert_eq!(t.path, "/popgate-dev");
        assert_eq!(
            upstream_host(&r),
            Some(("popgate-dev.blob.core.windows.net".into(), 443))
        );
    }

    #[test]
    fn path_routes_are_probed_in_origin_form_under_their_prefix() {
        let r = route(
            None,
            Some("/vault"),
            Some("https://x.vault.azure.net:8443/base"),
        );
        let t = probe_target(&r);
        assert_eq!(t.host, None);
        assert_eq!(t.path, "/vault/popgate-dev");
        assert_eq!(upstream_host(&r), Some(("x.vault.azure.net".into(), 8443)));
        assert_eq!(
            t.curl_command("127.0.0.1:1"),
            "curl http://127.0.0.1:1/vault/popgate-dev"
        );
    }

    #[test]
    fn exact_hosts_keep_their_port_in_the_probe() {
        let r = route(
            Some(HostPattern::Exact {
                host: "graph.microsoft.com".into(),
                port: Some(8443),
            }),
            Some("/beta/"),
            None,
        );
        let t = probe_target(&r);
        assert_eq!(
            t.curl_command("127.0.0.1:1"),
            "curl -x http://127.0.0.1:1 http://graph.microsoft.com:8443/beta/popgate-dev"
        );
        assert_eq!(
            upstream_host(&r),
            Some(("graph.microsoft.com".into(), 8443))
        );
    }
}
