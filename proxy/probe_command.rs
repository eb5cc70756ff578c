//! `popgate probe --url http://127.0.0.1:9901/readyz`: one bounded HTTP GET, for container
//! health checks where the image has no shell and no curl (distroless). Exit 0 on a 2xx answer,
//! 1 on anything else (the reason on stderr), 2 for bad usage.
//!
//! Plain `http://` only: the admin listener speaks nothing else, and a probe must not depend on
//! certificates. Any host is accepted (names go through the system resolver), not only loopback:
//! the probe sends nothing but a GET of the given path, so probing a sibling container's admin
//! port is as harmless as probing one's own.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::EXIT_BAD_CONFIG;
use crate::cli::ProbeArgs;

/// Longest `--timeout` accepted: a health check that waits longer than a minute is misconfigured.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most body bytes read from a failed answer, to show why (the /readyz JSON is a few KiB).
const MAX_REASON_BODY: usize = 64 * 1024;
/// Most characters of that body printed on stderr: one readable reason, not a dump.
const MAX_REASON_CHARS: usize = 2048;

/// Exit status when the target is not healthy (or cannot be reached).
const EXIT_UNHEALTHY: u8 = 1;

/// Runs the probe; prints `STATUS` on stdout when healthy, the reason on stderr otherwise.
pub(crate) fn probe(args: ProbeArgs) -> ExitCode {
    let target = match Target::parse(&args.url) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_BAD_CONFIG, &format!("--url {}: {e}", args.url)),
    };
    if args.timeout > MAX_PROBE_TIMEOUT {
        return fail(
            EXIT_BAD_CONFIG,
            &format!("--timeout: at most {}s", MAX_PROBE_TIMEOUT.as_secs()),
        );
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_UNHEALTHY, &format!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        tokio::time::timeout(args.timeout, target.get())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}ms", args.timeout.as_millis())))
    });
    match outcome {
        Ok(status) => {
            let _ = writeln!(std::io::stdout().lock(), "{status}");
            ExitCode::SUCCESS
        }
        Err(reason) => fail(EXIT_UNHEALTHY, &format!("{}: {reason}", args.url)),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "popgate probe: {message}");
    ExitCode::from(code)
}

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("not a URL ({e}); write http://HOST:PORT/PATH"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "scheme `{other}` is not supported: the probe speaks plain http:// only"
                ));
            }
            None => return Err("no scheme: write http://HOST:PORT/PATH".into()),
        }
        let authority = uri
            .authority()
            .ok_or("no host: write http://HOST:PORT/PATH")?;
        if authority.as_str().contains('@') {
            return Err("user info (`user@`) is not supported".into());
        }
        let host = authority.host();
        if host.is_empty() {
            return Err("no host: write http://HOST:PORT/PATH".into());
        }
        // `[::1]` → `::1` for the resolver.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Target {
            host,
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }

    /// GETs the target: `Ok(status)` for a 2xx answer, `Err(reason)` otherwise.
    async fn get(&self) -> Result<StatusCode, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        let mut last = format!("{} resolves to no address", self.host);
        let mut stream = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        let stream = stream.ok_or(last)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        tokio::spawn(conn);
        let request = Request::get(self.path_and_query.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(header::USER_AGENT, "popgate-probe")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status);
        }
        let body = match Limited::new(response.into_body(), MAX_REASON_BODY)
            .collect()
            .await
        {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        let body: String = body.trim().chars().take(MAX_REASON_CHARS).collect();
        Err(if body.is_empty() {
            format!("answered {status}")
        } else {
            format!("answered {status}: {body}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls_and_refuses_the_rest() {
        let t = Target::parse("http://127.0.0.1:9901/readyz").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9901));
        assert_eq!(t.path_and_query, "/readyz");
        let t = Target::parse("http://[::1]/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(
            Target::parse("http://localhost:1").unwrap().path_and_query,
            "/"
        );
        for bad in [
            "https://127.0.0.1/",
            "127.0.0.1:9901",
            "/readyz",
            "http://u:p@127.0.0.1/",
            "not a url",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
