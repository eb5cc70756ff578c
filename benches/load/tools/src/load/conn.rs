//! Opening one keep-alive HTTP/1.1 connection (plain, mTLS for the direct floor, or TLS inside a
//! CONNECT tunnel through a proxy) and sending one request on it from a pre-built template.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use super::args::{Plan, Target, Tunnel};
use crate::tls;

/// A GET's empty body, or `--body-bytes` of a POST (one buffer shared by every request).
pub type Body = Full<Bytes>;

/// Why a request did not produce a response; reported as counts in `error_kinds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Tls,
    Timeout,
    Io,
}

impl Failure {
    pub const ALL: [Failure; 4] = [
        Failure::Connect,
        Failure::Tls,
        Failure::Timeout,
        Failure::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Tls => "tls",
            Failure::Timeout => "timeout",
            Failure::Io => "io",
        }
    }
}

/// Everything needed to open connections and build requests, built once.
pub struct Connector {
    target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `--connect`: the CONNECT request's bytes, sent before `tls` (then the TLS inside it).
    connect_head: Option<Bytes>,
    template: Request<Body>,
}

/// Bound on the proxy's answer head to a CONNECT (a `200` head is a few dozen bytes).
const MAX_CONNECT_ANSWER: usize = 16 * 1024;

/// One open connection: the request handle and the task driving the socket.
pub struct Conn {
    sender: SendRequest<Body>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    /// False once the peer closed the connection (or it failed).
    pub fn is_open(&self) -> bool {
        !self.driver.is_finished() && !self.sender.is_closed()
    }
}

impl Connector {
    pub fn new(plan: &Plan) -> Result<Arc<Self>, String> {
        let tls = match (&plan.target.tls, &plan.target.tunnel) {
            (None, None) => None,
            (_, Some(tunnel)) => Some(Self::tunnel_tls(tunnel)?),
            (Some(files), None) => Some(tls::mtls_client(
                &files.ca,
                &files.cert,
                &files.key,
                &files.sni,
            )?),
        };
        // An empty `Full` is at its end before the first poll: hyper sends a GET without a body
        // (no `content-length`), byte for byte what an `Empty` body sent.
        let (method, body) = match plan.body_bytes {
            0 => (Method::GET, Bytes::new()),
            n => (Method::POST, Bytes::from(vec![b'x'; n])),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(plan.target.path_and_query.as_str())
            .header(
                header::HOST,
                HeaderValue::from_str(&plan.host).map_err(|_| "bad --host value".to_owned())?,
            );
        if let Some(auth) = &plan.authorization {
            let mut value = HeaderValue::from_str(auth).map_err(|_| {
                "the authorization file holds characters not allowed in a header".to_owned()
            })?;
            // Keeps the token out of any Debug output of the request.
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let template = builder
            .body(Full::new(body))
            .map_err(|e| format!("bad target path: {e}"))?;
        let connect_head = plan.target.tunnel.as_ref().map(|t| {
            let a = &t.authority;
            Bytes::from(format!("CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n"))
        });
        Ok(Arc::new(Self {
            target: plan.target.clone(),
            tls,
            connect_head,
            template,
        }))
    }

    /// The TLS client inside a tunnel: trusts `--ca` (the proxy's interception CA), presents no
    /// certificate, offers HTTP/1.1 only.
    fn tunnel_tls(tunnel: &Tunnel) -> Result<(TlsConnector, ServerName<'static>), String> {
        let mut config = ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(tls::load_roots(&tunnel.ca)?)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(tunnel.sni.clone())
            .map_err(|e| format!("--sni {:?}: {e}", tunnel.sni))?;
        Ok((TlsConnector::from(Arc::new(config)), name))
    }

    /// Sends the CONNECT head and reads the proxy's answer up to its blank line (byte by byte, so
    /// nothing of the tunnel is consumed); anything but a `200` is a failed connect.
    async fn open_tunnel(tcp: &mut TcpStream, head: &[u8]) -> Result<(), Failure> {
        tcp.write_all(head).await.map_err(|_| Failure::Connect)?;
        let mut answer = Vec::with_capacity(64);
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() >= MAX_CONNECT_ANSWER {
                return Err(Failure::Connect);
            }
            let byte = tcp.read_u8().await.map_err(|_| Failure::Connect)?;
            answer.push(byte);
        }
        let status = answer.split(|&b| b == b' ').nth(1);
        if answer.starts_with(b"HTTP/1.") && status == Some(b"200".as_slice()) {
            Ok(())
        } else {
            Err(Failure::Connect)
        }
    }

    /// Opens one connection (TCP, then the CONNECT tunnel when asked, then TLS when direct or
    /// tunnelled, then the HTTP/1.1 handshake).
    pub async fn connect(&self) -> Result<Conn, Failure> {
        let mut tcp = TcpStream::connect(self.target.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        // Nagle would hold the request behind the previous response's delayed ACK.
        let _ = tcp.set_nodelay(true);
        if let Some(head) = &self.connect_head {
            Self::open_tunnel(&mut tcp, head).await?;
        }
        match &self.tls {
            None => Self::handshake(tcp).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|_| Failure::Tls)?;
                Self::handshake(stream).await
            }
        }
    }

    async fn handshake<S>(io: S) -> Result<Conn, Failure>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|_| Failure::Io)?;
        let driver = tokio::spawn(async move {
            // The connection ends with an error when the peer resets it; the next send sees it.
            let _ = connection.await;
        });
        Ok(Conn { sender, driver })
    }

    /// Sends one request and reads the whole response body; returns the status code.
    /// On any failure the connection must not be reused (a request may still be in flight).
    pub async fn send(&self, conn: &mut Conn, timeout: Duration) -> Result<u16, Failure> {
        let exchange = async {
            conn.sender.ready().await.map_err(|_| Failure::Io)?;
            let resp = conn
                .sender
                .send_request(self.template.clone())
                .await
                .map_err(|_| Failure::Io)?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                frame.map_err(|_| Failure::Io)?;
            }
            Ok(status)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }
}
