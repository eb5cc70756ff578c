//! The validated configuration: what the rest of popgate consumes. Every value here has passed
//! validation; files named in the config are already loaded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::access::AllowList;
use crate::certs::binding::BindingCert;
use crate::certs::cert_files;
use crate::certs::pkcs12::{self, Pkcs12Password};
pub use crate::identity::imds_endpoint::UamiSelector;
pub use crate::identity::mi_source::{MiSource, MiSourceKind};
use crate::identity::token::TokenType;

use super::limits::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
pub use super::upstream_pool::UpstreamPool;

pub use super::host_pattern::HostPattern;
pub use super::schema::{Acquire, IdentityKind};
pub use super::upstream::Upstream;

/// A loaded, validated routes.yaml.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// Caller-facing TCP listeners (with `unix_listeners`, at least one).
    pub listeners: Vec<Listener>,
    /// Caller-facing Unix-socket listeners.
    pub unix_listeners: Vec<UnixListener>,
    /// The admin endpoint, if configured.
    pub admin: Option<SocketAddr>,
    /// Outbound network settings.
    pub network: Network,
    /// Global timeouts (routes carry their own merged copy).
    pub timeouts: Timeouts,
    /// Caller-facing HTTP limits.
    pub limits: Limits,
    /// Global upstream connection pool bounds (routes carry their own merged copy).
    pub upstream_pool: UpstreamPool,
    /// Identities by name.
    pub identities: BTreeMap<String, Identity>,
    /// Routes in file order (at least one).
    pub routes: Vec<Route>,
    /// OpenTelemetry trace export settings from the file (the `OTEL_*` variables add to them).
    pub telemetry: Telemetry,
    /// The stop sequence.
    pub drain: Drain,
    /// Data-plane worker threads (`workers:`); `None`: the CPUs this process may use.
    pub workers: Option<usize>,
}

/// The `telemetry:` section: where OTLP traces go. Both keys optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Telemetry {
    /// The OTLP/HTTP base URL (`http://collector:4318`, no path); spans go to `/v1/traces` under it.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: Option<String>,
}

/// What a stop signal does before the listeners close (`drain:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// How long listeners keep accepting and serving after SIGTERM / SIGINT while `/readyz`
    /// answers 503, so load balancers stop sending first; zero closes them at once.
    pub delay: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            delay: super::limits::DEFAULT_DRAIN_DELAY,
        }
    }
}

impl Config {
    /// The identity named `name` (validation guarantees every name a route uses exists).
    pub fn identity(&self, name: &str) -> Option<&Identity> {
        self.identities.get(name)
    }
}

/// A caller-facing listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Where to bind.
    pub address: SocketAddr,
    /// Inbound TLS; plain HTTP when `None`.
    pub tls: Option<InboundTls>,
    /// CONNECT interception; CONNECT is refused (405) when `None`.
    pub intercept: Option<Intercept>,
}

/// CONNECT interception on a listener: the CA that signs the intercepted hosts' leaves.
#[derive(Debug, Clone)]
pub struct Intercept {
    /// The loaded CA (certificate and signing key).
    pub ca: std::sync::Arc<crate::certs::intercept_ca::InterceptCa>,
    /// The CA certificate's file (what apps are told to trust).
    pub ca_cert_file: PathBuf,
}

/// A Unix-socket listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixListener {
    /// The socket file (resolved against the config file's directory).
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

impl Listener {
    /// Whether callers must present a client certificate (inbound mTLS).
    pub fn requires_client_cert(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
    }
}

/// Inbound TLS material, loaded.
#[derive(Debug, Clone)]
pub struct InboundTls {
    /// The server certificate chain and key.
    pub server: BindingCert,
    /// CA certificates for caller certificates; `Some` means callers must present one.
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
}

/// Outbound network settings.
#[derive(Debug, Clone)]
pub struct Network {
    /// IMDS base URL after the `AZURE_POD_IDENTITY_AUTHORITY_HOST` override.
    pub imds_endpoint: http::Uri,
    /// Lowercased `host:port` → address to connect to instead of resolving.
    pub resolve: BTreeMap<String, SocketAddr>,
    /// CA certificates trusted in addition to the system roots.
    pub extra_ca: Vec<CertificateDer<'static>>,
    /// The outbound HTTP proxy in force (`network.proxy`, else `HTTPS_PROXY`); `None`: direct.
    pub proxy: Option<super::outbound_proxy::OutboundProxy>,
}

/// Connect / request / idle / drain timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// Until the response head arrives.
    pub request: Duration,
    /// Idle pooled connection lifetime.
    pub idle: Duration,
    /// How long a shutdown lets in-flight requests finish (global only).
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            drain: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Caller-facing HTTP limits from `limits:`. `None` keeps the default from [`super::limits`]
/// (applied by the data plane's `ConnectionSettings::with_limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most request header lines.
    pub max_headers: Option<usize>,
    /// Most bytes in a request head.
    pub max_header_bytes: Option<usize>,
    /// Most bytes in a request target.
    pub max_uri_bytes: Option<usize>,
    /// Most request body bytes (routes may override).
    pub max_body_bytes: Option<u64>,
    /// Most open caller connections per listener.
    pub max_connections: Option<usize>,
    /// Time to send an HTTP/1 request head.
    pub header_read_timeout: Option<Duration>,
    /// Time a request body may go without progress.
    pub request_body_timeout: Option<Duration>,
    /// Time a caller that stopped reading a response may block popgate's writes.
    pub response_body_timeout: Option<Duration>,
    /// Most concurrent HTTP/2 streams per caller connection.
    pub h2_max_concurrent_streams: Option<u32>,
    /// Time from accept (or the TLS handshake) to a caller's first byte.
    pub first_byte_timeout: Option<Duration>,
    /// Time from the first byte until the protocol is known (HTTP/2: preface and first SETTINGS).
    pub h2_preface_timeout: Option<Duration>,
    /// Time a caller's TLS handshake may take.
    pub tls_handshake_timeout: Option<Duration>,
    /// Time a caller connection may stay open with no request in flight.
    pub keep_alive_timeout: Option<Duration>,
}

/// A named identity.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Azure managed identity via IMDS.
    ManagedIdentity(ManagedIdentity),
    /// App registration.
    ConfidentialClient(ConfidentialClient),
    /// Kubernetes workload identity (Bearer only).
    WorkloadIdentity(WorkloadIdentity),
    /// Token and bound certificate from files.
    Static(StaticIdentity),
}

impl Identity {
    /// The kind, as spelled in the config.
    pub fn kind(&self) -> IdentityKind {
        match self {
            Identity::ManagedIdentity(_) => IdentityKind::ManagedIdentity,
            Identity::ConfidentialClient(_) => IdentityKind::ConfidentialClient,
            Identity::WorkloadIdentity(_) => IdentityKind::WorkloadIdentity,
            Identity::Static(_) => IdentityKind::Static,
        }
    }
}

/// A managed identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedIdentity {
    /// `None`: system-assigned.
    pub selector: Option<UamiSelector>,
    /// Argv of a command printing an attestation token for IMDSv2 `issuecredential`.
    pub attestation_command: Option<Vec<String>>,
    /// Where its tokens come from: detected from the environment in MSAL's order, or `source:`.
    pub source: MiSource,
    /// `true`: detected; `false`: set by `source:`.
    pub source_detected: bool,
}

/// An app registration.
#[derive(Debug, Clone)]
pub struct ConfidentialClient {
    /// Tenant GUID (lowercased) or domain.
    pub tenant_id: String,
    /// Client id, lowercased GUID.
    pub client_id: String,
    /// Its certificate; `None` for an app that is only ever a FIC leg 2.
    pub certificate: Option<BindingCert>,
    /// Where `certificate` was loaded from, so rotations of the files can be watched.
    pub certificate_files: Option<CertificateFiles>,
    /// ESTS region, lowercased.
    pub region: Option<String>,
    /// Normalized authority host.
    pub authority_host: String,
    /// Send the certificate chain as `x5c` in Bearer client assertions (`send_x5c`).
    pub send_x5c: bool,
}

/// The files a certificate and its key were loaded from (paths resolved against the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateFiles {
    /// A PEM certificate chain and a PEM private key.
    Pem {
        /// PEM certificate chain, leaf first.
        cert_file: PathBuf,
        /// PEM private key.
        key_file: PathBuf,
    },
    /// A PKCS#12 file and its password (read from `password_env` when the config was loaded, so
    /// a rotated file can be re-read with it).
    Pkcs12 {
        /// The PKCS#12 file.
        file: PathBuf,
        /// Its password (zeroized, redacted in `Debug`).
        password: Pkcs12Password,
    },
}

impl CertificateFiles {
    /// Loads the certificate and key these files hold.
    pub fn load(&self) -> Result<BindingCert, String> {
        match self {
            CertificateFiles::Pem {
                cert_file,
                key_file,
            } => cert_files::load_binding_cert(cert_file, key_file).map_err(|e| e.to_string()),
            CertificateFiles::Pkcs12 { file, password } => {
                pkcs12::load_pkcs12(file, password.expose()).map_err(|e| e.to_string())
            }
        }
    }

    /// The files to watch for changes.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            CertificateFiles::Pem {
                cert_file,
                key_file,
            } => vec![cert_file, key_file],
            CertificateFiles::Pkcs12 { file, .. } => vec![file],
        }
    }
}

/// Kubernetes workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentity {
    /// Client id (config, else `AZURE_CLIENT_ID`).
    pub client_id: String,
    /// Tenant (config, else `AZURE_TENANT_ID`).
    pub tenant_id: String,
    /// Projected service-account token file (config, else `AZURE_FEDERATED_TOKEN_FILE`);
    /// re-read on every acquisition because kubelet rotates it.
    pub token_file: PathBuf,
    /// Normalized authority host.
    pub authority_host: String,
}

/// A bring-your-own token.
#[derive(Debug, Clone)]
pub struct StaticIdentity {
    /// The token file (re-read on SIGHUP; readable at load time).
    pub token_file: PathBuf,
    /// The certificate the token is bound to, presented upstream.
    pub certificate: BindingCert,
}

/// How a route gets its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// One acquisition with `identity`.
    Vanilla {
        /// Identity name.
        identity: String,
    },
    /// Leg 1 (`api://AzureADTokenExchange`) then leg 2 with the leg-1 token as assertion.
    Fic {
        /// Leg-1 identity name (managed identity, certificate app or workload identity).
        leg1: String,
        /// Leg-2 identity name (a confidential client).
        leg2: String,
        /// Leg-1 token type: mtls_pop, or bearer (which forces a Bearer final token).
        leg1_token_type: TokenType,
    },
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// Host pattern; `None` matches any host.
    pub host: Option<HostPattern>,
    /// Path prefix (starts with `/`); `None` matches any path.
    pub path_prefix: Option<String>,
    /// Remove the matched prefix before forwarding (keeping a leading `/`).
    pub strip_prefix: bool,
    /// `https` upstream, possibly with a base path; `None` = `https://{matched request host}`.
    pub upstream: Option<Upstream>,
    /// Resource (audience) without a trailing `/.default`.
    pub resource: String,
    /// Token flow.
    pub flow: Flow,
    /// Final token type presented upstream.
    pub token_type: TokenType,
    /// Eager or lazy acquisition.
    pub acquire: Acquire,
    /// Global timeouts overridden by the route's own.
    pub timeouts: Timeouts,
    /// Global `upstream_pool` overridden by the route's own, key by key.
    pub upstream_pool: UpstreamPool,
    /// The route's body limit: its own `max_body_bytes`, else `limits.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Which callers may use the route; `None`: anyone who reaches a listener.
    pub allow: Option<AllowList>,
}

impl Route {
    /// The OAuth scope: `{resource}/.default`.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.resource)
    }

    /// The upstream's base path without a trailing `/` (`""` when it has none), ready to be
    /// prepended to the forwarded path.
    pub fn upstream_base_path(&self) -> &str {
        self.upstream.as_ref().map_or("", Upstream::base_path)
    }
}
