//! `bench-load` command line and its validation into a [`Plan`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Every run is bounded in time: a longer run is refused, not clamped.
pub const MAX_SECONDS: f64 = 600.0;
/// Upper bound on connections (10 000 idle connections is the largest scenario, with headroom).
pub const MAX_CONNECTIONS: usize = 20_000;
/// Per-request timeout bound; it also bounds the latency histogram's range.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Upper bound on the open-loop rate (far above what two shared cores can serve).
pub const MAX_RATE: f64 = 1_000_000.0;
/// Upper bound on `--body-bytes`: one pre-built body shared by every request, so a larger one
/// would only measure memory copies; 1 MiB already spans many TLS records and body frames.
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "bench-load",
    about = "HTTP/1.1 keep-alive load generator for the popgate load harness"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
    /// http://127.0.0.1:PORT/path (plain HTTP to a proxy) or https://127.0.0.1:PORT/path (direct mTLS).
    #[arg(long, global = true)]
    pub target: Option<String>,
    /// Client certificate chain (PEM), https targets only.
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM), https targets only.
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// CA (PEM) the server certificate must chain to, https targets only.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// TLS server name (https); defaults to the target host.
    #[arg(long, global = true)]
    pub sni: Option<String>,
    /// File holding the Authorization value (`mtls_pop <jwt>`; a bare JWT gets the `mtls_pop ` prefix).
    #[arg(long, global = true)]
    pub authorization_file: Option<PathBuf>,
    /// Host header; defaults to the SNI name, else the --connect host, else the target authority.
    #[arg(long, global = true)]
    pub host: Option<String>,
    /// HOST:PORT to tunnel to through an http target (a proxy): each connection sends
    /// `CONNECT HOST:PORT`, then speaks TLS inside (verified by --ca, SNI --sni or HOST).
    #[arg(long, global = true)]
    pub connect: Option<String>,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, global = true, default_value_t = 1)]
    pub connections: usize,
    /// Measured phase, seconds (closed, rate).
    #[arg(long, global = true, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up before the measured phase, seconds; its requests are not recorded.
    #[arg(long, global = true, default_value_t = 0.0)]
    pub warmup: f64,
    /// Per-request timeout, milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Tokio worker threads (1 = current-thread runtime).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Send each request as a POST with a body of this many bytes (`content-length`); 0: a GET
    /// without a body.
    #[arg(long, global = true, default_value_t = 0)]
    pub body_bytes: usize,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Mode {
    /// Back-to-back requests on every connection for the duration (max throughput).
    Closed,
    /// Open loop at --rate req/s in total, latency from the intended send time.
    Rate {
        #[arg(long)]
        rate: f64,
        /// Add one element per second of the measured phase.
        #[arg(long)]
        series: bool,
    },
    /// One request on each of the connections, all released at the same instant.
    Burst,
    /// One request on each connection, then hold them idle for --hold seconds.
    Idle {
        #[arg(long)]
        hold: f64,
    },
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub path_and_query: String,
    pub authority: String,
    pub tls: Option<TlsFiles>,
    /// A CONNECT tunnel through the (http) target, with TLS inside.
    pub tunnel: Option<Tunnel>,
}

/// `--connect`: the tunnel's target (sent to the proxy, never dialled by the generator) and the
/// TLS spoken inside it.
#[derive(Clone, Debug)]
pub struct Tunnel {
    /// `HOST:PORT`, as written in the CONNECT request line and its Host header.
    pub authority: String,
    /// The CA (PEM) the certificate inside the tunnel must chain to.
    pub ca: PathBuf,
    /// The TLS server name inside the tunnel.
    pub sni: String,
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub sni: String,
}

/// A validated run.
pub struct Plan {
    pub mode: Mode,
    pub target: Target,
    pub host: String,
    pub authorization: Option<String>,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    pub threads: usize,
    pub body_bytes: usize,
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
        return Err(format!(
            "--{name} must be between 0 and {MAX_SECONDS} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses `scheme://host:port/path`; the host must be a loopback IP literal or `localhost`.
pub fn parse_target(url: &str) -> Result<(bool, SocketAddr, String, String), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "--target {url:?}: must start with http:// or https://"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once("]:")
            .ok_or_else(|| format!("--target {url:?}: needs [addr]:port"))?;
        (h, p)
    } else {
        authority
            .rsplit_once(':')
            .ok_or_else(|| format!("--target {url:?}: needs an explicit port"))?
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--target {url:?}: bad port {port:?}"))?;
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| format!("--target {url:?}: host must be a loopback IP or localhost"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "--target {url:?}: only loopback targets are allowed"
        ));
    }
    Ok((
        https,
        SocketAddr::new(ip, port),
        authority.to_owned(),
        path.to_owned(),
    ))
}

impl Cli {
    /// Validates `--connect target`: an http target (the proxy), `HOST:PORT`, `--ca` given, no
    /// client certificate (the caller is identified by the outer connection).
    fn tunnel(&self, https: bool, target: &str) -> Result<Tunnel, String> {
        if https {
            return Err("--connect needs an http:// target (the proxy)".into());
        }
        if self.cert.is_some() || self.key.is_some() {
            return Err("--cert/--key do not apply with --connect".into());
        }
        let bad = || format!("--connect {target:?}: must be HOST:PORT");
        let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || port.parse::<u16>().map_or(true, |p| p == 0)
            || target.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        Ok(Tunnel {
            authority: target.to_owned(),
            ca: self
                .ca
                .clone()
                .ok_or("--connect needs --ca (the CA of the certificate inside the tunnel)")?,
            sni: self.sni.clone().unwrap_or_else(|| host.to_owned()),
        })
    }

    pub fn plan(self) -> Result<Plan, String> {
        let url = self.target.as_deref().ok_or("--target is required")?;
        let (https, addr, authority, path_and_query) = parse_target(url)?;
        let tunnel = match &self.connect {
            None => None,
            Some(target) => Some(self.tunnel(https, target)?),
        };
        let tls = if tunnel.is_some() {
            None
        } else if https {
            let need = |v: Option<PathBuf>, n: &str| {
                v.ok_or_else(|| format!("an https target needs --{n}"))
            };
            let sni = self.sni.clone().unwrap_or_else(|| addr.ip().to_string());
            Some(TlsFiles {
                cert: need(self.cert, "cert")?,
                key: need(self.key, "key")?,
                ca: need(self.ca, "ca")?,
                sni,
            })
        } else {
            if self.cert.is_some() || self.key.is_some() || self.ca.is_some() || self.sni.is_some()
            {
                return Err("--cert/--key/--ca/--sni only apply to an https target".into());
            }
            None
        };
        let host = self
            .host
            .clone()
            .or_else(|| self.sni.clone())
            .or_else(|| tunnel.as_ref().map(|t| t.sni.clone()))
            .unwrap_or_else(|| authority.clone());
        let authorization = match &self.authorization_file {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("--authorization-file {}: {e}", p.display()))?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(format!("--authorization-file {} is empty", p.display()));
                }
                Some(if text.contains(' ') {
                    text.to_owned()
                } else {
                    format!("mtls_pop {text}")
                })
            }
        };
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(format!("--connections must be 1..={MAX_CONNECTIONS}"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!("--timeout-ms must be 1..={MAX_TIMEOUT_MS}"));
        }
        if self.threads == 0 || self.threads > 64 {
            return Err("--threads must be 1..=64".into());
        }
        if self.body_bytes > MAX_BODY_BYTES {
            return Err(format!("--body-bytes must be at most {MAX_BODY_BYTES}"));
        }
        let duration = seconds("duration", self.duration)?;
        let warmup = seconds("warmup", self.warmup)?;
        if duration + warmup > Duration::from_secs_f64(MAX_SECONDS) {
            return Err(format!(
                "--duration plus --warmup must be at most {MAX_SECONDS} s"
            ));
        }
        match &self.mode {
            Mode::Rate { rate, .. } => {
                if !rate.is_finite() || *rate <= 0.0 || *rate > MAX_RATE {
                    return Err(format!("--rate must be above 0 and at most {MAX_RATE}"));
                }
                if duration.is_zero() {
                    return Err("--duration must be above 0".into());
                }
            }
            Mode::Closed if duration.is_zero() => return Err("--duration must be above 0".into()),
            Mode::Idle { hold } => {
                seconds("hold", *hold)?;
            }
            _ => {}
        }
        Ok(Plan {
            mode: self.mode,
            target: Target {
                addr,
                path_and_query,
                authority,
                tls,
                tunnel,
            },
            host,
            authorization,
            connections: self.connections,
            duration,
            warmup,
            timeout: Duration::from_millis(self.timeout_ms),
            threads: self.threads,
            body_bytes: self.body_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_loopback_only() {
        let (https, addr, auth, path) = parse_target("https://127.0.0.1:8443/a?b=1").unwrap();
        assert!(https);
        assert_eq!(addr.port(), 8443);
        assert_eq!(auth, "127.0.0.1:8443");
        assert_eq!(path, "/a?b=1");
        assert_eq!(parse_target("http://localhost:80").unwrap().3, "/");
        assert!(parse_target("http://[::1]:80/").is_ok());
        assert!(parse_target("http://10.0.0.1:80/").is_err());
        assert!(parse_target("http://example.com:80/").is_err());
        assert!(parse_target("ftp://127.0.0.1:80/").is_err());
        assert!(parse_target("http://127.0.0.1/").is_err());
    }

    #[test]
    fn bounds_are_refused_not_clamped() {
        let cli = |args: &[&str]| {
            let mut v = vec!["bench-load"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v).unwrap().plan()
        };
        assert!(
            cli(&[
                "closed",
                "--target",
                "http://127.0.0.1:1/",
                "--duration",
                "601"
            ])
            .is_err()
        );
        assert!(
            cli(&[
                "closed",
                "--target",
                "http://127.0.0.1:1/",
                "--connections",
                "20001"
            ])
            .is_err()
        );
        assert!(cli(&["rate", "--rate", "0", "--target", "http://127.0.0.1:1/"]).is_err());
        assert!(
            cli(&[
                "--target",
                "http://127.0.0.1:1/",
                "burst",
                "--connections",
                "3"
            ])
            .is_ok()
        );
        assert!(cli(&["idle", "--hold", "700", "--target", "http://127.0.0.1:1/"]).is_err());
        let body = |n: usize| {
            cli(&[
                "closed",
                "--target",
                "http://127.0.0.1:1/",
                "--body-bytes",
                &n.to_string(),
            ])
        };
        assert_eq!(body(MAX_BODY_BYTES).unwrap().body_bytes, MAX_BODY_BYTES);
        assert!(body(MAX_BODY_BYTES + 1).is_err());
    }

    #[test]
    fn a_tunnel_goes_through_an_http_target_with_a_ca() {
        let plan = |args: &[&str]| {
            let mut v = vec!["bench-load", "closed", "--target", "http://127.0.0.1:1/x"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v).unwrap().plan()
        };
        let ok = plan(&["--connect", "api.bench.test:443", "--ca", "ca.pem"]).unwrap();
        let tunnel = ok.target.tunnel.unwrap();
        assert_eq!(tunnel.authority, "api.bench.test:443");
        assert_eq!(tunnel.sni, "api.bench.test");
        assert_eq!(ok.host, "api.bench.test");
        assert!(ok.target.tls.is_none());
        assert!(plan(&["--connect", "api.bench.test:443"]).is_err());
        for bad in ["api.bench.test", "api.bench.test:0", ":443", "a b:443"] {
            assert!(
                plan(&["--connect", bad, "--ca", "ca.pem"]).is_err(),
                "{bad}"
            );
        }
        let with_cert = [
            "--connect",
            "h:443",
            "--ca",
            "c",
            "--cert",
            "c",
            "--key",
            "k",
        ];
        assert!(plan(&with_cert).is_err());
        let https = Cli::try_parse_from([
            "bench-load",
            "closed",
            "--target",
            "https://127.0.0.1:1/",
            "--connect",
            "h:443",
            "--ca",
            "c",
        ]);
        assert!(https.unwrap().plan().is_err());
    }
}
