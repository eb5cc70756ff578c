//! The local authority: Entra ID token endpoint, IMDS v1 + v2 and a token-bound resource, as strict
//! as the real ones. Used by popgate's tests, benches and `popgate dev`, and as a standalone binary.
//!
//! ```no_run
//! # async fn demo() -> Result<(), popgate_authority::AuthorityError> {
//! let authority = popgate_authority::Authority::start(Default::default()).await?;
//! let (app, credential) = authority.new_certificate_app("my-app")?;
//! println!("{} {} {:?}", app.client_id, credential.x5t_s256, authority.token_addr());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_directory;
pub mod cert_check;
pub mod claims;
pub mod client_auth;
pub mod directory;
pub mod faults;
pub mod imds;
pub mod observe;
pub mod pki;
pub mod resource;
pub mod settings;
pub mod signing;
pub mod thumbprint;
pub mod tls_server;
pub mod token_endpoint;
pub mod tokens;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use directory::{App, Directory, FederatedCredential, Resource};
pub use faults::{Endpoint, Fault, Faults};
pub use observe::{Observations, RequestRecord};
pub use pki::{AppCredential, CaSource, Pki};
pub use settings::{Settings, TokenSettings};
pub use signing::SigningKeys;

/// How to start an [`Authority`]. Ports 0 pick free ones.
#[derive(Clone, Debug)]
pub struct AuthorityConfig {
    /// Address every listener binds (loopback by default; the authority is a test double).
    pub bind: IpAddr,
    pub token_port: u16,
    pub resource_port: u16,
    pub imds_port: u16,
    pub ca: CaSource,
    /// Hosts the resource listener answers as (SANs of its certificate).
    pub resource_hosts: Vec<String>,
    /// IMDS behaviour: certificate lifetime, v2 on/off, App Service secret, …
    pub imds: imds::ImdsSettings,
    /// Whether the resource listener refuses TLS handshakes without a client certificate (the
    /// default). `false` asks for one but lets Bearer callers without a certificate through, as
    /// real Bearer resources do; an `mtls_pop` request without one is still refused per request.
    pub resource_requires_client_cert: bool,
    /// Whether the resource listener offers only `http/1.1` by ALPN (default: `h2` too), to
    /// stand for the HTTP/1.1-only upstreams (IMDS-like services, older front ends) where each
    /// connection carries one request at a time.
    pub resource_http1_only: bool,
}

impl Default for AuthorityConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            token_port: 0,
            resource_port: 0,
            imds_port: 0,
            ca: CaSource::Generate,
            resource_hosts: pki::DEFAULT_RESOURCE_HOSTS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            imds: imds::ImdsSettings::default(),
            resource_requires_client_cert: true,
            resource_http1_only: false,
        }
    }
}

/// Why the authority could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Directory(#[from] directory::DirectoryError),
    #[error("cannot create the token-signing key: {0}")]
    Signing(String),
    #[error("cannot bind the {listener} listener to {addr}: {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the {server} server: {source}")]
    Serve {
        server: &'static str,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// One `--resolve`-style pair: connections to `host:443` go to `addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveEntry {
    /// A host name; `*.` patterns stand for any single label.
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

impl std::fmt::Display for ResolveEntry {
    /// curl `--resolve` syntax: `host:port:addr:addrport`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.host,
            self.port,
            self.addr.ip(),
            self.addr.port()
        )
    }
}

/// A running authority. Everything stops when it is dropped or on [`Authority::shutdown`].
pub struct Authority {
    pki: Arc<Pki>,
    keys: Arc<SigningKeys>,
    directory: Arc<Directory>,
    settings: Arc<Settings>,
    faults: Arc<Faults>,
    observations: Arc<Observations>,
    resource_hosts: Vec<String>,
    token_addr: SocketAddr,
    resource_addr: SocketAddr,
    imds_addr: SocketAddr,
    token_server: Option<tls_server::ServerHandle>,
    /// Dropping these stops the resource and IMDS listeners with the authority.
    resource_server: Option<resource::ResourceHandle>,
    imds_server: Option<imds::ImdsHandle>,
    /// Service Fabric's TLS listener, its address and its certificate's thumbprint.
    service_fabric: Option<(SocketAddr, String, tls_server::ServerHandle)>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("token_addr", &self.token_addr)
            .field("resource_addr", &self.resource_addr)
            .field("imds_addr", &self.imds_addr)
            .finish_non_exhaustive()
    }
}

async fn bind(
    listener: &'static str,
    ip: IpAddr,
    port: u16,
) -> Result<(TcpListener, SocketAddr), AuthorityError> {
    let addr = SocketAddr::new(ip, port);
    let bound = TcpListener::bind(addr)
        .await
        .map_err(|source| AuthorityError::Bind {
            listener,
            addr,
            source,
        })?;
    let local = bound.local_addr().map_err(|source| AuthorityError::Bind {
        listener,
        addr,
        source,
    })?;
    Ok((bound, local))
}

impl Authority {
    /// Makes (or loads) the PKI, binds every listener and starts the token endpoint.
    pub async fn start(config: AuthorityConfig) -> Result<Self, AuthorityError> {
        let pki = Arc::new(Pki::new(&config.ca, &config.resource_hosts)?);
        let keys = Arc::new(SigningKeys::generate().map_err(AuthorityError::Signing)?);
        let settings = Arc::new(Settings::default());
        let directory = Arc::new(Directory::new(pki.clone(), keys.clone(), settings.clone()));
        let faults = Arc::new(Faults::default());
        let observations = Arc::new(Observations::default());

        let (token_listener, token_addr) = bind("token", config.bind, config.token_port).await?;
        let (resource_listener, resource_addr) =
            bind("resource", config.bind, config.resource_port).await?;
        let (imds_listener, imds_addr) = bind("imds", config.bind, config.imds_port).await?;

        let endpoint = Arc::new(token_endpoint::TokenEndpoint {
            directory: directory.clone(),
            pki: pki.clone(),
            keys: keys.clone(),
            settings: settings.clone(),
            faults: faults.clone(),
            observations: observations.clone(),
            replay: Default::default(),
        });
        let token_server = tls_server::spawn(
            token_listener,
            pki.token_server_config()?,
            "token",
            move |conn, req| endpoint.clone().handle(conn, req),
        );
        let audiences_directory = directory.clone();
        let audiences: resource::AudienceLookup = Arc::new(move |host: &str| {
            audiences_directory
                .resource_for_host(host)
                .map(|r| resource::Audience {
                    audience: r.audience,
                    accepts_bearer: r.accepts.bearer,
                    accepts_pop: r.accepts.mtls_pop,
                })
        });
        let resource_server = resource::spawn(
            resource_listener,
            resource_tls(&pki, &config)?,
            keys.clone(),
            audiences,
            faults.clone(),
            observations.clone(),
        )
        .await
        .map_err(|source| AuthorityError::Serve {
            server: "resource",
            source,
        })?;
        let imds_server = imds::spawn(
            imds_listener,
            directory.clone(),
            faults.clone(),
            observations.clone(),
            config.imds.clone(),
        )
        .await
        .map_err(|source| AuthorityError::Serve {
            server: "imds",
            source,
        })?;
        let service_fabric = match &config.imds.service_fabric_secret {
            None => None,
            Some(_) => {
                let (listener, addr) = bind("service_fabric", config.bind, 0).await?;
                let (tls, thumbprint) = imds::service_fabric_tls::server_config().map_err(|e| {
                    AuthorityError::Serve {
                        server: "service_fabric",
                        source: std::io::Error::other(e),
                    }
                })?;
                let handle = imds::server::spawn_service_fabric(
                    listener,
                    tls,
                    directory.clone(),
                    faults.clone(),
                    observations.clone(),
                    config.imds.clone(),
                );
                Some((addr, thumbprint, handle))
            }
        };
        tracing::info!(token = %token_addr, resource = %resource_addr, imds = %imds_addr, "authority started");
        Ok(Self {
            pki,
            keys,
            directory,
            settings,
            faults,
            observations,
            resource_hosts: config.resource_hosts,
            token_addr,
            resource_addr,
            imds_addr,
            token_server: Some(token_server),
            resource_server: Some(resource_server),
            imds_server: Some(imds_server),
            service_fabric,
        })
    }

    /// Stops every listener and waits for the token endpoint's loop to end.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.token_server.take() {
            server.shutdown().await;
        }
        self.resource_server.take();
        self.imds_server.take();
        self.service_fabric.take();
    }

    /// The root CA certificate (PEM) every listener's certificate chains to.
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }

    /// Writes the CA certificate (PEM) to `path`.
    pub fn write_ca(&self, path: &Path) -> Result<(), AuthorityError> {
        std::fs::write(path, self.ca_pem()).map_err(|source| AuthorityError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Where the token endpoint listens (every `login.*` / `mtlsauth.*` host).
    pub fn token_addr(&self) -> SocketAddr {
        self.token_addr
    }

    /// Where the token-bound resource server listens (every resource host).
    pub fn resource_addr(&self) -> SocketAddr {
        self.resource_addr
    }

    /// Where IMDS (v1, v2 and the App Service endpoint at `/msi/token`) listens, plain HTTP.
    pub fn imds_addr(&self) -> SocketAddr {
        self.imds_addr
    }

    /// Service Fabric's `IDENTITY_ENDPOINT` (https) and `IDENTITY_SERVER_THUMBPRINT`, when
    /// `imds.service_fabric_secret` started its listener.
    pub fn service_fabric(&self) -> Option<(String, String)> {
        self.service_fabric.as_ref().map(|(addr, thumbprint, _)| {
            (
                format!("https://{addr}{}", imds::server::PATH_SERVICE_FABRIC),
                thumbprint.clone(),
            )
        })
    }

    /// IMDS's base URL, for popgate's `network.imds_endpoint`.
    pub fn imds_base_url(&self) -> String {
        format!("http://{}", self.imds_addr)
    }

    /// Every host served, mapped to the listener that serves it (curl `--resolve` semantics).
    pub fn resolve(&self) -> Vec<ResolveEntry> {
        let entry = |host: &str, addr| ResolveEntry {
            host: host.to_string(),
            port: 443,
            addr,
        };
        pki::TOKEN_HOSTS
            .iter()
            .map(|h| entry(h, self.token_addr))
            .chain(
                self.resource_hosts
                    .iter()
                    .map(|h| entry(h, self.resource_addr)),
            )
            .collect()
    }

    /// The PKI (server configs, app credentials, binding certificates).
    pub fn pki(&self) -> &Arc<Pki> {
        &self.pki
    }

    /// The directory, for registering apps, identities and resources at run time.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The directory as the IMDS server's backend (`imds::server::spawn`).
    pub fn imds_backend(&self) -> Arc<dyn imds::backend::ImdsBackend> {
        self.directory.clone()
    }

    /// Fault injection for every endpoint.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// What the authority saw.
    pub fn observations(&self) -> &Arc<Observations> {
        &self.observations
    }

    /// The token-signing keys (for the resource server and for tests that forge tokens).
    pub fn signing_keys(&self) -> &Arc<SigningKeys> {
        &self.keys
    }

    /// Starts recording the signature segment of every token issued and every client assertion
    /// received from now on (tests that grep logs for leaked secrets use it; off by default).
    pub fn record_issued_tokens(&self) {
        self.keys.record_issued();
    }

    /// The signature segments of the tokens issued and the client assertions received since
    /// [`Authority::record_issued_tokens`].
    pub fn issued_token_signatures(&self) -> Vec<String> {
        self.keys.issued_signatures()
    }

    /// Token lifetime, `refresh_in`, numbers-as-strings; changeable at run time.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The default tenant's id.
    pub fn tenant_id(&self) -> &'static str {
        directory::DEFAULT_TENANT_ID
    }

    /// Issues a fresh certificate credential and registers it as a new certificate app (random
    /// client id) in the default tenant.
    pub fn new_certificate_app(
        &self,
        common_name: &str,
    ) -> Result<(App, AppCredential), AuthorityError> {
        let credential = self.pki.issue_app_credential(common_name)?;
        let client_id = uuid::Uuid::new_v4().to_string();
        let app = self.directory.register_certificate_app(
            directory::DEFAULT_TENANT_ID,
            &client_id,
            credential.cert_der.as_ref(),
        )?;
        Ok((app, credential))
    }

    /// Issues a fresh certificate credential (CN=`common_name`) and registers a new app (random
    /// client id) for subject-name + issuer authentication of that CN: its assertions must carry
    /// `x5c`.
    pub fn new_subject_name_app(
        &self,
        common_name: &str,
    ) -> Result<(App, AppCredential), AuthorityError> {
        let credential = self.pki.issue_app_credential(common_name)?;
        let client_id = uuid::Uuid::new_v4().to_string();
        let app = self.directory.register_subject_name_app(
            directory::DEFAULT_TENANT_ID,
            &client_id,
            common_name,
        )?;
        Ok((app, credential))
    }
}

/// The resource listener's TLS configuration for `config` (client certificate rule, ALPN).
fn resource_tls(
    pki: &pki::Pki,
    config: &AuthorityConfig,
) -> Result<Arc<rustls::ServerConfig>, AuthorityError> {
    let tls = pki.resource_server_config_with(config.resource_requires_client_cert)?;
    if !config.resource_http1_only {
        return Ok(tls);
    }
    let mut tls = rustls::ServerConfig::clone(&tls);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
