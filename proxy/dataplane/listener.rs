//! TCP listeners: plain (HTTP/1.1, and h2c with prior knowledge) and TLS (h1 or h2 by ALPN,
//! optionally requiring a client certificate). Here are their settings and TLS configuration;
//! the accept loop is `serve.rs`, one connection is `connection.rs`.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::activity::Deadlines;
use super::connection::{CallerService, serve_tcp};
use super::limits::RequestLimits;
use super::serve;
use crate::config::limits::{
    DEFAULT_FIRST_BYTE_TIMEOUT, DEFAULT_H2_KEEP_ALIVE_INTERVAL, DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
    DEFAULT_H2_MAX_CONCURRENT_STREAMS, DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS,
    DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS, DEFAULT_H2_PREFACE_TIMEOUT,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_BODY_TIMEOUT, DEFAULT_RESPONSE_BODY_TIMEOUT, DEFAULT_TLS_HANDSHAKE_TIMEOUT,
};

/// Why a TLS listener configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    /// Listener certificate/key rejected: `0`.
    #[error("listener certificate/key rejected: {0}")]
    Certificate(rustls::Error),
    /// Listener client CA set cannot verify clients: `0`.
    #[error("listener client CA set cannot verify clients: {0}")]
    ClientCa(String),
    /// Cannot build the TLS server configuration: `0`.
    #[error("cannot build the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a listener's TLS config: h2 and http/1.1 by ALPN; when `client_ca` is given, callers
/// must present a certificate issued by one of those CAs.
pub fn server_tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, ListenerTlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ListenerTlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(ListenerTlsError::Certificate)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Per-connection settings for the accept loops.
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// Bound on a caller's TLS handshake, from accept.
    pub tls_handshake_timeout: Duration,
    /// Bound from accept (or the TLS handshake) to the caller's first byte.
    pub first_byte_timeout: Duration,
    /// Bound from the first byte until the protocol is known (HTTP/2: preface and first
    /// SETTINGS frame).
    pub h2_preface_timeout: Duration,
    /// Bound on receiving an HTTP/1 request head (idle keep-alive included).
    pub header_read_timeout: Duration,
    /// How long a connection may stay with no request in flight (HTTP/1 and HTTP/2).
    pub keep_alive_timeout: Duration,
    /// Bound on an HTTP/1 request body going without a byte while popgate reads it.
    pub request_body_timeout: Duration,
    /// Bound on a write to a caller that stopped reading.
    pub response_body_timeout: Duration,
    /// Most open caller connections per listener; further callers wait in the listen backlog.
    pub max_connections: usize,
    /// Limits on each request.
    pub limits: RequestLimits,
    /// HTTP/2 settings.
    pub h2: H2Settings,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            h2_preface_timeout: DEFAULT_H2_PREFACE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            request_body_timeout: DEFAULT_REQUEST_BODY_TIMEOUT,
            response_body_timeout: DEFAULT_RESPONSE_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            limits: RequestLimits::default(),
            h2: H2Settings::default(),
        }
    }
}

impl ConnectionSettings {
    /// The defaults with every key set in the config's `limits:` applied.
    pub fn with_limits(limits: &crate::config::model::Limits) -> Self {
        let mut s = Self::default();
        let l = &mut s.limits;
        l.max_headers = limits.max_headers.unwrap_or(l.max_headers);
        l.max_header_bytes = limits.max_header_bytes.unwrap_or(l.max_header_bytes);
        l.max_uri_bytes = limits.max_uri_bytes.unwrap_or(l.max_uri_bytes);
        l.max_body_bytes = limits.max_body_bytes.or(l.max_body_bytes);
        s.max_connections = limits.max_connections.unwrap_or(s.max_connections);
        s.header_read_timeout = limits.header_read_timeout.unwrap_or(s.header_read_timeout);
        s.first_byte_timeout = limits.first_byte_timeout.unwrap_or(s.first_byte_timeout);
        s.h2_preface_timeout = limits.h2_preface_timeout.unwrap_or(s.h2_preface_timeout);
        s.tls_handshake_timeout = limits
            .tls_handshake_timeout
            .unwrap_or(s.tls_handshake_timeout);
        s.keep_alive_timeout = limits.keep_alive_timeout.unwrap_or(s.keep_alive_timeout);
        s.request_body_timeout = limits
            .request_body_timeout
            .unwrap_or(s.request_body_timeout);
        s.response_body_timeout = limits
            .response_body_timeout
            .unwrap_or(s.response_body_timeout);
        s.h2.max_concurrent_streams = limits
            .h2_max_concurrent_streams
            .unwrap_or(s.h2.max_concurrent_streams);
        s
    }

    /// The deadline of each phase of a caller connection.
    pub(crate) fn deadlines(&self) -> Deadlines {
        Deadlines {
            tls_handshake: self.tls_handshake_timeout,
            first_byte: self.first_byte_timeout,
            preface: self.h2_preface_timeout,
            keep_alive: self.keep_alive_timeout,
        }
    }
}

/// HTTP/2 limits for caller connections.
#[derive(Clone, Debug)]
pub struct H2Settings {
    /// Streams open at once per connection (advertised in SETTINGS; more are refused).
    pub max_concurrent_streams: u32,
    /// Streams reset by the caller before being accepted, before GOAWAY (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// Streams reset by popgate for caller errors, before GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// PING interval on caller connections.
    pub keep_alive_interval: Duration,
    /// Time to answer a PING.
    pub keep_alive_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            max_pending_accept_reset_streams: DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS,
            max_local_error_reset_streams: DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS,
            keep_alive_interval: DEFAULT_H2_KEEP_ALIVE_INTERVAL,
            keep_alive_timeout: DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
        }
    }
}

/// Serves a TCP listener (TLS when `tls` is given) until shutdown, then drains (see
/// [`serve::serve`]). Returns whether every connection closed within the drain.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: CallerService,
    options: serve::Options,
) -> bool {
    serve::serve(listener, options, move |stream, peer, watcher, activity| {
        serve_tcp(
            stream,
            peer,
            tls.clone(),
            service.clone(),
            watcher,
            activity,
        )
    })
    .await
}
