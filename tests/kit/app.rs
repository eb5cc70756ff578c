//! Shared fixture for the end-to-end tests through the real proxy: a local authority on loopback
//! (token endpoint, IMDS, token-verifying resource), a routes.yaml written to a temp dir and loaded
//! by popgate's real config loader, `App::start_with` serving it, and a plain HTTP/1.1 caller that
//! sends absolute-form requests to popgate's listener. Only loopback addresses are ever targets.
#![allow(dead_code)] // each test crate uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use popgate::app::{App, StartOptions};
use popgate::config::{self, Config};
use popgate::engine::sources::retry::RetryTiming;
use popgate_authority::claims::{Claims, Confirmation};
use popgate_authority::{AppCredential, Authority, AuthorityConfig, FederatedCredential};

pub use popgate_authority::directory::{
    DEFAULT_SAMI_CLIENT_ID, DEFAULT_TENANT_ID as TENANT, DEFAULT_UAMI_CLIENT_ID,
    DEFAULT_UAMI_OBJECT_ID, DEFAULT_UAMI_RESOURCE_ID,
};
#[allow(unused_imports)] // not every test crate injects faults
pub use popgate_authority::{Endpoint, Fault};

/// Upper bound for one request through popgate; a hang fails the test instead of stalling it.
pub const REQUEST_BOUND: Duration = Duration::from_secs(60);
/// Upper bound for the eager routes' first acquisitions (the whole matrix, on a busy 2-core box).
pub const INITIAL_ROUND_BOUND: Duration = Duration::from_secs(120);
/// Retry waits divided by this: IMDS's 410 schedule (7 × 10 s) takes 70 ms, the 5xx retry 1 ms.
pub const RETRY_DIVISOR: u32 = 1000;
/// Certificate files are compared this often, so a rotation is picked up quickly.
pub const TEST_CERT_POLL: Duration = Duration::from_millis(50);

/// The token exchange audience FIC leg 1 asks for.
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
pub const GRAPH: &str = "https://graph.microsoft.com";
pub const ARM: &str = "https://management.azure.com";

/// Token hosts popgate may call, all resolved to the authority's token listener.
const TOKEN_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "mtlsauth.microsoft.com",
    "westus3.mtlsauth.microsoft.com",
];
/// Resource hosts routes forward to, all resolved to the authority's resource listener.
const RESOURCE_HOSTS: &[&str] = &["graph.microsoft.com", "management.azure.com"];

/// A running authority with a certificate app, two FIC leg-2 apps and a temp dir for config files.
pub struct Env {
    pub authority: Authority,
    pub dir: tempfile::TempDir,
    /// A certificate app (files `app.pem` / `app.key`).
    pub app: popgate_authority::App,
    pub app_credential: AppCredential,
    /// A certificate-less app trusting `app`, the default UAMI and the SAMI as leg 1; also the
    /// workload identity's app (its federated token is the UAMI's exchange token).
    pub exchange: popgate_authority::App,
    /// A certificate-less app trusting `exchange` (the workload identity) as a Bearer leg 1.
    pub exchange2: popgate_authority::App,
}

impl Env {
    /// An authority whose resource lets Bearer callers connect without a client certificate (as
    /// real Bearer resources do; popgate presents none on Bearer routes). `mtls_pop` requests
    /// still need the bound certificate.
    pub async fn start() -> Env {
        Env::start_with(AuthorityConfig {
            resource_requires_client_cert: false,
            ..AuthorityConfig::default()
        })
        .await
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
                    FederatedCredential::for_identity(TENANT, &app.object_id),
                    FederatedCredential::for_identity(TENANT, DEFAULT_UAMI_OBJECT_ID),
                    FederatedCredential::for_identity(TENANT, &sami_object),
                ],
            )
            .unwrap();
        let exchange2 = directory
            .register_fic_app(
                TENANT,
                &uuid::Uuid::new_v4().to_string(),
                vec![FederatedCredential::for_identity(
                    TENANT,
                    &exchange.object_id,
                )],
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
        let env = Env {
            authority,
            dir,
            app,
            app_credential,
            exchange,
            exchange2,
        };
        env.write_federated_token();
        env.write_static_token();
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
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
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            iss: format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            aud: GRAPH.into(),
            sub: "byo-app".into(),
            tid: TENANT.into(),
            oid: "byo-app".into(),
            appid: "byo-app".into(),
            iat: now,
            nbf: now - 60,
            exp: now + 3600,
            uti: "e2e-static".into(),
            ver: "2.0".into(),
            cnf: Some(Confirmation {
                x5t_s256: self.app_credential.x5t_s256.clone(),
            }),
        };
        let jwt = self.authority.signing_keys().sign(&claims).unwrap();
        std::fs::write(self.path("static.jwt"), format!("{jwt}\n")).unwrap();
    }

    /// Every identity the tests use. `app_cert` / `app_key` are the certificate app's file paths
    /// (relative to the config file).
    pub fn identities(&self, app_cert: &str, app_key: &str) -> String {
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
    certificate: {{ cert_file: "{app_cert}", key_file: "{app_key}" }}
  app-west:
    kind: confidential_client
    tenant_id: {tenant}
    client_id: {app}
    region: westus3
    certificate: {{ cert_file: "{app_cert}", key_file: "{app_key}" }}
  exchange:
    kind: confidential_client
    tenant_id: {tenant}
    client_id: {exchange}
  exchange2:
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
            uami = DEFAULT_UAMI_CLIENT_ID,
            uami_r = DEFAULT_UAMI_RESOURCE_ID,
            uami_o = DEFAULT_UAMI_OBJECT_ID,
            tenant = TENANT,
            app = self.app.client_id,
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
        let mut resolve = String::new();
        for host in TOKEN_HOSTS {
            let addr = token_overrides
                .iter()
                .find(|(h, _)| h == host)
                .map_or(self.authority.token_addr(), |(_, a)| *a);
            resolve.push_str(&format!("    \"{host}:443\": \"{addr}\"\n"));
        }
        for host in RESOURCE_HOSTS {
            resolve.push_str(&format!(
                "    \"{host}:443\": \"{}\"\n",
                self.authority.resource_addr()
            ));
        }
        let mut routes_yaml = String::new();
        for route in routes {
            routes_yaml.push_str(&route.yaml());
        }
        let yaml = format!(
            "version: 1\nlisteners:\n  - address: 127.0.0.1:0\nnetwork:\n  imds_endpoint: {imds}\n  resolve:\n{resolve}  extra_ca_files: [ca.pem]\nidentities:{ids}\nroutes:\n{routes_yaml}",
            imds = self.authority.imds_base_url(),
            ids = self.identities(app_cert, app_key),
        );
        let path = self.path("routes.yaml");
        std::fs::write(&path, yaml).unwrap();
        config::load_with_env(&path, &|_| None).unwrap_or_else(|e| panic!("config: {e}"))
    }

    /// Starts popgate on `config` with scaled retry waits and fast certificate polling.
    pub async fn popgate(&self, config: Config) -> App {
        App::start_with(
            config,
            StartOptions {
                retry: RetryTiming::scaled(RETRY_DIVISOR),
                cert_poll_interval: Some(TEST_CERT_POLL),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("popgate starts: {e}"))
    }

    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.authority.observations().count(endpoint)
    }

    /// Requests the resource answered, and how many of them it refused (any status but 200).
    pub fn resource_counts(&self) -> (usize, usize) {
        let log = self.authority.observations().log();
        let resource: Vec<_> = log
            .iter()
            .filter(|r| r.endpoint == Endpoint::Resource)
            .collect();
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

/// A response as the caller saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
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
                _ => {
                    let tcp = tokio::net::TcpStream::connect(self.proxy)
                        .await
                        .map_err(|e| format!("connect to popgate: {e}"))?;
                    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                        .await
                        .map_err(|e| format!("handshake with popgate: {e}"))?;
                    tokio::spawn(conn);
                    self.sender.insert(sender)
                }
            };
            let response = sender
                .send_request(request(path))
                .await
                .map_err(|e| format!("request through popgate: {e}"))?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("response body: {e}"))?
                .to_bytes();
            Ok(Answer {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
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
