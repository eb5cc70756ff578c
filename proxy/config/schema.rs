//! The raw routes.yaml schema as serde types: exactly what the file may contain, with source
//! positions on every value so validation can point at the offending node.
//!
//! Every struct denies unknown keys. Semantics (which keys each identity kind accepts, file
//! loading, cross references) live in `validate`; these types only describe shape.

use std::fmt;
use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::identity::token::TokenType;

/// A value with its position in the file.
pub(crate) type S<T> = Spanned<T>;

/// The whole file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Schema version; must be 1.
    #[schemars(with = "u64")]
    pub version: S<u64>,
    /// Where callers connect. At least one.
    #[schemars(with = "Vec<RawListener>")]
    pub listeners: S<Vec<S<RawListener>>>,
    /// The admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[serde(default)]
    #[schemars(with = "Option<RawAdmin>")]
    pub admin: Option<S<RawAdmin>>,
    /// Outbound network settings.
    #[serde(default)]
    #[schemars(with = "Option<RawNetwork>")]
    pub network: Option<S<RawNetwork>>,
    /// Global timeouts; each route may override any of them.
    #[serde(default)]
    #[schemars(with = "Option<RawTimeouts>")]
    pub timeouts: Option<S<RawTimeouts>>,
    /// What a stop signal does before the listeners close.
    #[serde(default)]
    #[schemars(with = "Option<RawDrain>")]
    pub drain: Option<S<RawDrain>>,
    /// Caller-facing HTTP limits; popgate's defaults apply to every key left out.
    #[serde(default)]
    #[schemars(with = "Option<RawLimits>")]
    pub limits: Option<S<RawLimits>>,
    /// Upstream connection pool bounds; each route may override any of them.
    #[serde(default)]
    #[schemars(with = "Option<RawUpstreamPool>")]
    pub upstream_pool: Option<S<RawUpstreamPool>>,
    /// Named identities that routes refer to, in file order.
    #[serde(default)]
    #[schemars(with = "Option<std::collections::BTreeMap<String, RawIdentity>>")]
    pub identities: Option<S<SpannedMap<S<RawIdentity>>>>,
    /// The routes, in file order. At least one.
    #[schemars(with = "Vec<RawRoute>")]
    pub routes: S<Vec<S<RawRoute>>>,
    /// OpenTelemetry trace export (off when absent and no `OTEL_EXPORTER_OTLP_*` is set).
    #[serde(default)]
    #[schemars(with = "Option<RawTelemetry>")]
    pub telemetry: Option<S<RawTelemetry>>,
    /// Data-plane worker threads, one runtime and one listening socket per listener each
    /// (default: the CPUs this process may use).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub workers: Option<S<u64>>,
}

/// OpenTelemetry trace export.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The OTLP/HTTP base URL (`http://collector:4318`); `/v1/traces` is appended.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub otlp_endpoint: Option<S<String>>,
    /// The `service.name` resource attribute (default `OTEL_SERVICE_NAME`, else `popgate`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub service_name: Option<S<String>>,
}

/// One listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// `ip:port` to bind (exactly one of `address` and `unix`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub address: Option<S<String>>,
    /// A Unix-socket path to bind instead of an address.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub unix: Option<S<String>>,
    /// The Unix socket's permission bits, an octal string (default `"0660"`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub mode: Option<S<String>>,
    /// Inbound TLS (and optional caller mTLS); plain HTTP when absent.
    #[serde(default)]
    #[schemars(with = "Option<RawInboundTls>")]
    pub tls: Option<S<RawInboundTls>>,
    /// CONNECT interception for routed hosts; CONNECT is refused (405) when absent.
    #[serde(default)]
    #[schemars(with = "Option<RawIntercept>")]
    pub intercept: Option<S<RawIntercept>>,
}

/// CONNECT interception: the local CA that signs a leaf for each intercepted host.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIntercept {
    /// PEM CA certificate (first block).
    #[schemars(with = "String")]
    pub ca_cert_file: S<String>,
    /// PEM private key of the CA.
    #[schemars(with = "String")]
    pub ca_key_file: S<String>,
    /// Accept a CA key file any user on the host can read (default false).
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub allow_insecure_key_permissions: Option<S<bool>>,
}

/// Inbound TLS files.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInboundTls {
    /// PEM server certificate chain, leaf first.
    #[schemars(with = "String")]
    pub cert_file: S<String>,
    /// PEM private key of the server certificate.
    #[schemars(with = "String")]
    pub key_file: S<String>,
    /// PEM CA certificates that caller certificates must chain to; when set, callers must
    /// present a certificate (mTLS).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub client_ca_file: Option<S<String>>,
    /// `true` loads a `key_file` that any user may read or write (refused otherwise).
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub allow_insecure_key_permissions: Option<S<bool>>,
}

/// The admin endpoint.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `ip:port` to bind.
    #[schemars(with = "String")]
    pub address: S<String>,
}

/// Outbound network settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// IMDS base URL; env `AZURE_POD_IDENTITY_AUTHORITY_HOST` overrides it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub imds_endpoint: Option<S<String>>,
    /// `host:port` → `ip:port`, curl `--resolve` semantics, for every outbound connection.
    #[serde(default)]
    #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
    pub resolve: Option<S<SpannedMap<S<String>>>>,
    /// PEM CA files trusted in addition to the system roots for every outbound TLS connection.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub extra_ca_files: Option<S<Vec<S<String>>>>,
    /// The outbound HTTP proxy: a URL, `none`, or a mapping (`url`, `no_proxy`,
    /// `credentials_env`). Absent: `HTTPS_PROXY` / `NO_PROXY` as curl reads them.
    #[serde(default)]
    #[schemars(with = "Option<RawProxySchema>")]
    pub proxy: Option<S<RawProxy>>,
}

/// Timeouts as duration strings (`500ms`, `5s`, `2m`, `1h`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP + TLS connect to the upstream or token endpoint.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connect: Option<S<String>>,
    /// Whole request, until the response head arrives.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub request: Option<S<String>>,
    /// How long an idle pooled upstream connection is kept.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub idle: Option<S<String>>,
    /// Global only: how long a shutdown waits for in-flight requests to finish.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub drain: Option<S<String>>,
}

/// The stop sequence (`drain:`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDrain {
    /// How long listeners keep accepting after SIGTERM while `/readyz` answers 503 (`0s`: none).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub delay: Option<S<String>>,
}

/// Upstream connection pool bounds (global, or a route's overrides).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamPool {
    /// Most live connections per upstream host (HTTP/1.1: requests at once per host).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_connections_per_host: Option<S<u64>>,
    /// Most callers waiting for a connection; beyond, 503 at once.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_waiting: Option<S<u64>>,
    /// How long a caller may wait for a connection (duration string) before 503.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub wait_timeout: Option<S<String>>,
}

/// Caller-facing HTTP limits (all listeners).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Most request header lines (431 beyond).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_headers: Option<S<u64>>,
    /// Most bytes in a request head (431 beyond).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_header_bytes: Option<S<u64>>,
    /// Most bytes in a request target (414 beyond).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_uri_bytes: Option<S<u64>>,
    /// Most request body bytes on any route (413 beyond); routes may set their own.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_body_bytes: Option<S<u64>>,
    /// Most open caller connections per listener.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_connections: Option<S<u64>>,
    /// Time a caller has to send an HTTP/1 request head (idle keep-alive included).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub header_read_timeout: Option<S<String>>,
    /// Time a request body may go without a byte arriving before it is cut off.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub request_body_timeout: Option<S<String>>,
    /// Time a caller may stop reading a response before its connection is closed.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub response_body_timeout: Option<S<String>>,
    /// Most concurrent HTTP/2 streams per caller connection.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub h2_max_concurrent_streams: Option<S<u64>>,
    /// Time from accept (or the TLS handshake) to a caller's first byte.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub first_byte_timeout: Option<S<String>>,
    /// Time from the first byte until the protocol is known (HTTP/2: preface and first SETTINGS).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub h2_preface_timeout: Option<S<String>>,
    /// Time a caller's TLS handshake may take.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tls_handshake_timeout: Option<S<String>>,
    /// Time a caller connection may stay open with no request in flight.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub keep_alive_timeout: Option<S<String>>,
}

/// The identity kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// Azure managed identity via IMDS (system-assigned, or user-assigned with a selector).
    ManagedIdentity,
    /// An app registration (certificate app, or certificate-less FIC leg-2 app).
    ConfidentialClient,
    /// Kubernetes workload identity (federated service-account token); Bearer only.
    WorkloadIdentity,
    /// Bring your own token + bound certificate from files.
    Static,
}

impl IdentityKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::ManagedIdentity => "managed_identity",
            IdentityKind::ConfidentialClient => "confidential_client",
            IdentityKind::WorkloadIdentity => "workload_identity",
            IdentityKind::Static => "static",
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One identity. A flat struct rather than a tagged enum so that every key keeps its position;
/// `validate` checks which keys each `kind` accepts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// Which kind of identity this is.
    #[schemars(with = "IdentityKind")]
    pub kind: S<IdentityKind>,
    /// managed_identity: UAMI client id; confidential_client / workload_identity: app client id.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub client_id: Option<S<String>>,
    /// managed_identity: UAMI ARM resource id.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub resource_id: Option<S<String>>,
    /// managed_identity: UAMI object (principal) id.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub object_id: Option<S<String>>,
    /// managed_identity: argv of a command that prints an attestation token (optional hook).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub attestation_command: Option<S<Vec<S<String>>>>,
    /// managed_identity: the source (`app_service`, `azure_arc`, …) instead of detecting it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub source: Option<S<String>>,
    /// confidential_client / workload_identity: tenant GUID or domain.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tenant_id: Option<S<String>>,
    /// confidential_client / static: the certificate and key files.
    #[serde(default)]
    #[schemars(with = "Option<RawCertificate>")]
    pub certificate: Option<S<RawCertificate>>,
    /// confidential_client: ESTS region (alphanumeric), e.g. `westus3`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub region: Option<S<String>>,
    /// confidential_client / workload_identity: authority host (default login.microsoftonline.com).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub authority_host: Option<S<String>>,
    /// static: the token file; workload_identity: the federated token file.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token_file: Option<S<String>>,
    /// confidential_client / static: load a PEM key file that others (world) may read or write
    /// instead of refusing it.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub allow_insecure_key_permissions: Option<S<bool>>,
    /// confidential_client: send the certificate chain as `x5c` in the Bearer client assertion
    /// (subject name + issuer authentication); default false, as MSAL.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub send_x5c: Option<S<bool>>,
}

/// A certificate and its private key: either a PEM pair (`cert_file` + `key_file`) or a PKCS#12
/// file (`pkcs12_file` + `password_env`). Which form is used is checked in validation, so both
/// mistakes (both forms, neither) get a positioned error.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain, leaf first.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cert_file: Option<S<String>>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1; unencrypted).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub key_file: Option<S<String>>,
    /// PKCS#12 (`.pfx` / `.p12`) file holding the certificate chain and its key.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub pkcs12_file: Option<S<String>>,
    /// Name of the environment variable holding the PKCS#12 password (never the password).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub password_env: Option<S<String>>,
}

/// The flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// One direct acquisition with `identity`.
    Vanilla,
    /// Federated identity credential exchange: `leg1` then `leg2`.
    Fic,
}

/// When a route's token is acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Acquire {
    /// At startup, before the route is ready.
    Eager,
    /// On the route's first request.
    Lazy,
}

/// One route.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name (`[A-Za-z0-9_.-]+`), used in logs and metrics.
    #[schemars(with = "String")]
    pub name: S<String>,
    /// What requests this route takes.
    #[serde(rename = "match")]
    #[schemars(with = "RawMatch")]
    pub match_: S<RawMatch>,
    /// Remove the matched `path_prefix` before forwarding.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub strip_prefix: Option<S<bool>>,
    /// `https://host[:port][/base]`; default `https://{matched request host}`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub upstream: Option<S<String>>,
    /// The resource (audience); the scope is `{resource}/.default`.
    #[schemars(with = "String")]
    pub resource: S<String>,
    /// `vanilla` or `fic`.
    #[schemars(with = "FlowKind")]
    pub flow: S<FlowKind>,
    /// vanilla: the identity.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub identity: Option<S<String>>,
    /// fic: the leg-1 identity.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub leg1: Option<S<String>>,
    /// fic: the leg-2 identity (a confidential client).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub leg2: Option<S<String>>,
    /// The final token type (default mtls_pop).
    #[serde(default)]
    #[schemars(with = "Option<TokenType>")]
    pub token_type: Option<S<TokenType>>,
    /// fic: the leg-1 token type (default mtls_pop).
    #[serde(default)]
    #[schemars(with = "Option<TokenType>")]
    pub leg1_token_type: Option<S<TokenType>>,
    /// `eager` (default) or `lazy`.
    #[serde(default)]
    #[schemars(with = "Option<Acquire>")]
    pub acquire: Option<S<Acquire>>,
    /// Per-route timeouts, overriding the global ones key by key.
    #[serde(default)]
    #[schemars(with = "Option<RawTimeouts>")]
    pub timeouts: Option<S<RawTimeouts>>,
    /// Most request body bytes on this route (413 beyond), overriding `limits.max_body_bytes`.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_body_bytes: Option<S<u64>>,
    /// Per-route upstream pool bounds, overriding the global `upstream_pool` key by key.
    #[serde(default)]
    #[schemars(with = "Option<RawUpstreamPool>")]
    pub upstream_pool: Option<S<RawUpstreamPool>>,
    /// Which callers may use the route (any rule admits); absent: anyone reaching a listener.
    #[serde(default)]
    #[schemars(with = "Option<Vec<RawAllowRule>>")]
    pub allow: Option<S<Vec<S<RawAllowRule>>>>,
}

/// One `allow:` rule: exactly one key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAllowRule {
    /// Source network of a TCP caller (`10.0.0.0/8`, `::1`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cidr: Option<S<String>>,
    /// Exact subject DN of an mTLS caller's certificate (`CN=app,O=corp`, any order).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub subject: Option<S<String>>,
    /// A DNS SAN of an mTLS caller's certificate.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub dns_san: Option<S<String>>,
    /// A URI SAN (e.g. SPIFFE ID) of an mTLS caller's certificate.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub uri_san: Option<S<String>>,
    /// The uid of a Unix-socket caller.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub uid: Option<S<u64>>,
    /// The primary gid of a Unix-socket caller.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub gid: Option<S<u64>>,
}

/// A route's match.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Exact host or `*.suffix`, optionally with a non-default port.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub host: Option<S<String>>,
    /// Path prefix, starting with `/`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path_prefix: Option<S<String>>,
}

/// A YAML mapping kept in file order with the position of every key. Duplicate keys are already
/// refused by the parser.
#[derive(Debug)]
pub struct SpannedMap<V>(pub Vec<(S<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SpannedMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = SpannedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<S<String>>()? {
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(SpannedMap(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// `network.proxy`: a bare URL (or `none`), or its long form. `Debug` shows the URL with its
/// credentials (userinfo) as `***`.
pub enum RawProxy {
    /// `proxy: http://host:port` or `proxy: none`.
    Url(String),
    /// `proxy: {url: …, no_proxy: […], credentials_env: …}`.
    Settings(Box<RawProxySettings>),
}

/// `network.proxy` as the schema describes it: the loader's hand-written visitor takes exactly
/// these two shapes.
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code, clippy::large_enum_variant)] // Only its schema is used: never built.
enum RawProxySchema {
    /// `proxy: http://host:port` or `proxy: none`.
    Url(String),
    /// `proxy: {url: …, no_proxy: […], credentials_env: …}`.
    Settings(RawProxySettings),
}

/// The long form of `network.proxy`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProxySettings {
    /// The proxy URL or `none`; absent: `HTTPS_PROXY` / `https_proxy`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub url: Option<S<String>>,
    /// Hosts reached directly; absent: `NO_PROXY` / `no_proxy`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub no_proxy: Option<S<Vec<S<String>>>>,
    /// The environment variable holding `user:password` for Basic proxy authentication.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub credentials_env: Option<S<String>>,
}

impl fmt::Debug for RawProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawProxy::Url(url) => f
                .debug_tuple("Url")
                .field(&super::outbound_proxy::redact_url(url))
                .finish(),
            RawProxy::Settings(s) => f.debug_tuple("Settings").field(s).finish(),
        }
    }
}

impl fmt::Debug for RawProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawProxySettings")
            .field(
                "url",
                &self
                    .url
                    .as_ref()
                    .map(|u| super::outbound_proxy::redact_url(&u.value)),
            )
            .field("no_proxy", &self.no_proxy)
            .field("credentials_env", &self.credentials_env)
            .finish()
    }
}

impl<'de> Deserialize<'de> for RawProxy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProxyVisitor;

        impl<'de> Visitor<'de> for ProxyVisitor {
            type Value = RawProxy;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a proxy URL, `none`, or a mapping with `url`, `no_proxy`, `credentials_env`",
                )
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawProxy::Url(v.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawProxySettings::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|s| RawProxy::Settings(Box::new(s)))
            }
        }

        deserializer.deserialize_any(ProxyVisitor)
    }
}
