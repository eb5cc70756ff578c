//! The factory: one [`Credential`] per distinct (flow, identities, resource, token type), shared by
//! every route that needs it; one certificate watcher per certificate app; one IMDSv2 binding per
//! managed identity; FIC routes sharing a leg 1 share the leg-1 credential.
//!
//! On a config reload, [`build_credential_set`] takes the previous [`CredentialSet`] and reuses
//! every credential (and certificate watcher, IMDSv2 binding) whose key and identity definitions
//! are unchanged: the same `Arc`, so its cached token and single-flight state carry over. Static
//! identities are never carried over: a reload is when their token file is re-read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::config::model::{self, Config, Flow, Identity, IdentityKind, Route};
use crate::identity::azure_arc::ArcTokenDir;
use crate::identity::imds_endpoint::{ImdsBase, V2_DEFAULT_RESOURCE_ID_KEY};
use crate::identity::mi_source::{MiSource, check_mtls_pop};
use crate::identity::token::TokenType;
use crate::identity::token_request::FIC_LEG1_RESOURCE;
use crate::net::connect::ResolveMap;
use crate::net::token_transport::{Transport, TransportSettings};
use crate::net::upstream_tls::ExtraRoots;

use super::cache::TokenCache;
use super::cached::Cached;
use super::credential::{Credential, CredentialLabels, EngineError};
use super::schedule::RefreshPolicy;
use super::sources::cert_app::{CertAppSettings, CertAppSource};
use super::sources::cert_watch::{DEFAULT_CERT_POLL_INTERVAL, WatchedCert};
use super::sources::fic::FicSource;
use super::sources::imds_v2_binding::ImdsV2Identity;
use super::sources::managed_identity_bearer::{BearerEndpoint, ManagedIdentityBearerSource};
use super::sources::managed_identity_pop::ManagedIdentityPopSource;
use super::sources::retry::RetryTiming;
use super::sources::static_file::StaticCredential;
use super::sources::workload_identity::WorkloadIdentitySource;
use super::token_source::{Target, TokenSource};

/// What every source shares. One cache for all sources: keys carry the identity, scope, type and
/// binding, so sources never collide, and one place holds every entry (metrics, `forget_identity`).
#[derive(Clone, Debug)]
pub struct EngineDeps {
    /// Sends token-endpoint and IMDS requests.
    pub transport: Arc<Transport>,
    /// The token cache (single flight per key, Retry-After blocks).
    pub cache: Arc<TokenCache<EngineError>>,
    /// Retry waits (scaled down in tests).
    pub retry: RetryTiming,
    /// How often certificate files are compared.
    pub cert_poll_interval: Duration,
    /// IMDS base URL.
    pub imds: ImdsBase,
    /// The IMDSv2 query key for a UAMI resource id (protocol.md §3: unproven, overridable).
    pub imds_v2_resource_id_key: String,
    /// The directory Azure Arc's challenge files must be in: the agent's, always, in production
    /// (see [`ArcTokenDir`]).
    pub arc_token_dir: ArcTokenDir,
}

/// Why the credentials could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A route's credential cannot be made.
    #[error("route `{route}`: {message}")]
    Route {
        /// The route.
        route: String,
        /// What is wrong.
        message: String,
    },
    /// The network settings or environment are unusable.
    #[error("credential engine: {0}")]
    Setup(String),
}

impl EngineDeps {
    /// From the config's network settings. (Managed-identity sources are the config's: detected
    /// when it was loaded.)
    pub fn from_config(
        config: &Config,
        policy: RefreshPolicy,
        retry: RetryTiming,
    ) -> Result<Self, BuildError> {
        let mut resolve = ResolveMap::default();
        for (host_port, addr) in &config.network.resolve {
            resolve
                .insert(host_port, *addr)
                .map_err(|e| BuildError::Setup(e.to_string()))?;
        }
        let mut extra_roots = ExtraRoots::default();
        for (i, ca) in config.network.extra_ca.iter().enumerate() {
            extra_roots.add_der(&format!("network.extra_ca[{i}]"), ca.clone());
        }
        // IMDS is never proxied, even when its endpoint is overridden with an https URL.
        let proxy = config.network.proxy.clone().map(|proxy| {
            let imds_host = config.network.imds_endpoint.host().unwrap_or_default();
            Arc::new(proxy.with_direct_host(imds_host))
        });
        let transport = Transport::new(TransportSettings {
            resolve: Arc::new(resolve),
            extra_roots,
            proxy,
            ..TransportSettings::default()
        });
        let imds = ImdsBase::parse(&config.network.imds_endpoint.to_string())
            .map_err(|e| BuildError::Setup(e.to_string()))?;
        Ok(Self {
            transport: Arc::new(transport),
            cache: Arc::new(TokenCache::new(policy)),
            retry,
            cert_poll_interval: DEFAULT_CERT_POLL_INTERVAL,
            imds,
            imds_v2_resource_id_key: V2_DEFAULT_RESOURCE_ID_KEY.to_string(),
            arc_token_dir: ArcTokenDir::platform(),
        })
    }
}

/// Builds every route's credential, keyed by route name. Needs a Tokio runtime (certificate
/// watchers are spawned).
pub fn build_credentials(
    config: &Config,
    deps: &EngineDeps,
) -> Result<BTreeMap<String, Arc<dyn Credential>>, BuildError> {
    build_credential_set(config, deps, None).map(|set| set.by_route)
}

/// Every route's credential, plus what the factory shared between them (keyed the same way), so
/// a reload can carry unchanged entries over.
#[derive(Clone)]
pub struct CredentialSet {
    /// Each route's credential, by route name.
    pub by_route: BTreeMap<String, Arc<dyn Credential>>,
    /// The identity definitions the entries were built from.
    identities: BTreeMap<String, Identity>,
    /// The transport the entries use: entries are only reused with the same engine dependencies.
    transport: Arc<Transport>,
    credentials: HashMap<String, Arc<dyn Credential>>,
    watched: HashMap<String, Arc<WatchedCert>>,
    imds_v2: HashMap<String, Arc<ImdsV2Identity>>,
    imds_turns: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl std::fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSet")
            .field("routes", &self.by_route.keys().collect::<Vec<_>>())
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Builds every route's credential like [`build_credentials`], reusing `previous`'s entries whose
/// key and identity definitions are unchanged (only when `previous` was built with the same
/// `deps`). Needs a Tokio runtime.
pub fn build_credential_set(
    config: &Config,
    deps: &EngineDeps,
    previous: Option<&CredentialSet>,
) -> Result<CredentialSet, BuildError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(BuildError::Setup(
            "build_credentials must run inside a Tokio runtime".into(),
        ));
    }
    let previous = previous.filter(|p| Arc::ptr_eq(&p.transport, &deps.transport));
    let mut factory = Factory {
        config,
        deps,
        previous,
        credentials: HashMap::new(),
        watched: HashMap::new(),
        cert_apps: HashMap::new(),
        imds_v2: HashMap::new(),
        imds_turns: HashMap::new(),
    };
    let mut out = BTreeMap::new();
    for route in &config.routes {
        let credential = factory.route(route).map_err(|message| BuildError::Route {
            route: route.name.clone(),
            message,
        })?;
        out.insert(route.name.clone(), credential);
    }
    Ok(CredentialSet {
        by_route: out,
        identities: config.identities.clone(),
        transport: Arc::clone(&deps.transport),
        credentials: factory.credentials,
        watched: factory.watched,
        imds_v2: factory.imds_v2,
        imds_turns: factory.imds_turns,
    })
}

/// Whether an entry built for identity `old` can serve identity `new`. A certificate read from
/// watched files is compared by its files (the watcher follows their content); a static identity
/// never matches, so a reload re-reads its token file and certificate.
fn same_definition(old: &Identity, new: &Identity) -> bool {
    match (old, new) {
        (Identity::ManagedIdentity(a), Identity::ManagedIdentity(b)) => a == b,
        (Identity::WorkloadIdentity(a), Identity::WorkloadIdentity(b)) => a == b,
        (Identity::ConfidentialClient(a), Identity::ConfidentialClient(b)) => {
            let same_certificate = match (&a.certificate_files, &b.certificate_files) {
                (Some(fa), Some(fb)) => fa == fb,
                (None, None) => a.certificate == b.certificate,
                _ => false,
            };
            a.tenant_id == b.tenant_id
                && a.client_id == b.client_id
                && a.region == b.region
                && a.authority_host == b.authority_host
                && a.send_x5c == b.send_x5c
                && same_certificate
        }
        _ => false,
    }
}

struct Factory<'a> {
    config: &'a Config,
    deps: &'a EngineDeps,
    /// The set a reload carries entries over from.
    previous: Option<&'a CredentialSet>,
    /// By (flow, identities, resource, token type).
    credentials: HashMap<String, Arc<dyn Credential>>,
    watched: HashMap<String, Arc<WatchedCert>>,
    /// A confidential client's source per token type, shared by its routes.
    cert_apps: HashMap<(String, TokenType), Arc<CertAppSource>>,
    imds_v2: HashMap<String, Arc<ImdsV2Identity>>,
    imds_turns: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

fn app_settings(app: &model::ConfidentialClient) -> CertAppSettings {
    CertAppSettings {
        tenant_id: app.tenant_id.clone(),
        client_id: app.client_id.clone(),
        authority_host: app.authority_host.clone(),
        region: app.region.clone(),
        send_x5c: app.send_x5c,
    }
}

impl Factory<'_> {
    /// `source`'s tokens for (`labels`, `resource`) behind the shared token cache: the credential
    /// routes use.
    fn cached<S: TokenSource>(
        &self,
        labels: CredentialLabels,
        resource: &str,
        source: S,
    ) -> Result<Arc<dyn Credential>, String> {
        let target = Target::new(labels, resource).map_err(|e| e.message)?;
        Ok(Arc::new(Cached::new(
            target,
            source,
            Arc::clone(&self.deps.cache),
        )))
    }

    /// The previous set, when every identity in `names` is defined the same way in it as now.
    fn carried(&self, names: &[&str]) -> Option<&CredentialSet> {
        let previous = self.previous?;
        names
            .iter()
            .all(
                |name| match (previous.identities.get(*name), self.config.identity(name)) {
                    (Some(old), Some(new)) => same_definition(old, new),
                    _ => false,
                },
            )
            .then_some(previous)
    }

    /// The previous set's credential under `dedup`, when its identities are unchanged; recorded
    /// in this set.
    fn reuse(&mut self, dedup: &str, names: &[&str]) -> Option<Arc<dyn Credential>> {
        let existing = Arc::clone(self.carried(names)?.credentials.get(dedup)?);
        self.credentials
            .insert(dedup.to_string(), Arc::clone(&existing));
        Some(existing)
    }

    fn identity(&self, name: &str) -> Result<&Identity, String> {
        self.config
            .identity(name)
            .ok_or_else(|| format!("identity `{name}` is not defined"))
    }

    fn route(&mut self, route: &Route) -> Result<Arc<dyn Credential>, String> {
        match &route.flow {
            Flow::Vanilla { identity } => self.vanilla(identity, &route.resource, route.token_type),
            Flow::Fic {
                leg1,
                leg2,
                leg1_token_type,
            } => self.fic(
                leg1,
                *leg1_token_type,
                leg2,
                &route.resource,
                route.token_type,
            ),
        }
    }

    fn vanilla(
        &mut self,
        name: &str,
        resource: &str,
        token_type: TokenType,
    ) -> Result<Arc<dyn Credential>, String> {
        let dedup = format!("vanilla|{name}|{resource}|{token_type}");
        if let Some(existing) = self.credentials.get(&dedup) {
            return Ok(Arc::clone(existing));
        }
        if let Some(existing) = self.reuse(&dedup, &[name]) {
            return Ok(existing);
        }
        let identity = self.identity(name)?.clone();
        let labels = CredentialLabels {
            identity: name.to_string(),
            identity_kind: identity.kind().as_str(),
            flow: "vanilla",
            token_type,
            leg1: None,
        };
        let deps = self.deps.clone();
        let msg = |e: EngineError| e.message;
        let credential: Arc<dyn Credential> = match (&identity, token_type) {
            (Identity::ManagedIdentity(mi), TokenType::MtlsPop) => {
                // Config validation refuses this already; a hand-built config gets MSAL's error.
                check_mtls_pop(mi.source.kind()).map_err(|e| e.to_string())?;
                let carried = self
                    .carried(&[name])
                    .and_then(|p| p.imds_v2.get(name))
                    .cloned();
                let shared = self
                    .imds_v2
                    .entry(name.to_string())
                    .or_insert_with(|| {
                        if let Some(carried) = carried {
                            return carried;
                        }
                        ImdsV2Identity::new(
                            name,
                            deps.imds.clone(),
                            mi.selector.clone(),
                            &deps.imds_v2_resource_id_key,
                            mi.attestation_command.clone(),
                            deps.clone(),
                        )
                    })
                    .clone();
                let source = ManagedIdentityPopSource::new(shared, deps);
                self.cached(labels, resource, source)?
            }
            (Identity::ManagedIdentity(mi), TokenType::Bearer) => {
                let endpoint = match &mi.source {
                    MiSource::Imds => BearerEndpoint::Imds(deps.imds.clone()),
                    other => BearerEndpoint::Source(other.clone()),
                };
                let carried = self
                    .carried(&[name])
                    .and_then(|p| p.imds_turns.get(name))
                    .cloned();
                let turn = self
                    .imds_turns
                    .entry(name.to_string())
                    .or_insert_with(|| carried.unwrap_or_default())
                    .clone();
                let source =
                    ManagedIdentityBearerSource::new(endpoint, mi.selector.clone(), turn, deps);
                self.cached(labels, resource, source)?
            }
            (Identity::ConfidentialClient(app), _) => {
                let key = (name.to_string(), token_type);
                let source = match self.cert_apps.get(&key) {
                    Some(shared) => Arc::clone(shared),
                    None => {
                        let cert = self.watched_cert(name, app)?;
                        let source = CertAppSource::new(&labels, app_settings(app), cert, deps)
                            .map_err(msg)?;
                        let source = Arc::new(source);
                        self.cert_apps.insert(key, Arc::clone(&source));
                        source
                    }
                };
                self.cached(labels, resource, source)?
            }
            (Identity::WorkloadIdentity(wi), TokenType::Bearer) => {
                let source = WorkloadIdentitySource::new(&labels, wi, deps).map_err(msg)?;
                self.cached(labels, resource, source)?
            }
            (Identity::WorkloadIdentity(_), TokenType::MtlsPop) => {
                return Err(format!(
                    "workload identity `{name}` gives Bearer tokens only, not mtls_pop"
                ));
            }
            (Identity::Static(identity), _) => Arc::new(StaticCredential::new(
                labels,
                identity.token_file.clone(),
                identity.certificate.clone(),
                token_type,
            )),
        };
        self.credentials.insert(dedup, Arc::clone(&credential));
        Ok(credential)
    }

    fn watched_cert(
        &mut self,
        name: &str,
        app: &model::ConfidentialClient,
    ) -> Result<Arc<WatchedCert>, String> {
        if let Some(existing) = self.watched.get(name) {
            return Ok(Arc::clone(existing));
        }
        if let Some(carried) = self.carried(&[name]).and_then(|p| p.watched.get(name)) {
            let carried = Arc::clone(carried);
            self.watched.insert(name.to_string(), Arc::clone(&carried));
            return Ok(carried);
        }
        let cert = app.certificate.clone().ok_or_else(|| {
            format!(
                "confidential client `{name}` has no certificate, so it can only be a FIC leg 2"
            )
        })?;
        let watched = match &app.certificate_files {
            Some(files) => WatchedCert::watch(
                cert,
                files.clone(),
                self.deps.cert_poll_interval,
                Arc::clone(&self.deps.transport),
            ),
            None => WatchedCert::fixed(cert),
        };
        self.watched.insert(name.to_string(), Arc::clone(&watched));
        Ok(watched)
    }

    fn fic(
        &mut self,
        leg1: &str,
        leg1_type: TokenType,
        leg2: &str,
        resource: &str,
        token_type: TokenType,
    ) -> Result<Arc<dyn Credential>, String> {
        let dedup = format!("fic|{leg1}|{leg1_type}|{leg2}|{resource}|{token_type}");
        if let Some(existing) = self.credentials.get(&dedup) {
            return Ok(Arc::clone(existing));
        }
        if let Some(existing) = self.reuse(&dedup, &[leg1, leg2]) {
            // Later FIC routes on the same leg 1 must share the leg-1 credential inside it.
            let leg1_key = format!("vanilla|{leg1}|{FIC_LEG1_RESOURCE}|{leg1_type}");
            let _ = self.reuse(&leg1_key, &[leg1]);
            return Ok(existing);
        }
        let Identity::ConfidentialClient(app) = self.identity(leg2)?.clone() else {
            return Err(format!(
                "FIC leg 2 `{leg2}` must be a confidential client (a managed identity can never be leg 2)"
            ));
        };
        let first = self
            .vanilla(leg1, FIC_LEG1_RESOURCE, leg1_type)
            .map_err(|e| format!("FIC leg 1: {e}"))?;
        let labels = CredentialLabels {
            identity: leg2.to_string(),
            identity_kind: IdentityKind::ConfidentialClient.as_str(),
            flow: "fic",
            token_type,
            leg1: Some(leg1.to_string()),
        };
        let source = FicSource::new(&labels, first, app_settings(&app), self.deps.clone())
            .map_err(|e| e.message)?;
        let credential = self.cached(labels, resource, source)?;
        self.credentials.insert(dedup, Arc::clone(&credential));
        Ok(credential)
    }
}
