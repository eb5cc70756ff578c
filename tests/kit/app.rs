//! Shared fixture for the end-to-end tests through the real proxy: a local authority on loopback
//! (token endpoint, IMDS, token-verifying resource), a routes.yaml written to a temp dir and loaded
//! by popgate's real config loader, `App::start_with` serving it, and a plain HTTP/1.1 caller that
//! sends absolute-form requests to popgate's listener. Only loopback addresses are ever targets.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use popgate::app::{App, StartOptions};
use popgate::config::Config;
use popgate::engine::sources::retry::RetryTiming;
use popgate_authority::{AuthorityConfig, FederatedCredential};

use super::authority::{resolve_yaml, resource_requests, serving_bearer, sign_graph_token};
use super::http::{dial, send_on};
use super::{config, credentials};

pub use super::credentials::{
    ARM, DEFAULT_SAMI_CLIENT_ID, DEFAULT_UAMI_CLIENT_ID, DEFAULT_UAMI_OBJECT_ID,
    DEFAULT_UAMI_RESOURCE_ID, Endpoint, Fault, GRAPH, RETRY_DIVISOR, TENANT,
    TEST_POLL as TEST_CERT_POLL,
};
pub use super::http::{Answer, REQUEST_BOUND};

/// Upper bound for the eager routes' first acquisitions (the whole matrix, on a busy 2-core box).
pub const INITIAL_ROUND_BOUND: Duration = Duration::from_secs(120);

/// The token exchange audience FIC leg 1 asks for.
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A running authority with a certificate app, two FIC leg-2 apps and a temp dir for config files:
/// the engine tests' [`credentials::Env`] (its fields and helpers through `Deref`) plus `exchange2`,
/// the workload identity's federated token and the static identity's token.
pub struct Env {
    base: credentials::Env,
    /// A certificate-less app trusting `exchange` (the workload identity) as a Bearer leg 1.
    pub exchange2: popgate_authority::App,
}

impl Deref for Env {
    type Target = credentials::Env;

    fn deref(&self) -> &credentials::Env {
        &self.base
    }
}

impl Env {
    /// An authority whose resource lets Bearer callers connect without a client certificate (as
    /// real Bearer resources do; popgate presents none on Bearer routes). `mtls_pop` requests
    /// still need the bound certificate.
    pub async fn start() -> Env {
        Env::start_with(serving_bearer()).await
    }

    pub async fn start_with(config: AuthorityConfig) -> Env {
        let base = credentials::start_with(config).await;
        let exchange2 = base
            .authority
            .directory()
            .register_fic_app(
                TENANT,
                &uuid::Uuid::new_v4().to_string(),
                vec![FederatedCredential::for_identity(
                    TENANT,
                    &base.exchange.object_id,
                )],
            )
            .unwrap();
        let env = Env { base, exchange2 };
        env.write_federated_token();
        env.write_static_token();
        env
    }

    /// The workload identity's projected token: the UAMI's Bearer token for the exchange audience,
    /// minted by the authority's IMDS backend directly (so it costs no observed IMDS call).
    fn write_federated_token(&self) {
        let uami = self
            .authority
            .directory()
            .managed_identity(DEFAULT_UAMI_CLIENT_ID)
            .expect("default UAMI");
        let minted = self
            .authority
            .imds_backend()
            .mint_bearer_token(&uami, EXCHANGE_AUDIENCE)
            .expect("federated token");
        std::fs::write(self.path("federated.jwt"), minted.access_token).unwrap();
    }

    /// The static identity's token: a Graph token signed with the authority's keys, bound to the
    /// certificate app's certificate (which the static identity presents).
    fn write_static_token(&self) {
        let jwt = sign_graph_token(
            self.authority.signing_keys(),
            TENANT,
            "byo-app",
            &self.app_credential.x5t_s256,
            SystemTime::now() + Duration::from_secs(3600),
            "e2e-static",
        );
        std::fs::write(self.path("static.jwt"), format!("{jwt}\n")).unwrap();
    }

    /// Every identity the tests use: the engine tests' set plus `exchange2`, `wi` (workload
    /// identity) and `byo` (static). `app_cert` / `app_key` are the certificate app's file paths
    /// (relative to the config file).
    pub fn identities(&self, app_cert: &str, app_key: &str) -> String {
        format!(
            r#"{base}  exchange2:
    kind: confidential_client
    tenant_id: {tenant}
    client_id: {exchange2}
  wi:
    kind: workload_identity
    tenant_id: {tenant}
    client_id: {exchange}
    token_file: federated.jwt
  byo:
    kind: static
    token_file: static.jwt
    certificate: {{ cert_file: app.pem, key_file: app.key }}
"#,
            base = self.base.identities_with_app_files(app_cert, app_key),
            tenant = TENANT,
            exchange = self.exchange.client_id,
            exchange2 = self.exchange2.client_id,
        )
    }

    /// Writes routes.yaml (one plain listener on 127.0.0.1:0, every token and resource host
    /// resolved to the authority, its CA trusted, IMDS at the authority) and loads it.
    pub fn config(&self, routes: &[Route]) -> Config {
        self.config_with_app_files("app.pem", "app.key", routes)
    }

    /// [`Env::config`] with the certificate app's files elsewhere (rotation tests).
    pub fn config_with_app_files(&self, app_cert: &str, app_key: &str, routes: &[Route]) -> Config {
        self.config_full(app_cert, app_key, routes, &[])
    }

    /// [`Env::config`] with some token hosts resolved to `token_overrides` addresses instead of the
    /// authority's token listener (e.g. a counting forwarder in front of it).
    pub fn config_full(
        &self,
        app_cert: &str,
        app_key: &str,
        routes: &[Route],
        token_overrides: &[(&str, SocketAddr)],
    ) -> Config {
        let resolve = resolve_yaml(&self.authority, &[], token_overrides);
        let routes_yaml: String = routes.iter().map(Route::yaml).collect();
        let path = self.write_routes_yaml(
            "",
            &resolve,
            &self.identities(app_cert, app_key),
            &routes_yaml,
        );
        config::load(&path)
    }

    /// Starts popgate on `config` with scaled retry waits and fast certificate polling.
    pub async fn popgate(&self, config: Config) -> App {
        App::start_with(
            config,
            StartOptions {
                retry: RetryTiming::scaled(RETRY_DIVISOR),
                cert_poll_interval: Some(TEST_CERT_POLL),
                ..StartOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("popgate starts: {e}"))
    }

    /// Requests the resource answered, and how many of them it refused (any status but 200).
    pub fn resource_counts(&self) -> (usize, usize) {
        let resource = resource_requests(&self.authority);
        let refused = resource.iter().filter(|r| r.status != 200).count();
        (resource.len(), refused)
    }
}

/// One route of the generated routes.yaml: matched by `/{name}/` path prefix (so every route is
/// reached unambiguously), forwarded to `upstream`, with its flow keys.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub upstream: &'static str,
    pub resource: &'static str,
    /// The flow lines (`flow`, `identity` / `leg1` / `leg2`, `token_type`, …), without indent.
    pub flow: Vec<String>,
}

impl Route {
    pub fn new(name: &str, resource: &'static str, flow: &[&str]) -> Route {
        Route {
            name: name.into(),
            upstream: resource,
            resource,
            flow: flow.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A vanilla route for `identity` with `token_type`.
    pub fn vanilla(name: &str, resource: &'static str, identity: &str, token_type: &str) -> Route {
        Route::new(
            name,
            resource,
            &[
                "flow: vanilla",
                &format!("identity: {identity}"),
                &format!("token_type: {token_type}"),
            ],
        )
    }

    /// The same route acquiring on its first request.
    pub fn lazy(mut self) -> Route {
        self.flow.push("acquire: lazy".into());
        self
    }

    /// The request path prefix that reaches this route.
    pub fn path(&self) -> String {
        format!("/{}/", self.name)
    }

    fn yaml(&self) -> String {
        let mut out = format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name}/ }}\n    upstream: {upstream}\n    resource: {resource}\n",
            name = self.name,
            upstream = self.upstream,
            resource = self.resource,
        );
        for line in &self.flow {
            out.push_str(&format!("    {line}\n"));
        }
        out
    }
}

/// The caller's request: absolute form, as an `HTTP_PROXY` client sends it. The host is one the
/// route's upstream does not depend on (routes match on the path prefix).
fn request(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://legacy.internal{path}"))
        .header(http::header::HOST, "legacy.internal")
        .body(Empty::new())
        .unwrap()
}

/// A caller's HTTP/1.1 connection to popgate, reused for many requests.
pub struct Caller {
    proxy: SocketAddr,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Caller {
    pub fn new(proxy: SocketAddr) -> Caller {
        assert!(proxy.ip().is_loopback(), "tests only target loopback");
        Caller {
            proxy,
            sender: None,
        }
    }

    /// `GET {path}` through popgate on this caller's connection (reconnecting if it was closed).
    /// A transport failure is an `Err` naming it, so load tests count it as a failed request.
    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        let exchange = async {
            let sender = match self.sender.as_mut() {
                Some(s) if s.is_ready() => s,
                _ => self.sender.insert(dial(self.proxy).await?),
            };
            send_on(sender, request(path)).await
        };
        let result = tokio::time::timeout(REQUEST_BOUND, exchange)
            .await
            .unwrap_or_else(|_| Err("request through popgate exceeded its bound".into()));
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

/// One request on a fresh connection; the test fails if the transport fails.
pub async fn get(proxy: SocketAddr, path: &str) -> Answer {
    Caller::new(proxy)
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Checks a 200 echo for a PoP route: scheme `mtls_pop` and the token bound to the certificate
/// presented. Returns the presented certificate's `x5t#S256`.
pub fn check_pop(answer: &Answer, route: &str) -> String {
    assert_eq!(answer.status, 200, "{route}: {}", answer.body);
    let echo = answer.json();
    assert_eq!(echo["scheme"], "mtls_pop", "{route}: {echo}");
    assert!(echo["cnf_x5t"].is_string(), "{route}: {echo}");
    assert_eq!(echo["cnf_x5t"], echo["presented_x5t"], "{route}: {echo}");
    echo["presented_x5t"].as_str().unwrap().to_string()
}

/// Checks a 200 echo for a Bearer route.
pub fn check_bearer(answer: &Answer, route: &str) {
    assert_eq!(answer.status, 200, "{route}: {}", answer.body);
    let echo = answer.json();
    // The resource reports the scheme it accepted as a lowercase label.
    assert_eq!(echo["scheme"], "bearer", "{route}: {echo}");
    assert!(echo["cnf_x5t"].is_null(), "{route}: {echo}");
}

/// Writes `cert_pem` / `key_pem` as `app.pem` / `app.key` in a new directory `dir/name` and
/// points the `dir/..data` symlink at it atomically (rename over the old link), the way kubelet
/// updates a mounted secret. The watched files are `dir/app.pem` → `..data/app.pem` (and `app.key`).
pub fn publish_k8s_secret(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) {
    let generation = dir.join(name);
    std::fs::create_dir(&generation).unwrap();
    std::fs::write(generation.join("app.pem"), cert_pem).unwrap();
    std::fs::write(generation.join("app.key"), key_pem).unwrap();
    super::private_key_mode(&generation.join("app.key"));
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["app.pem", "app.key"] {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

/// A TCP forwarder on 127.0.0.1 in front of `target` that counts the connections it accepted:
/// resolving one host name to it proves which host name popgate connected to. Runs until the test's
/// runtime ends.
pub async fn counting_forwarder(
    target: SocketAddr,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    assert!(target.ip().is_loopback(), "tests only target loopback");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, count)
}
