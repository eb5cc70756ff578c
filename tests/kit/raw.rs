//! Helpers for the hardening tests: popgate in front of a counting upstream, tuned limits, and
//! raw-socket exchanges that report whether popgate closed the connection.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use popgate::dataplane::ProxySettings;
use popgate::dataplane::limits::RequestLimits;
use popgate::dataplane::listener::ConnectionSettings;
use popgate::net::client::UpstreamSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::dataplane::*;

/// The routed host.
pub const GRAPH: &str = "graph.microsoft.com";
/// The body limit the hardening proxies run with.
pub const BODY_LIMIT: u64 = 1024;
/// Most bytes a raw exchange reads back; popgate's answers are far smaller.
const MAX_READ: usize = 1 << 20;

/// popgate with one route to a counting upstream; keeps its temp dir and PKI alive.
pub struct Rig {
    pub proxy: TestProxy,
    pub upstream: TestUpstream,
    _dir: tempfile::TempDir,
}

/// Settings with a body limit and otherwise the defaults (which are what the tests exercise).
pub fn hardened(connection: impl FnOnce(&mut ConnectionSettings)) -> ProxySettings {
    let mut settings = ProxySettings {
        connection: ConnectionSettings {
            limits: RequestLimits {
                max_body_bytes: Some(BODY_LIMIT),
                ..RequestLimits::default()
            },
            ..ConnectionSettings::default()
        },
        ..ProxySettings::default()
    };
    connection(&mut settings.connection);
    settings
}

/// popgate in-process (with `settings`) and one route, `graph` ([`GRAPH`]), to the upstream at
/// `upstream` (trusted through `pki`, its name resolved to that address), with a PoP token
/// (`marker` among its claims) bound to a client certificate of `pki`; `tune` adjusts the
/// upstream settings first. Files go in `dir`.
pub async fn graph_proxy(
    pki: &TestPki,
    dir: &Path,
    upstream: SocketAddr,
    marker: &str,
    tune: impl FnOnce(&mut UpstreamSettings),
    settings: ProxySettings,
) -> TestProxy {
    let binding = pki.binding("graph-client");
    let token = pop_token(dir, &binding, marker);
    let mut upstream_settings =
        pki.upstream_settings(dir, &[("graph.microsoft.com:443", upstream)]);
    tune(&mut upstream_settings);
    start_proxy(
        vec![(route("graph", Some(GRAPH), None), Some(token))],
        &upstream_settings,
        settings,
    )
    .await
}

/// Starts the upstream and popgate with `settings`.
pub async fn rig(settings: ProxySettings) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("hardening-ca");
    let upstream = TestUpstream::start(&pki, &pki, true).await;
    let proxy = graph_proxy(
        &pki,
        dir.path(),
        upstream.addr,
        "hardening",
        |_| {},
        settings,
    )
    .await;
    Rig {
        proxy,
        upstream,
        _dir: dir,
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
pub struct Exchange {
    /// Everything read, lossily as text.
    pub text: String,
    /// The connection ended (EOF or reset) rather than staying open.
    pub closed: bool,
}

impl Exchange {
    /// The status code of the first response (0 if none).
    pub fn status(&self) -> u16 {
        self.text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    /// The body of the first response.
    pub fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }

    /// The first response's body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.body())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

/// Writes `bytes` on a fresh connection and reads until popgate closes it. A connection that
/// stays open fails the test at the [`STEP`] bound.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // popgate may answer and close before reading everything; a failed write is not the point.
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream).await
}

/// Reads until EOF or reset, bounded by [`STEP`] and [`MAX_READ`].
pub async fn read_until_closed(stream: &mut TcpStream) -> Exchange {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = bounded(async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.len() > MAX_READ {
                        return false;
                    }
                }
            }
        }
    })
    .await;
    Exchange {
        text: String::from_utf8_lossy(&got).into_owned(),
        closed,
    }
}

/// Reads one response head (up to the blank line) without waiting for more.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    bounded(async {
        while !got.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => got.push(byte[0]),
                _ => break,
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A header-read timeout short enough for a test, long enough for any loopback request.
pub const TEST_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
