//! The registry of who exists here: tenants, certificate apps, FIC-only apps, managed identities
//! and resources. Mutable at run time (tests register apps after start) behind one lock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::imds::backend::{
    BackendError, CuId, ImdsBackend, ManagedIdentity, MintedToken, UamiSelector,
};
use crate::pki::Pki;
use crate::settings::Settings;
use crate::signing::SigningKeys;
use crate::tokens::{self, TOKEN_EXCHANGE_AUDIENCE, TokenSubject};

/// The tenant every default identity lives in (the ids of the issue / MSAL.NET tests).
pub const DEFAULT_TENANT_ID: &str = "751a212b-4003-416e-b600-e1f48e40db9f";
/// The default user-assigned identity (MSAL.NET's MSIv2 test identity).
pub const DEFAULT_UAMI_CLIENT_ID: &str = "6325cd32-9911-41f3-819c-416cdf9104e7";
pub const DEFAULT_UAMI_OBJECT_ID: &str = "ecb2ad92-3e30-4505-b79f-ac640d069f24";
pub const DEFAULT_UAMI_RESOURCE_ID: &str = "/subscriptions/c1686c51-b717-4fe0-9af3-24a20a41fb0c/resourcegroups/MSIV2-Testing-MSALNET/providers/Microsoft.ManagedIdentity/userAssignedIdentities/msiv2uami";
/// The default system-assigned identity (the client id of the IMDSv2 vectors).
pub const DEFAULT_SAMI_CLIENT_ID: &str = "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3";
pub const DEFAULT_SAMI_OBJECT_ID: &str = "5b0c4a8e-2f0d-4d5e-9a35-0c1f6f7d2a11";
/// Two more user-assigned identities, so tests can tell selectors apart.
const EXTRA_UAMIS: &[(&str, &str, &str)] = &[
    (
        "0a4f1c9e-6a55-4d35-8f0c-3c7e6d9b1a21",
        "2f6d7b0e-9c3a-4f4e-b1a8-6d5c4b3a2f11",
        "/subscriptions/c1686c51-b717-4fe0-9af3-24a20a41fb0c/resourcegroups/popgate-local/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-two",
    ),
    (
        "7e2b9d4c-1f3a-4b6e-8c5d-9a0b1c2d3e41",
        "8c1d2e3f-4a5b-4c6d-9e7f-0a1b2c3d4e51",
        "/subscriptions/c1686c51-b717-4fe0-9af3-24a20a41fb0c/resourcegroups/popgate-local/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-three",
    ),
];
/// The VM id IMDSv2 reports by default.
const DEFAULT_VM_ID: &str = "0d1c4b0e-5a8f-4e0b-9d76-2c3f1b7a6e01";
/// What IMDSv2 tells clients to post the binding-certificate token request to.
const DEFAULT_MTLS_AUTHENTICATION_ENDPOINT: &str = "https://mtlsauth.microsoft.com";

/// A refusal to change the directory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DirectoryError {
    #[error("tenant '{0}' is not known to this authority (add it first)")]
    UnknownTenant(String),
    #[error("'{0}' is not a GUID")]
    NotAGuid(String),
    #[error("client id '{0}' is already registered")]
    DuplicateClientId(String),
    #[error("no application with client id '{0}' is registered")]
    UnknownApp(String),
    #[error("the certificate to register is not X.509 DER: {0}")]
    BadCertificate(String),
    #[error("the resource audience '{0}' is empty or ends with '/.default'")]
    BadAudience(String),
}

/// Which leg-1 identity a FIC app trusts: the leg-1 token's `iss` and `sub`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
}

impl FederatedCredential {
    /// Trust tokens this authority issues to `object_id` in `tenant_id`.
    pub fn for_identity(tenant_id: &str, object_id: &str) -> Self {
        Self {
            issuer: tokens::issuer_for(tenant_id),
            subject: object_id.to_string(),
        }
    }
}

/// An application registration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct App {
    pub client_id: String,
    /// The service principal's object id (`oid` of its tokens).
    pub object_id: String,
    pub tenant_id: String,
    /// Every registered certificate (several during rotation).
    pub certificates: Vec<RegisteredCertificate>,
    /// Leg-1 identities this app accepts as FIC assertions.
    pub federated: Vec<FederatedCredential>,
    /// Subject name + issuer ("SNI") registration: the CN this app trusts on any certificate the
    /// root CA issued, instead of registered thumbprints. Its client assertions must then carry
    /// the certificate in `x5c` (Entra ID answers AADSTS700027 otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_subject: Option<String>,
}

/// A certificate registered on an app: its thumbprint, and its DER (whose public key verifies
/// the app's client assertions).
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegisteredCertificate {
    pub x5t_s256: String,
    #[serde(skip)]
    pub der: Vec<u8>,
}

impl RegisteredCertificate {
    /// Registers `der` after checking it is an X.509 certificate.
    pub fn new(der: &[u8]) -> Result<Self, DirectoryError> {
        x509_parser::parse_x509_certificate(der)
            .map_err(|e| DirectoryError::BadCertificate(e.to_string()))?;
        Ok(Self {
            x5t_s256: crate::thumbprint::x5t_s256(der),
            der: der.to_vec(),
        })
    }
}

impl std::fmt::Debug for RegisteredCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredCertificate")
            .field("x5t_s256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

/// Which token types a resource accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AcceptedTokens {
    pub bearer: bool,
    pub mtls_pop: bool,
}

/// A resource (API) tokens can be issued for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Resource {
    /// The token audience, e.g. `https://graph.microsoft.com` (scope `{audience}/.default`).
    pub audience: String,
    /// Hosts the resource listener answers as this resource (`*.` wildcards allowed).
    pub hosts: Vec<String>,
    pub accepts: AcceptedTokens,
}

struct State {
    tenants: HashSet<String>,
    apps: HashMap<String, App>,
    managed: Vec<ManagedIdentity>,
    resources: Vec<Resource>,
    cu_id: CuId,
    mtls_authentication_endpoint: String,
}

/// The directory. Implements [`ImdsBackend`] so IMDS can issue certificates and mint tokens.
pub struct Directory {
    state: RwLock<State>,
    pki: Arc<Pki>,
    keys: Arc<SigningKeys>,
    settings: Arc<Settings>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

/// Whether `s` is a GUID in the 8-4-4-4-12 hex form ESTS uses for tenants and client ids.
pub fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// The audience a scope base (`scope` minus `/.default`) or IMDS `resource` names: one trailing
/// `/` is insignificant (`https://management.azure.com/` is the usual MI resource).
pub fn normalize_audience(resource: &str) -> &str {
    let r = resource.strip_suffix("/.default").unwrap_or(resource);
    r.strip_suffix('/').unwrap_or(r)
}

/// `*.vault.azure.net` matches `x.vault.azure.net` (one label), plain names match exactly.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|label| label.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

impl Directory {
    /// A directory with the default tenant, SAMI, three UAMIs and the default resources (Graph,
    /// ARM, Key Vault, Storage, and the FIC exchange audience).
    pub fn new(pki: Arc<Pki>, keys: Arc<SigningKeys>, settings: Arc<Settings>) -> Self {
        let mut managed = vec![ManagedIdentity {
            client_id: DEFAULT_SAMI_CLIENT_ID.into(),
            object_id: DEFAULT_SAMI_OBJECT_ID.into(),
            resource_id: None,
            tenant_id: DEFAULT_TENANT_ID.into(),
            system_assigned: true,
        }];
        managed.push(ManagedIdentity {
            client_id: DEFAULT_UAMI_CLIENT_ID.into(),
            object_id: DEFAULT_UAMI_OBJECT_ID.into(),
            resource_id: Some(DEFAULT_UAMI_RESOURCE_ID.into()),
            tenant_id: DEFAULT_TENANT_ID.into(),
            system_assigned: false,
        });
        for (client_id, object_id, resource_id) in EXTRA_UAMIS {
            managed.push(ManagedIdentity {
                client_id: (*client_id).into(),
                object_id: (*object_id).into(),
                resource_id: Some((*resource_id).into()),
                tenant_id: DEFAULT_TENANT_ID.into(),
                system_assigned: false,
            });
        }
        let both = AcceptedTokens {
            bearer: true,
            mtls_pop: true,
        };
        let resource = |audience: &str, hosts: &[&str], accepts| Resource {
            audience: audience.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            accepts,
        };
        let resources = vec![
            resource(
                "https://graph.microsoft.com",
                &["graph.microsoft.com"],
                both,
            ),
            resource(
                "https://management.azure.com",
                &["management.azure.com"],
                both,
            ),
            resource("https://vault.azure.net", &["*.vault.azure.net"], both),
            resource(
                "https://storage.azure.com",
                &["storage.azure.com", "*.blob.core.windows.net"],
                both,
            ),
            // FIC leg 1's audience: a token exchange, never a resource listener's host.
            resource(TOKEN_EXCHANGE_AUDIENCE, &[], both),
        ];
        Self {
            state: RwLock::new(State {
                tenants: HashSet::from([DEFAULT_TENANT_ID.to_string()]),
                apps: HashMap::new(),
                managed,
                resources,
                cu_id: CuId {
                    vm_id: Some(DEFAULT_VM_ID.into()),
                    vmss_id: None,
                },
                mtls_authentication_endpoint: DEFAULT_MTLS_AUTHENTICATION_ENDPOINT.into(),
            }),
            pki,
            keys,
            settings,
        }
    }

    // A poisoned lock means a writer panicked between statements of a plain-data update; the
    // registry is still a valid value, so keep serving rather than fail every request.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a tenant (a GUID).
    pub fn add_tenant(&self, tenant_id: &str) -> Result<(), DirectoryError> {
        if !is_guid(tenant_id) {
            return Err(DirectoryError::NotAGuid(tenant_id.into()));
        }
        self.write().tenants.insert(tenant_id.to_ascii_lowercase());
        Ok(())
    }

    /// Whether `tenant_id` is a tenant here (case-insensitive).
    pub fn tenant_known(&self, tenant_id: &str) -> bool {
        self.read()
            .tenants
            .contains(&tenant_id.to_ascii_lowercase())
    }

    fn insert_app(&self, app: App) -> Result<App, DirectoryError> {
        if !is_guid(&app.client_id) {
            return Err(DirectoryError::NotAGuid(app.client_id));
        }
        let mut state = self.write();
        if !state.tenants.contains(&app.tenant_id.to_ascii_lowercase()) {
            return Err(DirectoryError::UnknownTenant(app.tenant_id));
        }
        let key = app.client_id.to_ascii_lowercase();
        if state.apps.contains_key(&key)
            || state
                .managed
                .iter()
                .any(|m| m.client_id.eq_ignore_ascii_case(&key))
        {
            return Err(DirectoryError::DuplicateClientId(app.client_id));
        }
        state.apps.insert(key, app.clone());
        Ok(app)
    }

    /// Registers a certificate app in `tenant_id` trusting the certificate `cert_der`.
    pub fn register_certificate_app(
        &self,
        tenant_id: &str,
        client_id: &str,
        cert_der: &[u8],
    ) -> Result<App, DirectoryError> {
        let cert = RegisteredCertificate::new(cert_der)?;
        self.insert_app(App {
            client_id: client_id.to_ascii_lowercase(),
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant_id.to_ascii_lowercase(),
            certificates: vec![cert],
            federated: Vec::new(),
            trusted_subject: None,
        })
    }

    /// Registers an app for subject-name + issuer authentication: it trusts any certificate
    /// with CN=`subject_cn` issued by the root CA, and no thumbprint.
    pub fn register_subject_name_app(
        &self,
        tenant_id: &str,
        client_id: &str,
        subject_cn: &str,
    ) -> Result<App, DirectoryError> {
        self.insert_app(App {
            client_id: client_id.to_ascii_lowercase(),
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant_id.to_ascii_lowercase(),
            certificates: Vec::new(),
            federated: Vec::new(),
            trusted_subject: Some(subject_cn.to_string()),
        })
    }

    /// Registers one more certificate on an app (rotation: both are accepted).
    pub fn add_certificate(&self, client_id: &str, cert_der: &[u8]) -> Result<(), DirectoryError> {
        let cert = RegisteredCertificate::new(cert_der)?;
        let mut state = self.write();
        let app = state
            .apps
            .get_mut(&client_id.to_ascii_lowercase())
            .ok_or_else(|| DirectoryError::UnknownApp(client_id.into()))?;
        if !app.certificates.iter().any(|c| c.x5t_s256 == cert.x5t_s256) {
            app.certificates.push(cert);
        }
        Ok(())
    }

    /// Unregisters a certificate (the end of a rotation).
    pub fn remove_certificate(
        &self,
        client_id: &str,
        x5t_s256: &str,
    ) -> Result<(), DirectoryError> {
        let mut state = self.write();
        let app = state
            .apps
            .get_mut(&client_id.to_ascii_lowercase())
            .ok_or_else(|| DirectoryError::UnknownApp(client_id.into()))?;
        app.certificates.retain(|c| c.x5t_s256 != x5t_s256);
        Ok(())
    }

    /// Registers a FIC-only app (no certificate) trusting the given leg-1 identities.
    pub fn register_fic_app(
        &self,
        tenant_id: &str,
        client_id: &str,
        federated: Vec<FederatedCredential>,
    ) -> Result<App, DirectoryError> {
        self.insert_app(App {
            client_id: client_id.to_ascii_lowercase(),
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant_id.to_ascii_lowercase(),
            certificates: Vec::new(),
            federated,
            trusted_subject: None,
        })
    }

    /// Adds a federated credential to any registered app.
    pub fn add_federated_credential(
        &self,
        client_id: &str,
        credential: FederatedCredential,
    ) -> Result<(), DirectoryError> {
        let mut state = self.write();
        let app = state
            .apps
            .get_mut(&client_id.to_ascii_lowercase())
            .ok_or_else(|| DirectoryError::UnknownApp(client_id.into()))?;
        app.federated.push(credential);
        Ok(())
    }

    /// The app registered as `client_id`, if any.
    pub fn app(&self, client_id: &str) -> Option<App> {
        self.read()
            .apps
            .get(&client_id.to_ascii_lowercase())
            .cloned()
    }

    /// Adds a managed identity (its tenant must be known; its client id unused).
    pub fn add_managed_identity(&self, identity: ManagedIdentity) -> Result<(), DirectoryError> {
        for id in [&identity.client_id, &identity.object_id] {
            if !is_guid(id) {
                return Err(DirectoryError::NotAGuid(id.clone()));
            }
        }
        let mut state = self.write();
        if !state
            .tenants
            .contains(&identity.tenant_id.to_ascii_lowercase())
        {
            return Err(DirectoryError::UnknownTenant(identity.tenant_id));
        }
        let key = identity.client_id.to_ascii_lowercase();
        if state.apps.contains_key(&key)
            || state
                .managed
                .iter()
                .any(|m| m.client_id.eq_ignore_ascii_case(&key))
        {
            return Err(DirectoryError::DuplicateClientId(identity.client_id));
        }
        if identity.system_assigned {
            state.managed.retain(|m| !m.system_assigned);
        }
        state.managed.push(identity);
        Ok(())
    }

    /// Every managed identity, the system-assigned one first when present.
    pub fn managed_identities(&self) -> Vec<ManagedIdentity> {
        let mut all = self.read().managed.clone();
        all.sort_by_key(|m| !m.system_assigned);
        all
    }

    /// The managed identity whose client id is `client_id`.
    pub fn managed_identity(&self, client_id: &str) -> Option<ManagedIdentity> {
        self.read()
            .managed
            .iter()
            .find(|m| m.client_id.eq_ignore_ascii_case(client_id))
            .cloned()
    }

    /// Adds (or replaces, by audience) a resource.
    pub fn add_resource(&self, resource: Resource) -> Result<(), DirectoryError> {
        if resource.audience.is_empty() || resource.audience.ends_with("/.default") {
            return Err(DirectoryError::BadAudience(resource.audience));
        }
        let mut state = self.write();
        state.resources.retain(|r| r.audience != resource.audience);
        state.resources.push(resource);
        Ok(())
    }

    /// The resource a scope base or IMDS `resource` parameter names (see [`normalize_audience`]).
    pub fn resource(&self, audience: &str) -> Option<Resource> {
        let wanted = normalize_audience(audience);
        self.read()
            .resources
            .iter()
            .find(|r| normalize_audience(&r.audience) == wanted)
            .cloned()
    }

    /// The resource the resource listener serves as `host` (for the resource server seam).
    pub fn resource_for_host(&self, host: &str) -> Option<Resource> {
        self.read()
            .resources
            .iter()
            .find(|r| r.hosts.iter().any(|p| host_matches(p, host)))
            .cloned()
    }

    /// The `cuId` IMDSv2 reports.
    pub fn set_cu_id(&self, cu_id: CuId) {
        self.write().cu_id = cu_id;
    }

    /// The `mtls_authentication_endpoint` IMDSv2 hands out (`https://host[:port]`).
    pub fn set_mtls_authentication_endpoint(&self, endpoint: &str) {
        self.write().mtls_authentication_endpoint = endpoint.trim_end_matches('/').to_string();
    }
}

impl ImdsBackend for Directory {
    fn system_assigned(&self) -> Option<ManagedIdentity> {
        self.read()
            .managed
            .iter()
            .find(|m| m.system_assigned)
            .cloned()
    }

    fn user_assigned(&self, selector: &UamiSelector) -> Option<ManagedIdentity> {
        self.read()
            .managed
            .iter()
            .filter(|m| !m.system_assigned)
            .find(|m| match selector {
                UamiSelector::ClientId(id) => m.client_id.eq_ignore_ascii_case(id),
                UamiSelector::ObjectId(id) => m.object_id.eq_ignore_ascii_case(id),
                // ARM ids are case-insensitive.
                UamiSelector::ResourceId(id) => m
                    .resource_id
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(id)),
            })
            .cloned()
    }

    fn cu_id(&self) -> CuId {
        self.read().cu_id.clone()
    }

    fn issue_certificate(
        &self,
        identity: &ManagedIdentity,
        spki_der: &[u8],
        lifetime: Duration,
    ) -> Result<Vec<u8>, BackendError> {
        self.pki
            .issue_binding_cert(spki_der, &identity.tenant_id, &identity.client_id, lifetime)
            .map_err(|e| BackendError {
                error: "invalid_request".into(),
                code: 90023,
                description: e.to_string(),
            })
    }

    fn mtls_authentication_endpoint(&self) -> String {
        self.read().mtls_authentication_endpoint.clone()
    }

    fn mint_bearer_token(
        &self,
        identity: &ManagedIdentity,
        resource: &str,
    ) -> Result<MintedToken, BackendError> {
        let Some(found) = self.resource(resource) else {
            return Err(BackendError {
                error: "invalid_resource".into(),
                code: 500011,
                description: format!(
                    "The resource principal named {resource} was not found in the tenant named {}.",
                    identity.tenant_id
                ),
            });
        };
        let settings = self.settings.tokens();
        let subject = TokenSubject {
            tenant_id: identity.tenant_id.clone(),
            object_id: identity.object_id.clone(),
            client_id: identity.client_id.clone(),
        };
        let minted = tokens::mint(&self.keys, &settings, &subject, &found.audience, None).map_err(
            |description| BackendError {
                error: "temporarily_unavailable".into(),
                code: 90033,
                description,
            },
        )?;
        Ok(MintedToken {
            access_token: minted.jwt.to_string(),
            expires_in: settings.lifetime.as_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_and_hosts() {
        assert_eq!(
            normalize_audience("https://management.azure.com//.default"),
            "https://management.azure.com"
        );
        assert_eq!(
            normalize_audience("https://graph.microsoft.com"),
            "https://graph.microsoft.com"
        );
        assert!(host_matches("*.vault.azure.net", "kv1.vault.azure.net"));
        assert!(!host_matches("*.vault.azure.net", "vault.azure.net"));
        assert!(!host_matches("*.vault.azure.net", "a.b.vault.azure.net"));
        assert!(host_matches("graph.microsoft.com", "GRAPH.microsoft.com"));
        assert!(is_guid(DEFAULT_TENANT_ID));
        assert!(!is_guid("common"));
    }
}
