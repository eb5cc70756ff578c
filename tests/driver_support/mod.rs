//! Helpers for the driver and `popgate run` tests: the local authority (token-verifying resource),
//! static tokens signed with its keys and bound to a certificate it issued, a routes.yaml in a temp
//! directory, and requests through popgate. Only loopback addresses are used.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use popgate::certs::binding::BindingCert;
use popgate::certs::cert_files;
use popgate::dataplane::{ListenerSpec, Proxy, ProxyHandle, ProxySettings};
use popgate::route::slot::RouteSlot;
use popgate::route::table::{RouteSpec, RouteTable};
use popgate_authority::claims::{Claims, Confirmation};
use popgate_authority::{Authority, Endpoint, SigningKeys};

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
        let authority = Authority::start(Default::default()).await.unwrap();
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
        match popgate::config::load(path) {
            Ok(c) => c,
            Err(errors) => panic!(
                "{}",
                errors
                    .errors()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }

    /// Requests the resource answered, and how many of them it refused as `invalid_token`.
    pub fn resource_counts(&self) -> (usize, usize) {
        let log = self.authority.observations().log();
        let resource: Vec<_> = log
            .iter()
            .filter(|r| r.endpoint == Endpoint::Resource)
            .collect();
        let refused = resource
            .iter()
            .filter(|r| r.outcome == "invalid_token")
            .count();
        (resource.len(), refused)
    }
}

/// Issues a client certificate from the authority's CA; writes `{name}.pem` / `{name}.key`.
pub fn issue(authority: &Authority, dir: &Path, name: &str) -> (PathBuf, PathBuf, BindingCert) {
    let credential = authority.pki().issue_app_credential(name).unwrap();
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, &credential.cert_pem).unwrap();
    std::fs::write(&key_file, credential.key_pem.as_bytes()).unwrap();
    let binding = cert_files::load_binding_cert(&cert_file, &key_file).unwrap();
    (cert_file, key_file, binding)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
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
    let now = SystemTime::now().min(exp);
    let claims = Claims {
        iss: "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0".into(),
        aud: "https://graph.microsoft.com".into(),
        sub: appid.into(),
        tid: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        oid: appid.into(),
        appid: appid.into(),
        iat: unix(now),
        nbf: unix(now) - 60,
        exp: unix(exp),
        uti: uuid::Uuid::new_v4().simple().to_string(),
        ver: "2.0".into(),
        cnf: Some(Confirmation {
            x5t_s256: binding.x5t_s256().to_string(),
        }),
    };
    keys.sign(&claims).unwrap()
}

/// A response as the caller saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Upper bound for one request through popgate; a hang fails the test instead of stalling it.
pub const REQUEST_BOUND: Duration = Duration::from_secs(60);

/// Sends `method http://{host}{path}` (absolute form, as an HTTP_PROXY client does) with `body`
/// over a fresh HTTP/1.1 connection to popgate.
pub async fn send<B>(proxy: SocketAddr, method: &str, host: &str, path: &str, body: B) -> Answer
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    assert!(proxy.ip().is_loopback(), "tests only target loopback");
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"))
        .header("host", host)
        .body(body)
        .unwrap();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    };
    tokio::time::timeout(REQUEST_BOUND, exchange)
        .await
        .expect("request through popgate exceeded its bound")
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

/// A plain-HTTP popgate on a loopback port whose one route sends `GRAPH` to `slot`.
pub async fn serve_graph(slot: Arc<RouteSlot>) -> (ProxyHandle, SocketAddr) {
    let table = RouteTable::new(vec![(
        RouteSpec {
            name: "graph".into(),
            host: Some(GRAPH.parse().unwrap()),
            path_prefix: None,
            strip_prefix: false,
            upstream: None,
        },
        slot,
    )]);
    let proxy = Proxy::start(
        vec![ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: None,
        }],
        Arc::new(ArcSwap::from_pointee(table)),
        ProxySettings::default(),
    )
    .await
    .unwrap();
    let addr = proxy.local_addrs()[0];
    (proxy, addr)
}
