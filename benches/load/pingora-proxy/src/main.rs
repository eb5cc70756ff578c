//! pingora-bench-proxy: a minimal pingora reverse proxy, the pingora peer of popgate's load
//! harness (issue 7). Plain HTTP/1.1 in, mutual TLS out to one upstream, with a fixed
//! Authorization header. See README.md for why it is configured the way it is.
#![forbid(unsafe_code)]

mod args;
mod creds;
mod logger;
mod proxy;

use std::process::ExitCode;

use http::HeaderValue;
use pingora::connectors::ConnectorOptions;
use pingora::prelude::HttpPeer;
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

/// Exit status for bad arguments or unreadable/invalid files, as the harness expects.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    logger::init();
    match prepare() {
        Ok(server) => server.run_forever(),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Everything that can fail on bad input happens here, before pingora starts (it panics on some).
fn prepare() -> Result<Server, String> {
    let args = args::parse(std::env::args().skip(1))?;
    let creds = creds::load(&args.ca, &args.cert, &args.key, &args.authorization_file)?;
    let host = HeaderValue::from_str(&args.sni)
        .map_err(|_| format!("--sni {:?} is not a valid Host value", args.sni))?;
    // pingora reports a busy port only from inside its runtime; check it here for a clear error.
    // The probe socket is closed at once, and pingora binds with SO_REUSEADDR.
    std::net::TcpListener::bind(args.listen)
        .map_err(|e| format!("--listen {}: cannot bind: {e}", args.listen))?;

    let conf = ServerConf {
        threads: args.threads,
        // Not a daemon, no upgrade socket, no config file: the defaults. Pool size stays at
        // pingora's default (128 idle upstream connections per thread), far above what the
        // harness's client concurrency needs, so the pool never evicts.
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Connector-wide CA and client certificate: pingora builds one rustls config at start-up and
    // shares it (and its session cache) across every upstream connection.
    let mut client = ConnectorOptions::from_server_conf(&server.configuration);
    client.ca_file = Some(creds.ca);
    client.cert_key_file = Some((creds.cert, creds.key));

    // `HttpPeer::new` unwraps `to_socket_addrs()`, which cannot fail for an already parsed SocketAddr.
    let peer = HttpPeer::new(args.upstream, true, args.sni);
    let proxy = proxy::BenchProxy::new(peer, creds.authorization, host);
    let mut service = ProxyServiceBuilder::new(&server.configuration, proxy)
        .name("pingora-bench-proxy")
        .client_options(client)
        .build();
    service.add_tcp(&args.listen.to_string());
    server.add_service(service);
    Ok(server)
}
