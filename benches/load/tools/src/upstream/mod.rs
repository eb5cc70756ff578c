//! `bench-upstream`: the token-bound mTLS service every proxy in the harness forwards to.

mod service;
pub mod stats;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::cli::fail;
use crate::tls;
use stats::Stats;

/// A failed accept (e.g. out of file descriptors) is retried after this pause instead of spinning
/// on the core the proxy under test shares.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Largest response body: the harness uses tiny bodies; a cap keeps a typo from costing memory.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A TLS handshake that takes longer than this is dropped (a stuck client must not hold a task).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "bench-upstream",
    about = "mTLS token-bound upstream for the popgate load harness"
)]
pub struct Args {
    /// Address to listen on (loopback), e.g. 127.0.0.1:0.
    #[arg(long)]
    listen: SocketAddr,
    /// Server certificate chain (PEM, leaf first).
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// CA (PEM) that client certificates must chain to; a client certificate is required.
    #[arg(long)]
    client_ca: PathBuf,
    /// Tokio worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Size of the fixed 200 response body.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// Plain-HTTP stats endpoint address (GET /stats, POST /reset).
    #[arg(long)]
    stats_listen: SocketAddr,
    /// Accept any Authorization (debugging only: disables the token-binding check).
    #[arg(long)]
    accept_any_token: bool,
    /// Offer only http/1.1 by ALPN (default: h2 and http/1.1), so every proxy under test speaks
    /// HTTP/1.1 to the upstream.
    #[arg(long)]
    http1_only: bool,
}

/// Parses the command line, binds, prints `listening <addr> stats <addr>` and serves forever.
pub fn main() {
    let args = Args::parse();
    crate::cli::require_loopback(&[args.listen, args.stats_listen]);
    if args.body_bytes > MAX_BODY_BYTES {
        fail(format!("--body-bytes is at most {MAX_BODY_BYTES}"));
    }
    if args.threads == 0 || args.threads > 64 {
        fail("--threads must be 1..=64");
    }
    // 10 000 idle client connections in direct mode need as many descriptors here.
    crate::cli::raise_fd_limit(0);
    let config = server_config(&args).unwrap_or_else(|e| fail(e));
    let runtime =
        crate::cli::runtime(args.threads).unwrap_or_else(|e| fail(format!("runtime: {e}")));
    runtime.block_on(run(args, config));
}

fn server_config(args: &Args) -> Result<ServerConfig, String> {
    let provider = tls::provider();
    let roots = tls::load_roots(&args.client_ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls::load_certs(&args.cert)?, tls::load_key(&args.key)?)
        .map_err(|e| format!("server certificate/key: {e}"))?;
    config.alpn_protocols = if args.http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(config)
}

async fn run(args: Args, config: ServerConfig) {
    let listener = TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| fail(format!("bind {}: {e}", args.listen)));
    let stats_listener = TcpListener::bind(args.stats_listen)
        .await
        .unwrap_or_else(|e| fail(format!("bind {}: {e}", args.stats_listen)));
    let (Ok(addr), Ok(stats_addr)) = (listener.local_addr(), stats_listener.local_addr()) else {
        fail("cannot read the bound addresses");
    };
    println!("listening {addr} stats {stats_addr}");
    // The harness waits for this line; an unflushed pipe would stall it.
    if std::io::stdout().flush().is_err() {
        fail("cannot write to stdout");
    }

    let stats = Arc::new(Stats::default());
    tokio::spawn(stats::serve(stats_listener, stats.clone()));

    let shared = Arc::new(service::Shared {
        stats: stats.clone(),
        ok_body: Bytes::from(vec![b'x'; args.body_bytes]),
        accept_any_token: args.accept_any_token,
    });
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            continue;
        };
        // Nagle would delay small responses behind the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let _open = stats::OpenGuard::new(shared.stats.clone());
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                _ => {
                    shared.stats.tls_handshake_failures.fetch_add(1, Relaxed);
                    return;
                }
            };
            shared.stats.tls_handshakes.fetch_add(1, Relaxed);
            service::serve_connection(tls, shared).await;
        });
    }
}
