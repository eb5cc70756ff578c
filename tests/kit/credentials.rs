//! Shared fixture for the credential-engine source tests: a real local authority on loopback, a
//! routes.yaml written for it and loaded through popgate's real config loader and factory, and a
//! small rustls client that presents a token to the authority's resource server.

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

use super::authority::{exchange_app, resolve_yaml, seeded_dir};
use rustls::pki_types::ServerName;

pub use popgate_authority::directory::{
    DEFAULT_SAMI_CLIENT_ID, DEFAULT_TENANT_ID as TENANT, DEFAULT_UAMI_CLIENT_ID,
    DEFAULT_UAMI_OBJECT_ID, DEFAULT_UAMI_RESOURCE_ID,
};
pub use popgate_authority::faults::{Endpoint, Fault};

/// Every test call is bounded: a hung peer fails the test instead of hanging it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry waits divided by this: the 410 schedule (7 × 10 s) takes 70 ms.
pub const RETRY_DIVISOR: u32 = 1000;
/// Certificate files are compared this often in tests.
pub const TEST_POLL: Duration = Duration::from_millis(50);

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

/// A route's flow on `app` (the certificate app, files watched) with an mTLS PoP token.
pub const APP_POP: &str = "    flow: vanilla\n    identity: app\n    token_type: mtls_pop";

pub async fn start() -> Env {
    start_with(AuthorityConfig::default()).await
}

pub async fn start_with(config: AuthorityConfig) -> Env {
    let authority = Authority::start(config).await.expect("authority starts");
    let (app, app_credential) = authority.new_certificate_app("popgate-app").unwrap();
    let exchange = exchange_app(&authority, &app);
    let dir = seeded_dir(&authority, &app_credential);
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

    /// A new credential for `app`, registered alongside the current one (a rotation's overlap).
    pub fn register_rotated_credential(&self) -> AppCredential {
        let next = self
            .authority
            .pki()
            .issue_app_credential("rotated")
            .unwrap();
        self.authority
            .directory()
            .add_certificate(&self.app.client_id, next.cert_der.as_ref())
            .unwrap();
        next
    }

    /// The identities every test can use: `sami`, `uami` (by client id), `uami-r`, `uami-o`,
    /// `app` (certificate app, files watched), `app-west` (same app, region westus3) and
    /// `exchange` (FIC leg 2).
    pub fn identities(&self) -> String {
        self.identities_with_app_files("app.pem", "app.key")
    }

    /// [`Env::identities`] with the certificate app's files elsewhere (relative to the config).
    pub fn identities_with_app_files(&self, app_cert: &str, app_key: &str) -> String {
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
    certificate: {{ cert_file: {app_cert}, key_file: {app_key} }}
  app-west:
    kind: confidential_client
    tenant_id: {tenant}
    client_id: {app}
    region: westus3
    certificate: {{ cert_file: {app_cert}, key_file: {app_key} }}
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

    /// Writes routes.yaml with only `identities` (indented map entries) and `routes`, and loads
    /// it with the environment `vars` (managed-identity source detection reads it).
    pub fn config_with_env(&self, identities: &str, routes: &str, vars: &[(&str, &str)]) -> Config {
        let resolve = resolve_yaml(&self.authority, &[], &[]);
        let path = self.write_routes_yaml("", &resolve, identities, routes);
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config::load_with_env(&path, &|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|errors| {
            panic!(
                "config:\n{}",
                errors
                    .errors()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
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
        let resolve = resolve_yaml(&self.authority, extra_resolve, &[]);
        let ids = format!("{}{extra_identities}", self.identities());
        super::config::load(&self.write_routes_yaml("", &resolve, &ids, routes))
    }

    /// Writes routes.yaml and returns its path: a plain listener on 127.0.0.1:0, `top` (more
    /// top-level YAML lines), IMDS at the authority, `resolve` (see [`resolve_yaml`]), the
    /// authority's CA trusted, `identities` (indented map entries) and `routes` (list items).
    pub fn write_routes_yaml(
        &self,
        top: &str,
        resolve: &str,
        identities: &str,
        routes: &str,
    ) -> PathBuf {
        let yaml = format!(
            "version: 1\nlisteners:\n  - address: 127.0.0.1:0\n{top}network:\n  imds_endpoint: {imds}\n  resolve:\n{resolve}  extra_ca_files: [ca.pem]\nidentities:{identities}\nroutes:\n{routes}",
            imds = self.authority.imds_base_url(),
        );
        let path = self.path("routes.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
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
/// A fresh environment's route on `app` (mTLS PoP) asks the token endpoint once, which answers
/// with `fault`: the error, asserted to name the endpoint's host after exactly that one request.
pub async fn app_pop_error(fault: Fault) -> popgate::engine::credential::EngineError {
    let env = start().await;
    let credential = one(&env, "", GRAPH, APP_POP);
    env.authority.faults().push(Endpoint::Token, fault, 1);
    let err = try_get(&credential).await.unwrap_err();
    assert!(
        err.message.contains("mtlsauth.microsoft.com"),
        "{}",
        err.message
    );
    assert_eq!(env.count(Endpoint::Token), 1);
    err
}

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
