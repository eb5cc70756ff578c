//! Starting and stopping the data plane: bind every listener, run the accept loops, drain on
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::connection::{CallerService, Http};
use super::listener::{ConnectionSettings, accept_loop};
use super::request::{DataplaneTable, Forwarder};
use super::serve::{self, AtCap, ConnectionCap, Drain};
use super::unix_listener::{self, UnixListenerSpec};
use super::workers::{Loop, Workers, bind_reuseport};

pub use crate::config::limits::DEFAULT_DRAIN_TIMEOUT;
use crate::config::limits::DEFAULT_REQUEST_TIMEOUT;

/// One listening socket.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// Where to listen (port 0 picks a free port; see [`ProxyHandle::local_addrs`]).
    pub addr: SocketAddr,
    /// `None`: plain HTTP/1.1 and h2c; `Some`: TLS (see `listener::server_tls_config`).
    pub tls: Option<Arc<ServerConfig>>,
    /// CONNECT interception (`intercept:`); `None`: CONNECT is refused (405).
    pub intercept: Option<Arc<super::intercept::Interceptor>>,
}

/// Data plane settings.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Bound from sending a request upstream to its response head.
    pub request_timeout: Duration,
    /// Caller connection settings.
    pub connection: ConnectionSettings,
    /// How long shutdown waits for open connections.
    pub drain_timeout: Duration,
    /// `Some(n)`: serve on `n` worker threads of their own, each with its own runtime and its own
    /// `SO_REUSEPORT` socket per TCP listener (see `workers.rs`); `None`: serve on the runtime
    /// that starts the proxy.
    pub workers: Option<usize>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connection: ConnectionSettings::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            workers: None,
        }
    }
}

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Cannot listen on `addr`: `source`.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Cannot listen on unix socket `path`: `source`.
    #[error("cannot listen on unix socket {path}: {source}")]
    BindUnix {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// No listener configured.
    #[error("no listener configured")]
    NoListener,
    /// Cannot start the worker threads: `0`.
    #[error("cannot start the data-plane worker threads: {0}")]
    Workers(std::io::Error),
}

/// The data plane.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Binds every listener (all or nothing), then serves until [`ProxyHandle::shutdown`] or until
    /// the handle is dropped. The table is read per request, so storing a new table into `table`
    /// takes effect on the next request.
    pub async fn start(
        listeners: Vec<ListenerSpec>,
        table: Arc<ArcSwap<DataplaneTable>>,
        settings: ProxySettings,
    ) -> Result<ProxyHandle, StartError> {
        Self::start_with_unix(listeners, Vec::new(), table, settings).await
    }

    /// Like [`Proxy::start`], with Unix-socket listeners as well (see
    /// [`ProxyHandle::unix_paths`]).
    pub async fn start_with_unix(
        listeners: Vec<ListenerSpec>,
        unix: Vec<UnixListenerSpec>,
        table: Arc<ArcSwap<DataplaneTable>>,
        settings: ProxySettings,
    ) -> Result<ProxyHandle, StartError> {
        if listeners.is_empty() && unix.is_empty() {
            return Err(StartError::NoListener);
        }
        let workers = match settings.workers {
            None => None,
            Some(n) => Some(Workers::build(n).map_err(StartError::Workers)?),
        };
        let mut unix_bound = Vec::with_capacity(unix.len());
        for spec in unix {
            // Unix sockets have no `SO_REUSEPORT`: each is served by the first worker.
            let _entered = workers.as_ref().map(|w| w.enter(0));
            let socket = unix_listener::bind(&spec).map_err(|source| StartError::BindUnix {
                path: spec.path.clone(),
                source,
            })?;
            unix_bound.push((socket, spec.path));
        }
        let mut bound = Vec::with_capacity(listeners.len());
        for spec in listeners {
            let bind_error = |source| StartError::Bind {
                addr: spec.addr,
                source,
            };
            let sockets = match &workers {
                None => vec![TcpListener::bind(spec.addr).await.map_err(bind_error)?],
                Some(w) => {
                    let group = bind_reuseport(spec.addr, w.len()).map_err(bind_error)?;
                    let mut sockets = Vec::with_capacity(group.len());
                    for (k, socket) in group.into_iter().enumerate() {
                        let _entered = w.enter(k);
                        sockets.push(TcpListener::from_std(socket).map_err(bind_error)?);
                    }
                    sockets
                }
            };
            let local = sockets[0].local_addr().map_err(bind_error)?;
            bound.push((sockets, local, spec.tls, spec.intercept));
        }
        let forwarder = Forwarder::new(table, settings.request_timeout);
        let service = CallerService {
            http: Arc::new(Http::new(forwarder, settings.connection.clone())),
            intercept: None,
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut stopped = Vec::new();
        // Every accept loop runs the same way; only its label and its listener's cap differ.
        let deadlines = settings.connection.deadlines();
        let mut options = |label: String, tls: bool, cap: ConnectionCap| {
            let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
            stopped.push(stopped_rx);
            serve::Options {
                label,
                kind: "caller",
                tls,
                deadlines,
                cap,
                at_cap: AtCap::Wait,
                drain: Drain::Graceful(settings.drain_timeout),
                shutdown: shutdown_rx.clone(),
                stopped: Some(stopped_tx),
            }
        };
        let lanes = workers.as_ref().map_or(1, Workers::len);
        // `loops[k]`: what worker `k` runs (without workers: everything, on this runtime).
        let mut loops: Vec<Vec<Loop>> = (0..lanes).map(|_| Vec::new()).collect();
        let mut addrs = Vec::with_capacity(bound.len());
        for (sockets, local, tls, intercept) in bound {
            tracing::info!(addr = %local, tls = tls.is_some(), intercept = intercept.is_some(), sockets = sockets.len(), "listening");
            addrs.push(local);
            let tls = tls.map(TlsAcceptor::from);
            // One cap for the listener, whichever worker accepts.
            let cap = ConnectionCap::new(settings.connection.max_connections);
            for (k, socket) in sockets.into_iter().enumerate() {
                let options = options(local.to_string(), tls.is_some(), cap.clone());
                let service = CallerService {
                    intercept: intercept.clone(),
                    ..service.clone()
                };
                loops[k].push(Box::pin(accept_loop(socket, tls.clone(), service, options)));
            }
        }
        let mut unix_paths = Vec::with_capacity(unix_bound.len());
        for (socket, path) in unix_bound {
            tracing::info!(path = %path.display(), "listening on unix socket");
            unix_paths.push(path.clone());
            let label = path.display().to_string();
            let cap = ConnectionCap::new(settings.connection.max_connections);
            let options = options(label, false, cap);
            let run = unix_listener::accept_loop(socket, path, service.clone(), options);
            loops[0].push(Box::pin(run));
        }
        let done = match workers {
            Some(workers) => workers.start(loops).map_err(StartError::Workers)?,
            None => loops
                .into_iter()
                .flatten()
                .map(|run| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    tokio::spawn(async move {
                        let _ = tx.send(run.await);
                    });
                    rx
                })
                .collect(),
        };
        Ok(ProxyHandle {
            addrs,
            unix_paths,
            shutdown: shutdown_tx,
            done,
            stopped,
            drain_timeout: settings.drain_timeout,
        })
    }
}

/// A running data plane. Dropping it stops accepting new connections.
#[derive(Debug)]
pub struct ProxyHandle {
    addrs: Vec<SocketAddr>,
    unix_paths: Vec<std::path::PathBuf>,
    shutdown: watch::Sender<bool>,
    /// One per worker (without workers: per accept loop): whether its connections all closed
    /// within the drain; dropped unsent if it ended abnormally.
    done: Vec<tokio::sync::oneshot::Receiver<bool>>,
    /// One per accept loop: the open connections when its socket closed.
    stopped: Vec<tokio::sync::oneshot::Receiver<usize>>,
    drain_timeout: Duration,
}

impl ProxyHandle {
    /// The bound addresses, in the order the listeners were given.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The Unix-socket listeners' paths, in the order given.
    pub fn unix_paths(&self) -> &[std::path::PathBuf] {
        &self.unix_paths
    }

    /// Stops accepting (every listening socket is closed, so new callers are refused), lets open
    /// connections finish their in-flight requests and streaming bodies (HTTP/1 answers carry
    /// `Connection: close`, idle keep-alive connections are closed, HTTP/2 gets GOAWAY) up to the
    /// drain timeout, and returns. Connections still busy after it are left to end on their own.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let listeners = self.stopped.len();
        let mut open = 0;
        for stopped in self.stopped {
            // An accept loop that ended abnormally dropped its sender: it has nothing to drain.
            open += stopped.await.unwrap_or(0);
        }
        tracing::info!(
            listeners,
            open_connections = open,
            drain_timeout_ms = u64::try_from(self.drain_timeout.as_millis()).unwrap_or(u64::MAX),
            "stopped accepting; draining open connections"
        );
        // Each loop bounds its own drain by the timeout; they all started it just now.
        let mut drained = true;
        for done in self.done {
            match done.await {
                Ok(closed) => drained &= closed,
                Err(_) => tracing::warn!("accept loop ended abnormally"),
            }
        }
        if drained {
            tracing::info!(
                drained_connections = open,
                "drained: every connection closed"
            );
        } else {
            tracing::warn!(
                drain_timeout_ms =
                    u64::try_from(self.drain_timeout.as_millis()).unwrap_or(u64::MAX),
                "connections still open after the drain timeout"
            );
        }
    }
}
