//! `bench-floor`: the least work per request that any HTTP/1.1 proxy doing the harness's job can
//! do with the same parts as popgate (tokio, rustls with aws-lc-rs): read a caller's GET, write
//! one upstream head with the token over a kept-alive mTLS connection, read the answer and write
//! its bytes back verbatim. No header map, no routing, no metrics, no timeouts, no limits beyond
//! fixed buffers: it is not a proxy anyone should run, it is the floor under one.
//!
//! Why it exists: issue 13 asks for 1.2x the requests per CPU-second of the best of nginx and
//! HAProxy. Measured beside them in one run, this tool says how much of that ratio is reachable
//! at all on the machine with these parts, and so how much of popgate's distance to it is
//! popgate's own (benches/MICRO.md).
//!
//! Thread per core like popgate: `--threads` current-thread runtimes, each with its own
//! `SO_REUSEPORT` listener; each caller connection dials its own upstream connection on its first
//! request (after the harness's warm-up every connection is open).

mod relay;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use rustls_pki_types::ServerName;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use crate::cli::fail;
use crate::tls;

/// Pending connections per listener: the harness opens at most a few hundred at once.
const LISTEN_BACKLOG: u32 = 1024;

#[derive(Parser, Debug)]
#[command(
    name = "bench-floor",
    about = "the least an HTTP/1.1 mTLS proxy does per request (a yardstick)"
)]
pub struct Args {
    /// Address to listen on (loopback).
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream's address (loopback).
    #[arg(long)]
    upstream: SocketAddr,
    /// The upstream's TLS name, also sent as `Host`.
    #[arg(long)]
    sni: String,
    /// CA (PEM) of the upstream's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM) presented to the upstream.
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// File holding the `Authorization` value sent upstream (first line).
    #[arg(long)]
    authorization_file: PathBuf,
    /// Threads, each a current-thread runtime with its own listener.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// What every connection of every thread shares.
pub(crate) struct Upstream {
    pub addr: SocketAddr,
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
    /// `host: ...\r\nauthorization: ...\r\n`, written after each request line.
    pub fixed_headers: Vec<u8>,
}

pub fn main() {
    let args = Args::parse();
    crate::cli::require_loopback(&[args.listen, args.upstream]);
    if args.threads == 0 || args.threads > 64 {
        fail("--threads must be 1..=64");
    }
    crate::cli::raise_fd_limit(0);
    let upstream = Arc::new(upstream(&args).unwrap_or_else(|e| fail(e)));
    let mut listeners = Vec::with_capacity(args.threads);
    let mut addr = args.listen;
    // tokio's `TcpSocket::listen` registers with a reactor: a runtime only for making them.
    let setup = crate::cli::runtime(1).unwrap_or_else(|e| fail(format!("runtime: {e}")));
    let entered = setup.enter();
    for _ in 0..args.threads {
        // The first bind picks the port (`:0`); the others join it through SO_REUSEPORT.
        let listener = bind(addr).unwrap_or_else(|e| fail(format!("bind {addr}: {e}")));
        addr = listener
            .local_addr()
            .unwrap_or_else(|e| fail(format!("local address: {e}")));
        listeners.push(listener);
    }
    drop(entered);
    println!("listening {addr}");
    if std::io::stdout().flush().is_err() {
        fail("cannot write to stdout");
    }
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let runtime =
                    crate::cli::runtime(1).unwrap_or_else(|e| fail(format!("runtime: {e}")));
                runtime.block_on(relay::serve(listener, upstream));
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    // A tokio listener belongs to the runtime it was made in: hand a std one to each thread.
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

fn upstream(args: &Args) -> Result<Upstream, String> {
    let (connector, name) = tls::mtls_client(&args.ca, &args.cert, &args.key, &args.sni)?;
    let token = std::fs::read_to_string(&args.authorization_file)
        .map_err(|e| format!("cannot read {}: {e}", args.authorization_file.display()))?;
    let token = token.lines().next().unwrap_or("").trim();
    if token.is_empty() || token.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "{}: no usable authorization value on its first line",
            args.authorization_file.display()
        ));
    }
    let fixed_headers = format!("host: {}\r\nauthorization: {token}\r\n", args.sni).into_bytes();
    Ok(Upstream {
        addr: args.upstream,
        connector,
        name,
        fixed_headers,
    })
}
