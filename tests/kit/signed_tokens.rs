//! Helpers for the driver and `popgate run` tests: the local authority (token-verifying resource),
//! static tokens signed with its keys and bound to a certificate it issued, a routes.yaml in a temp
//! directory, and requests through popgate. Only loopback addresses are used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use popgate::certs::binding::BindingCert;
use popgate::certs::cert_files;
use popgate::dataplane::{ListenerSpec, Proxy, ProxyHandle, ProxySettings};
use popgate::engine::credential::Credential;
use popgate::engine::driver::{DriverSettings, RouteDriver};
use popgate::engine::schedule::RefreshPolicy;
use popgate::net::client::UpstreamSettings;
use popgate::net::connect::ResolveMap;
use popgate::net::upstream_tls::ExtraRoots;
use popgate::route::slot::{RouteInfo, RouteSlot};
use popgate::route::table::{RouteSpec, RouteTable};
use popgate_authority::{Authority, AuthorityConfig, SigningKeys};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::authority::{invalid_token_refusals, resource_requests, sign_graph_token};
use super::dataplane::{plain_listener, route, route_table};
pub use super::http::{Answer, REQUEST_BOUND, send};

/// The resource host every test routes to (the authority serves it).
pub const GRAPH: &str = "graph.microsoft.com";

/// A running authority, a temp directory with its CA and a bound certificate, and a token file.
pub struct Env {
    pub authority: Authority,
    pub dir: tempfile::TempDir,
    pub token_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub binding: BindingCert,
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(Default::default()).await
    }

    /// [`Env::start`] with the authority started from `config` (e.g. an HTTP/1.1-only resource).
    pub async fn start_with(config: AuthorityConfig) -> Env {
        let authority = Authority::start(config).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), authority.ca_pem()).unwrap();
        let (cert_file, key_file, binding) = issue(&authority, dir.path(), "bound");
        Env {
            authority,
            token_file: dir.path().join("token.jwt"),
            cert_file,
            key_file,
            binding,
            dir,
        }
    }

    /// A token for graph bound to `binding`, living `lifetime`, naming `appid` (to tell tokens
    /// apart in the resource's echo), signed with the authority's keys.
    pub fn token(&self, binding: &BindingCert, lifetime: Duration, appid: &str) -> String {
        sign(self.authority.signing_keys(), binding, lifetime, appid)
    }

    /// Writes `token` to the token file.
    pub fn write_token(&self, token: &str) {
        std::fs::write(&self.token_file, format!("{token}\n")).unwrap();
    }

    /// A routes.yaml with one static `graph` route (and `extra_route_keys` added to it), a plain
    /// listener on 127.0.0.1:0, resolving graph to the authority's resource listener.
    pub fn config(&self, extra_route_keys: &str) -> PathBuf {
        let resource = self.authority.resource_addr();
        let yaml = format!(
            r#"version: 1
listeners:
  - address: 127.0.0.1:0
network:
  resolve:
    "graph.microsoft.com:443": "{resource}"
  extra_ca_files: [ca.pem]
identities:
  byo:
    kind: static
    token_file: token.jwt
    certificate: {{ cert_file: bound.pem, key_file: bound.key }}
routes:
  - name: graph
    match: {{ host: graph.microsoft.com }}
    resource: https://graph.microsoft.com
    flow: vanilla
    identity: byo
    token_type: mtls_pop
{extra_route_keys}"#
        );
        let path = self.dir.path().join("routes.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Loads the config at `path` (panicking with every error if it is invalid).
    pub fn load(&self, path: &Path) -> popgate::config::Config {
        super::config::load(path)
    }

    /// Requests the resource answered, and how many of them it refused as `invalid_token`.
    pub fn resource_counts(&self) -> (usize, usize) {
        let resource = resource_requests(&self.authority);
        (resource.len(), invalid_token_refusals(&resource))
    }
}

/// Issues a client certificate from the authority's CA; writes `{name}.pem` / `{name}.key`.
pub fn issue(authority: &Authority, dir: &Path, name: &str) -> (PathBuf, PathBuf, BindingCert) {
    let credential = authority.pki().issue_app_credential(name).unwrap();
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, &credential.cert_pem).unwrap();
    std::fs::write(&key_file, credential.key_pem.as_bytes()).unwrap();
    super::private_key_mode(&key_file);
    let binding = cert_files::load_binding_cert(&cert_file, &key_file).unwrap();
    (cert_file, key_file, binding)
}

/// A graph token bound to `binding`, signed with `keys`.
pub fn sign(keys: &SigningKeys, binding: &BindingCert, lifetime: Duration, appid: &str) -> String {
    sign_expiring(keys, binding, SystemTime::now() + lifetime, appid)
}

/// A graph token bound to `binding` expiring at `exp` (possibly in the past), signed with `keys`.
pub fn sign_expiring(
    keys: &SigningKeys,
    binding: &BindingCert,
    exp: SystemTime,
    appid: &str,
) -> String {
    sign_graph_token(
        keys,
        "72f988bf-86f1-41af-91ab-2d7cd011db47",
        appid,
        binding.x5t_s256(),
        exp,
        &uuid::Uuid::new_v4().simple().to_string(),
    )
}

/// `GET http://graph.microsoft.com{path}` through popgate.
pub async fn get(proxy: SocketAddr, path: &str) -> Answer {
    send(
        proxy,
        "GET",
        GRAPH,
        path,
        http_body_util::Empty::<bytes::Bytes>::new(),
    )
    .await
}

/// Checks a 200 echo from the resource: PoP, and the token bound to the certificate presented.
/// Returns the token's appid.
pub fn check_echo(answer: &Answer) -> String {
    assert_eq!(answer.status, 200, "{}", answer.body);
    let echo = answer.json();
    assert_eq!(echo["scheme"], "mtls_pop", "{echo}");
    assert_eq!(echo["cnf_x5t"], echo["presented_x5t"], "{echo}");
    echo["appid"].as_str().unwrap().to_string()
}

/// A running route driver: the slot it publishes into (`slot.demand_stop()` stops it), its task.
pub struct GraphDriver {
    pub slot: Arc<RouteSlot>,
    pub task: JoinHandle<()>,
}

impl Env {
    /// Spawns a route driver publishing `credential`'s tokens into a new slot for route `graph` on
    /// `identity`, with graph.microsoft.com:443 resolving to the authority's resource (trusted
    /// through the authority's CA) and the default refresh policy.
    pub fn spawn_graph_driver(
        &self,
        credential: Arc<dyn Credential>,
        identity: &str,
    ) -> GraphDriver {
        let mut resolve = ResolveMap::default();
        resolve
            .insert("graph.microsoft.com:443", self.authority.resource_addr())
            .unwrap();
        let mut roots = ExtraRoots::default();
        roots.add_der("authority-ca", self.authority.pki().ca_der().clone());
        let slot = Arc::new(RouteSlot::for_route(
            "graph",
            RouteInfo {
                identity: Some(identity.into()),
                request_timeout: None,
                lazy: false,
            },
        ));
        let task = RouteDriver::new(
            credential,
            slot.clone(),
            DriverSettings {
                upstream: UpstreamSettings {
                    extra_roots: roots,
                    resolve: Arc::new(resolve),
                    ..UpstreamSettings::default()
                },
                policy: RefreshPolicy::default(),
            },
        )
        .spawn();
        GraphDriver { slot, task }
    }
}

/// A plain-HTTP popgate on a loopback port whose one route sends `GRAPH` to `slot`.
pub async fn serve_graph(slot: Arc<RouteSlot>) -> (ProxyHandle, SocketAddr) {
    let table = route_table(vec![(route("graph", Some(GRAPH), None), slot)]);
    let proxy = Proxy::start(vec![plain_listener()], table, ProxySettings::default())
        .await
        .unwrap();
    let addr = proxy.local_addrs()[0];
    (proxy, addr)
}
