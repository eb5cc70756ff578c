//! The local authority as every fixture sets it up: the hosts resolved to its listeners, a temp
//! dir with its CA and a certificate app's files, a FIC app trusting that app and the managed
//! identities, graph tokens signed with its keys, and what its resource server saw.

use std::net::SocketAddr;
use std::path::Path;
use std::time::SystemTime;

use popgate_authority::claims::{Claims, Confirmation};
use popgate_authority::directory::{
    DEFAULT_SAMI_CLIENT_ID, DEFAULT_TENANT_ID, DEFAULT_UAMI_OBJECT_ID,
};
use popgate_authority::{
    App, AppCredential, Authority, AuthorityConfig, Endpoint, FederatedCredential, RequestRecord,
    SigningKeys,
};

/// Token hosts popgate may call, all resolved to the authority's token listener.
pub const TOKEN_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "mtlsauth.microsoft.com",
    "westus3.mtlsauth.microsoft.com",
    "westus3.login.microsoft.com",
];
/// Resource hosts routes forward to, all resolved to the authority's resource listener.
pub const RESOURCE_HOSTS: &[&str] = &["graph.microsoft.com", "management.azure.com"];

/// An authority whose resource lets Bearer callers connect without a client certificate (as
/// real Bearer resources do; popgate presents none on Bearer routes). `mtls_pop` requests still
/// need the bound certificate.
pub fn serving_bearer() -> AuthorityConfig {
    AuthorityConfig {
        resource_requires_client_cert: false,
        ..AuthorityConfig::default()
    }
}

/// The `network.resolve` entries (YAML, indented for the map): `extra` first, then every token
/// host (to the authority's token listener unless `token_overrides` names another address) and
/// every resource host (to its resource listener).
pub fn resolve_yaml(
    authority: &Authority,
    extra: &[(&str, SocketAddr)],
    token_overrides: &[(&str, SocketAddr)],
) -> String {
    let mut resolve = String::new();
    for (host_port, addr) in extra {
        resolve.push_str(&format!("    \"{host_port}\": \"{addr}\"\n"));
    }
    for host in TOKEN_HOSTS {
        let addr = token_overrides
            .iter()
            .find(|(h, _)| h == host)
            .map_or(authority.token_addr(), |(_, a)| *a);
        resolve.push_str(&format!("    \"{host}:443\": \"{addr}\"\n"));
    }
    for host in RESOURCE_HOSTS {
        resolve.push_str(&format!(
            "    \"{host}:443\": \"{}\"\n",
            authority.resource_addr()
        ));
    }
    resolve
}

/// Writes `app.pem` / `app.key` into `dir`.
pub fn write_credential(dir: &Path, credential: &AppCredential) {
    std::fs::write(dir.join("app.pem"), &credential.cert_pem).expect("write app.pem");
    std::fs::write(dir.join("app.key"), credential.key_pem.as_bytes()).expect("write app.key");
    super::private_key_mode(&dir.join("app.key"));
}

/// A new temp dir holding the authority's CA (`ca.pem`) and `credential` (`app.pem` / `app.key`).
pub fn seeded_dir(authority: &Authority, credential: &AppCredential) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ca.pem"), authority.ca_pem()).expect("write ca.pem");
    write_credential(dir.path(), credential);
    dir
}

/// Registers a certificate-less FIC leg-2 app trusting `app`, the default UAMI and the SAMI as
/// leg 1.
pub fn exchange_app(authority: &Authority, app: &App) -> App {
    let directory = authority.directory();
    let sami_object = directory
        .managed_identity(DEFAULT_SAMI_CLIENT_ID)
        .expect("default SAMI")
        .object_id;
    directory
        .register_fic_app(
            DEFAULT_TENANT_ID,
            &uuid::Uuid::new_v4().to_string(),
            vec![
                FederatedCredential::for_identity(DEFAULT_TENANT_ID, &app.object_id),
                FederatedCredential::for_identity(DEFAULT_TENANT_ID, DEFAULT_UAMI_OBJECT_ID),
                FederatedCredential::for_identity(DEFAULT_TENANT_ID, &sami_object),
            ],
        )
        .unwrap()
}

/// Seconds since the epoch.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

/// A v2.0 graph token for `appid` in `tenant`, bound to the certificate with `x5t_s256`, issued
/// now (or at `exp` if that is earlier) and expiring at `exp`, signed with `keys`.
pub fn sign_graph_token(
    keys: &SigningKeys,
    tenant: &str,
    appid: &str,
    x5t_s256: &str,
    exp: SystemTime,
    uti: &str,
) -> String {
    let now = SystemTime::now().min(exp);
    let claims = Claims {
        iss: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        aud: "https://graph.microsoft.com".into(),
        sub: appid.into(),
        tid: tenant.into(),
        oid: appid.into(),
        appid: appid.into(),
        iat: unix(now),
        nbf: unix(now) - 60,
        exp: unix(exp),
        uti: uti.into(),
        ver: "2.0".into(),
        cnf: Some(Confirmation {
            x5t_s256: x5t_s256.to_string(),
        }),
    };
    keys.sign(&claims).unwrap()
}

/// Every request the authority's resource server answered so far.
pub fn resource_requests(authority: &Authority) -> Vec<RequestRecord> {
    authority
        .observations()
        .log()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Resource)
        .collect()
}

/// Resource requests refused as `invalid_token` (expired token, or cnf not matching the
/// presented certificate).
pub fn invalid_token_refusals(requests: &[RequestRecord]) -> usize {
    requests
        .iter()
        .filter(|r| r.outcome == "invalid_token")
        .count()
}
