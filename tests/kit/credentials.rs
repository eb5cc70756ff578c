//! Shared fixture for the credential-engine source tests: a real local authority on loopback, a
//! routes.yaml written for it and loaded through popgate's real config loader and factory, and a
//! small rustls client that presents a token to the authority's resource server.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use popgate::certs::binding::BindingCert;
use popgate::config::{self, Config};
use popgate::engine::build::{EngineDeps, build_credentials};
use popgate::engine::credential::Credential;
use popgate::engine::schedule::RefreshPolicy;
use popgate::engine::sources::retry::RetryTiming;
use popgate::identity::token::Token;
use popgate_authority::{App, AppCredential, Authority, AuthorityConfig};
use rustls::pki_types::ServerName;

pub use popgate_authority::directory::{
    DEFAULT_SAMI_CLIENT_ID, DEFAULT_TENANT_ID as TENANT, DEFAULT_UAMI_CLIENT_ID,
    DEFAULT_UAMI_OBJECT_ID, DEFAULT_UAMI_RESOURCE_ID,
};
#[allow(unused_imports)]
pub use popgate_authority::faults::{Endpoint, Fault};

/// Every test call is bounded: a hung peer fails the test instead of hanging it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry waits divided by this: the 410 schedule (7 × 10 s) takes 70 ms.
pub const RETRY_DIVISOR: u32 = 1000;
/// Certificate files are compared this often in tests.
pub const TEST_POLL: Duration = Duration::from_millis(50);

/// Token and resource hosts the tests use, all pointed at the authority's listeners.
const TOKEN_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "mtlsauth.microsoft.com",
    "westus3.mtlsauth.microsoft.com",
];
const RESOURCE_HOSTS: &[&str] = &["graph.microsoft.com", "management.azure.com"];

/// A running authority with a certificate app, a FIC leg-2 app trusting that app and the
/// default UAMI, and a temp dir for config files.
pub struct Env {
    pub authority: Authority,
    pub dir: tempfile::TempDir,
    pub app: App,
    pub app_credential: AppCredential,
    /// A certificate-less app that trusts `app`, the default UAMI and the SAMI as leg 1.
    pub exchange: App,
}

pub async fn start() -> Env {
    start_with(AuthorityConfig::default()).await
}

pub async fn start_with(config: AuthorityConfig) -> Env {
    let authority = Authority::start(config).await.expect("authority starts");
    let (app, app_credential) = authority.new_certificate_app("popgate-app").unwrap();
    let directory = authority.directory();
    let sami_object = directory
        .managed_identity(DEFAULT_SAMI_CLIENT_ID)
        .expect("default SAMI")
        .object_id;
    let exchange = directory
        .register_fic_app(
            TENANT,
            &uuid::Uuid::new_v4().to_string(),
            vec![
                popgate_authority::FederatedCredential::for_identity(TENANT, &app.object_id),
                popgate_authority::FederatedCredential::for_identity(
                    TENANT,
                    DEFAULT_UAMI_OBJECT_ID,
                ),
                popgate_authority::FederatedCredential::for_identity(TENANT, &sami_object),
            ],
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), authority.ca_pem()).unwrap();
    std::fs::write(dir.path().join("app.pem"), &app_credential.cert_pem).unwrap();
    std::fs::write(
        dir.path().join("app.key"),
        app_credential.key_pem.as_bytes(),
    )
    .unwrap();
    Env {
        authority,
        dir,
        app,
        app_credential,
        exchange,
    }
}

impl Env {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The identities every test can use: `sami`, `uami` (by client id), `uami-r`, `uami-o`,
    /// `app` (certificate app, files watched), `app-west` (same app, region westus3) and
    /// `exchange` (FIC leg 2).
    pub fn identities(&self) -> String {
        format!(
            r#"
  sami: {{ kind: managed_identity }}
  uami: {{ kind: managed_identity, client_id: {uami} }}
  uami-r: {{ kind: managed_identity, resource_id: "{uami_r}" }}
  uami-o: {{ kind: managed_identity, object_id: {uami_o} }}
  app:
    kind: confidential_client
    tenant_id: {tenant}
    client_id: {app}
    certificate: {{ cert_file: app.pem, key_file: app.key }}
  app-west:
    kind: confidential_client
    tenant_id: {tenant}
    client_id: {app}
    region: westus3
    certificate: {{ cert_file: app.pem, key_file: app.key }}
  exchange:
    kind: confidential_client
    tenant_id: {tenant}
    client_id: {exchange}
"#,
            uami = DEFAULT_UAMI_CLIENT_ID,
            uami_r = DEFAULT_UAMI_RESOURCE_ID,
            uami_o = DEFAULT_UAMI_OBJECT_ID,
            tenant = TENANT,
            app = self.app.client_id,
            exchange = self.exchange.client_id,
        )
    }

    /// Writes routes.yaml with the standard identities plus `extra_identities`, and `routes`,
    /// and loads it through popgate's config loader.
    pub fn config(&self, extra_identities: &str, routes: &str) -> Config {
        self.config_resolving(extra_identities, routes, &[])
    }

    /// [`Env::config`] with more `host:port` → address entries in `network.resolve`.
    pub fn config_resolving(
        &self,
        extra_identities: &str,
        routes: &str,
        extra_resolve: &[(&str, std::net::SocketAddr)],
    ) -> Config {
        let mut resolve = String::new();
        for (host_port, addr) in extra_resolve {
            resolve.push_str(&format!("    \"{host_port}\": \"{addr}\"\n"));
        }
        for host in TOKEN_HOSTS {
            resolve.push_str(&format!(
                "    \"{host}:443\": \"{}\"\n",
                self.authority.token_addr()
            ));
        }
        for host in RESOURCE_HOSTS {
            resolve.push_str(&format!(
                "    \"{host}:443\": \"{}\"\n",
                self.authority.resource_addr()
            ));
        }
        let yaml = format!(
            "version: 1\nlisteners:\n  - address: 127.0.0.1:0\nnetwork:\n  imds_endpoint: {imds}\n  resolve:\n{resolve}  extra_ca_files: [ca.pem]\nidentities:{ids}{extra}\nroutes:\n{routes}",
            imds = self.authority.imds_base_url(),
            ids = self.identities(),
            extra = extra_identities,
        );
        let path = self.path("routes.yaml");
        std::fs::write(&path, yaml).unwrap();
        config::load_with_env(&path, &|_| None).unwrap_or_else(|e| panic!("config: {e}"))
    }

    /// Engine dependencies for `config` with scaled retry waits and fast certificate polling.
    pub fn deps(&self, config: &Config) -> EngineDeps {
        let mut deps = EngineDeps::from_config(
            config,
            RefreshPolicy::default(),
            RetryTiming::scaled(RETRY_DIVISOR),
        )
        .expect("engine deps");
        deps.cert_poll_interval = TEST_POLL;
        // Tests never read the process environment for App Service (it would race).
        deps.app_service = None;
        deps
    }

    pub fn build(
        &self,
        config: &Config,
        deps: &EngineDeps,
    ) -> BTreeMap<String, Arc<dyn Credential>> {
        build_credentials(config, deps).expect("credentials build")
    }

    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.authority.observations().count(endpoint)
    }

    /// Presents `token` to the resource at `host` over TLS, with the token's binding certificate
    /// (PoP) or `fallback` (Bearer: the resource still asks every client for a certificate).
    pub async fn call_resource(&self, host: &str, token: &Token) -> StatusCode {
        let fallback;
        let cert = match &token.binding {
            Some(b) => b,
            None => {
                fallback = self.throwaway_cert();
                &fallback
            }
        };
        resource_status(&self.authority, host, cert, token).await
    }

    /// A certificate the authority issued but nobody registered.
    pub fn throwaway_cert(&self) -> BindingCert {
        let c = self.authority.pki().issue_app_credential("caller").unwrap();
        BindingCert::from_der(vec![c.cert_der.clone()], c.key_der().unwrap()).unwrap()
    }
}

/// `GET https://{host}/` at the authority's resource listener presenting `cert` and `token`.
pub async fn resource_status(
    authority: &Authority,
    host: &str,
    cert: &BindingCert,
    token: &Token,
) -> StatusCode {
    let roots = authority.pki().root_store().unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Present(cert.certified_key())));
    let call = async {
        let tcp = tokio::net::TcpStream::connect(authority.resource_addr())
            .await
            .unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = Request::get(format!("https://{host}/"))
            .header(http::header::HOST, host)
            .header(
                http::header::AUTHORIZATION,
                token.authorization_header().unwrap(),
            )
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let _ = response.into_body().collect().await;
        status
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .expect("resource call in time")
}

/// Presents one certificate (with its in-memory key) whenever the server asks.
#[derive(Debug)]
struct Present(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Present {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The JWT payload of a token (the tests' own tokens; never logged).
pub fn claims(token: &Token) -> serde_json::Value {
    let payload = token
        .access_token
        .expose_secret()
        .split('.')
        .nth(1)
        .expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `cnf.x5t#S256` of a PoP token.
pub fn cnf(token: &Token) -> String {
    claims(token)["cnf"]["x5t#S256"]
        .as_str()
        .expect("cnf.x5t#S256")
        .to_string()
}

/// Waits (bounded) for a credential's binding counter to move past `seen`.
pub async fn binding_changed(credential: &Arc<dyn Credential>, seen: u64) -> u64 {
    let mut rx = credential.binding_changes();
    tokio::time::timeout(CALL_TIMEOUT, rx.wait_for(|v| *v > seen))
        .await
        .expect("binding change in time")
        .map(|v| *v)
        .expect("binding channel open")
}

pub const GRAPH: &str = "https://graph.microsoft.com";
pub const ARM: &str = "https://management.azure.com";

/// `(name, resource, flow lines)` → routes YAML, each route on its own path prefix.
pub fn routes(list: &[(&str, &str, &str)]) -> String {
    let mut out = String::new();
    for (name, resource, flow) in list {
        out.push_str(&format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name}/ }}\n    upstream: https://upstream.example\n    resource: {resource}\n{flow}\n"
        ));
    }
    out
}

/// A usable token, or the test fails with the engine's message.
pub async fn get(credential: &Arc<dyn Credential>) -> popgate::engine::cache::CachedToken {
    try_get(credential).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `get`, bounded in time.
pub async fn try_get(
    credential: &Arc<dyn Credential>,
) -> Result<popgate::engine::cache::CachedToken, popgate::engine::credential::EngineError> {
    tokio::time::timeout(CALL_TIMEOUT, credential.get())
        .await
        .expect("get in time")
}

/// The single credential of a one-route config.
pub fn one(env: &Env, extra_identities: &str, resource: &str, flow: &str) -> Arc<dyn Credential> {
    let config = env.config(extra_identities, &routes(&[("r", resource, flow)]));
    let deps = env.deps(&config);
    env.build(&config, &deps).remove("r").expect("route r")
}
