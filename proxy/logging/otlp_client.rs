//! The HTTP client the OTLP exporter posts span batches with: one HTTP/1.1 connection per batch
//! (a batch leaves every few seconds at most), plain or TLS (the system's roots and the CAs
//! configured for it), run on popgate's own Tokio runtime so the exporter's background thread
//! needs no runtime of its own. A failed export is one warning naming the step that failed
//! (connect, TLS handshake, exchange) and the collector; requests never wait for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use opentelemetry_http::{HttpClient, HttpError};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// One export (connect, TLS, send, answer) must finish within this: a stuck collector must not
/// hold the exporter's thread, which then drops the batch and carries on.
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a collector's answer read: OTLP answers are a small status message.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Posts OTLP requests on `runtime`; `tls` for `https://` endpoints.
#[derive(Clone)]
pub(crate) struct OtlpClient {
    runtime: Handle,
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpClient")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl OtlpClient {
    /// A client spawning its exchanges on `runtime`, trusting the system's roots and `extra`
    /// (CA certificates given for the collector).
    pub(crate) fn new(runtime: Handle, extra: &[CertificateDer<'static>]) -> Result<Self, String> {
        Ok(Self {
            runtime,
            tls: Some(tls_config(extra)?),
        })
    }
}

/// A TLS client config with the system's trusted roots and `extra` (no client certificate).
fn tls_config(extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system root rustls cannot use is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a CA certificate for the OTLP endpoint is unusable: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up for the OTLP endpoint: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

type Answer = Result<Response<Bytes>, HttpError>;

impl HttpClient for OtlpClient {
    // The `async_trait` desugaring, written out (the trait is declared with `#[async_trait]`).
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let tls = self.tls.clone();
        // The timer is made inside the task: the exporter's thread has no runtime context.
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, post(tls, request)).await });
        Box::pin(async move {
            let answer = match task.await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => {
                    Err(format!("no answer within {} s", EXPORT_TIMEOUT.as_secs()).into())
                }
                Err(join) => Err(join.into()),
            };
            match &answer {
                Ok(r) if !r.status().is_success() => {
                    tracing::warn!(status = r.status().as_u16(), "OTLP collector refused spans");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "OTLP span export failed"),
            }
            answer
        })
    }
}

/// Sends `request` on a new connection to its URI's host and reads the answer (bounded).
async fn post(tls: Option<Arc<ClientConfig>>, request: Request<Bytes>) -> Answer {
    let uri = request.uri().clone();
    let host = uri.host().ok_or("OTLP endpoint without a host")?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("OTLP endpoint is neither http:// nor https://".into()),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("cannot connect to the OTLP collector {host}:{port}: {e}"))?;
    let request = origin_form(request, &uri)?;
    if https {
        let tls = tls.ok_or("no TLS configuration")?;
        let name = ServerName::try_from(bare_host.to_owned())?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                format!(
                    "TLS handshake with the OTLP collector {host}:{port} failed: {e} (its CA must be \
                     a system root, in network.extra_ca_files or in OTEL_EXPORTER_OTLP_CERTIFICATE)"
                )
            })?;
        exchange(stream, request).await
    } else {
        exchange(tcp, request).await
    }
}

/// The request with an origin-form target and a `Host` header, as HTTP/1.1 sends it.
fn origin_form(request: Request<Bytes>, uri: &Uri) -> Result<Request<Full<Bytes>>, HttpError> {
    let (mut parts, body) = request.into_parts();
    let authority = uri.authority().ok_or("OTLP endpoint without a host")?;
    parts
        .headers
        .insert(header::HOST, HeaderValue::from_str(authority.as_str())?);
    parts.uri = uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
    Ok(Request::from_parts(parts, Full::new(body)))
}

/// One HTTP/1.1 exchange on `io`.
async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> Answer
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The connection is driven beside the request; it ends when the answer has been read.
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok(Response::from_parts(parts, body))
}
