//! A small forward proxy that speaks `CONNECT` (as a corporate proxy does): it records each
//! CONNECT target and the `Proxy-Authorization` it came with, resolves the target through the
//! same `host:port` → loopback map popgate's `network.resolve` uses (so names like
//! `graph.microsoft.com:443` stay on loopback), answers 200 and splices bytes both ways. It can
//! demand credentials (407 without the right ones) and refuse chosen targets (403). Targets it
//! cannot map get 502: it never dials anything but loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Bound on a CONNECT head (the test proxy reads no more).
const MAX_HEAD: usize = 8 * 1024;
/// Bound on reading a client's head and on dialling the target.
const STEP: Duration = Duration::from_secs(10);

/// One CONNECT the proxy received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The request target (`host:port`).
    pub target: String,
    /// The `Proxy-Authorization` header value, if any.
    pub authorization: Option<String>,
    /// The status the proxy answered.
    pub status: u16,
}

#[derive(Default)]
struct Rules {
    resolve: HashMap<String, SocketAddr>,
    /// `Basic …` the proxy demands (407 otherwise).
    required: Option<String>,
    /// Targets answered with 403.
    forbidden: Vec<String>,
}

/// A running CONNECT proxy on 127.0.0.1.
pub struct ConnectProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl ConnectProxy {
    /// A proxy tunnelling to every mapped target. `resolve` maps `host:port` (lowercase) to a
    /// loopback address.
    pub async fn start(resolve: &[(&str, SocketAddr)]) -> ConnectProxy {
        Self::start_with(resolve, None, &[]).await
    }

    /// A proxy that answers 407 unless `Proxy-Authorization` is `required`, and 403 to the
    /// `forbidden` targets.
    pub async fn start_with(
        resolve: &[(&str, SocketAddr)],
        required: Option<String>,
        forbidden: &[&str],
    ) -> ConnectProxy {
        let mut rules = Rules {
            required,
            forbidden: forbidden.iter().map(|s| s.to_string()).collect(),
            ..Rules::default()
        };
        for (host_port, addr) in resolve {
            assert!(
                addr.ip().is_loopback(),
                "the test proxy only dials loopback"
            );
            rules.resolve.insert(host_port.to_ascii_lowercase(), *addr);
        }
        let rules = Arc::new(rules);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let rules = Arc::clone(&rules);
                    let seen = Arc::clone(&seen);
                    tokio::spawn(async move {
                        let _ = serve(client, &rules, &seen).await;
                    });
                }
            })
        };
        ConnectProxy { addr, seen, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every CONNECT so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The distinct targets tunnelled (answered 200), sorted.
    pub fn tunnelled(&self) -> Vec<String> {
        let mut targets: Vec<String> = self
            .seen()
            .into_iter()
            .filter(|s| s.status == 200)
            .map(|s| s.target)
            .collect();
        targets.sort();
        targets.dedup();
        targets
    }
}

async fn serve(
    mut client: TcpStream,
    rules: &Rules,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let Ok(Ok(head)) = tokio::time::timeout(STEP, read_head(&mut client)).await else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_string());
    let upstream = rules.resolve.get(&target.to_ascii_lowercase()).copied();
    let status = if method != "CONNECT" {
        405
    } else if rules.required.is_some() && authorization != rules.required {
        407
    } else if rules.forbidden.iter().any(|f| f == target) {
        403
    } else if upstream.is_none() {
        502
    } else {
        200
    };
    let upstream = match (status, upstream) {
        (200, Some(addr)) => match tokio::time::timeout(STEP, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => Some(s),
            _ => None,
        },
        _ => None,
    };
    let status = if status == 200 && upstream.is_none() {
        502
    } else {
        status
    };
    seen.lock().unwrap().push(Seen {
        target: target.to_string(),
        authorization,
        status,
    });
    let reason = match status {
        200 => "Connection established",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        _ => "Bad Gateway",
    };
    let mut answer = format!("HTTP/1.1 {status} {reason}\r\n");
    if status == 407 {
        answer.push_str("Proxy-Authenticate: Basic realm=\"corp\"\r\n");
    }
    if status != 200 {
        answer.push_str("Content-Length: 0\r\nConnection: close\r\n");
    }
    answer.push_str("\r\n");
    client.write_all(answer.as_bytes()).await?;
    if let Some(mut upstream) = upstream {
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    }
    Ok(())
}

async fn read_head(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD || client.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}
