//! Making the local authority's directory match a config: tenants, certificate apps, FIC-only
//! apps and their federated credentials, managed identities, resources.

use popgate_authority::directory::{DEFAULT_TENANT_ID, Directory, FederatedCredential, Resource};
use popgate_authority::imds::backend::{self, ImdsBackend as _};
use popgate_authority::tokens::issuer_for;

use crate::config::model::{Config, Flow, Identity, ManagedIdentity, UamiSelector};

use super::targets::upstream_host;

/// The `sub` of the federated (Kubernetes service-account) tokens `popgate dev` mints for
/// workload identities, and so what their app registrations trust.
pub const DEV_SERVICE_ACCOUNT: &str = "system:serviceaccount:popgate-dev:popgate";

/// Why the directory cannot be made to match the config.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// An identity the authority cannot represent.
    #[error("identity `{identity}`: the local authority cannot serve it: {reason}")]
    Identity {
        /// The identity's name in the config.
        identity: String,
        /// What is wrong.
        reason: String,
    },
    /// A route whose resource cannot be registered.
    #[error("route `{route}`: the local authority cannot serve it: {reason}")]
    Route {
        /// The route's name.
        route: String,
        /// What is wrong.
        reason: String,
    },
}

fn identity_err(identity: &str, reason: impl ToString) -> RegisterError {
    RegisterError::Identity {
        identity: identity.to_string(),
        reason: reason.to_string(),
    }
}

/// Registers everything `config` needs in `directory`.
pub fn register(directory: &Directory, config: &Config) -> Result<(), RegisterError> {
    add_tenants(directory, config)?;
    move_sami_off_app_ids(directory, config)?;
    for (name, identity) in &config.identities {
        match identity {
            Identity::ManagedIdentity(mi) => ensure_managed_identity(directory, name, mi)?,
            Identity::ConfidentialClient(cc) => {
                let result = match (&cc.certificate, directory.app(&cc.client_id)) {
                    (Some(cert), None) => directory
                        .register_certificate_app(
                            &cc.tenant_id,
                            &cc.client_id,
                            cert.leaf_der().as_ref(),
                        )
                        .map(drop),
                    (Some(cert), Some(_)) => {
                        directory.add_certificate(&cc.client_id, cert.leaf_der().as_ref())
                    }
                    (None, None) => directory
                        .register_fic_app(&cc.tenant_id, &cc.client_id, Vec::new())
                        .map(drop),
                    (None, Some(_)) => Ok(()),
                };
                result.map_err(|e| identity_err(name, e))?;
            }
            Identity::WorkloadIdentity(wi) => {
                let trust = FederatedCredential {
                    issuer: issuer_for(&wi.tenant_id),
                    subject: DEV_SERVICE_ACCOUNT.to_string(),
                };
                let result = if directory.app(&wi.client_id).is_some() {
                    add_federated_once(directory, &wi.client_id, trust)
                } else {
                    directory
                        .register_fic_app(&wi.tenant_id, &wi.client_id, vec![trust])
                        .map(drop)
                };
                result.map_err(|e| identity_err(name, e))?;
            }
            Identity::Static(_) => {}
        }
    }
    trust_fic_leg1s(directory, config)?;
    add_resources(directory, config)
}

/// Every tenant an app lives in (the authority knows only its default one at start).
fn add_tenants(directory: &Directory, config: &Config) -> Result<(), RegisterError> {
    for (name, identity) in &config.identities {
        let tenant = match identity {
            Identity::ConfidentialClient(cc) => &cc.tenant_id,
            Identity::WorkloadIdentity(wi) => &wi.tenant_id,
            _ => continue,
        };
        directory.add_tenant(tenant).map_err(|e| {
            identity_err(
                name,
                format!("{e}: the local authority knows tenants by id only"),
            )
        })?;
    }
    Ok(())
}

/// The config's app client ids, lowercased, with the identity naming each.
fn app_client_ids(config: &Config) -> Vec<(&str, String)> {
    config
        .identities
        .iter()
        .filter_map(|(name, identity)| match identity {
            Identity::ConfidentialClient(cc) => Some((name.as_str(), cc.client_id.to_lowercase())),
            Identity::WorkloadIdentity(wi) => Some((name.as_str(), wi.client_id.to_lowercase())),
            _ => None,
        })
        .collect()
}

/// The authority's default system-assigned identity shares its client id with the IMDSv2 test
/// vectors, which the shipped config's certificate app also uses. A client id names one principal,
/// so when an app claims it the SAMI gets fresh ids; a UAMI clash is a real config conflict.
fn move_sami_off_app_ids(directory: &Directory, config: &Config) -> Result<(), RegisterError> {
    for (name, client_id) in app_client_ids(config) {
        let Some(existing) = directory.managed_identity(&client_id) else {
            continue;
        };
        if !existing.system_assigned {
            return Err(identity_err(
                name,
                format!(
                    "client id {client_id} is also the client id of a user-assigned managed identity"
                ),
            ));
        }
        let sami = backend::ManagedIdentity {
            client_id: uuid::Uuid::new_v4().to_string(),
            object_id: uuid::Uuid::new_v4().to_string(),
            resource_id: None,
            tenant_id: existing.tenant_id.clone(),
            system_assigned: true,
        };
        tracing::info!(
            identity = %name,
            client_id = %client_id,
            sami_client_id = %sami.client_id,
            "the local authority's system-assigned identity moves to a fresh client id"
        );
        directory
            .add_managed_identity(sami)
            .map_err(|e| identity_err(name, e))?;
    }
    Ok(())
}

fn authority_selector(selector: &UamiSelector) -> backend::UamiSelector {
    match selector {
        UamiSelector::ClientId(v) => backend::UamiSelector::ClientId(v.clone()),
        UamiSelector::ResourceId(v) => backend::UamiSelector::ResourceId(v.clone()),
        UamiSelector::ObjectId(v) => backend::UamiSelector::ObjectId(v.clone()),
    }
}

/// The authority's identity for a config managed identity, if it has one.
fn find_managed(directory: &Directory, mi: &ManagedIdentity) -> Option<backend::ManagedIdentity> {
    match &mi.selector {
        None => directory.system_assigned(),
        Some(selector) => directory.user_assigned(&authority_selector(selector)),
    }
}

/// Adds a user-assigned identity for a selector the authority does not know (the system-assigned
/// one always exists).
fn ensure_managed_identity(
    directory: &Directory,
    name: &str,
    mi: &ManagedIdentity,
) -> Result<(), RegisterError> {
    let Some(selector) = &mi.selector else {
        return Ok(());
    };
    if find_managed(directory, mi).is_some() {
        return Ok(());
    }
    let fresh = || uuid::Uuid::new_v4().to_string();
    let mut identity = backend::ManagedIdentity {
        client_id: fresh(),
        object_id: fresh(),
        resource_id: None,
        tenant_id: DEFAULT_TENANT_ID.to_string(),
        system_assigned: false,
    };
    match selector {
        UamiSelector::ClientId(v) => identity.client_id = v.clone(),
        UamiSelector::ObjectId(v) => identity.object_id = v.clone(),
        UamiSelector::ResourceId(v) => identity.resource_id = Some(v.clone()),
    }
    if identity.resource_id.is_none() {
        identity.resource_id = Some(format!(
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/popgate-dev/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        ));
    }
    directory
        .add_managed_identity(identity)
        .map_err(|e| identity_err(name, e))
}

fn add_federated_once(
    directory: &Directory,
    client_id: &str,
    trust: FederatedCredential,
) -> Result<(), popgate_authority::directory::DirectoryError> {
    let known = directory
        .app(client_id)
        .is_some_and(|app| app.federated.contains(&trust));
    if known {
        return Ok(());
    }
    directory.add_federated_credential(client_id, trust)
}

/// Each FIC route's leg-2 app trusts that route's leg-1 identity (its tokens' `iss` and `sub`).
fn trust_fic_leg1s(directory: &Directory, config: &Config) -> Result<(), RegisterError> {
    for route in &config.routes {
        let Flow::Fic { leg1, leg2, .. } = &route.flow else {
            continue;
        };
        let (Some(leg1_identity), Some(Identity::ConfidentialClient(leg2_app))) =
            (config.identity(leg1), config.identity(leg2))
        else {
            continue;
        };
        let (tenant, object_id) = match leg1_identity {
            Identity::ManagedIdentity(mi) => {
                let found = find_managed(directory, mi).ok_or_else(|| {
                    identity_err(leg1, "no such managed identity in the local authority")
                })?;
                (found.tenant_id, found.object_id)
            }
            Identity::ConfidentialClient(cc) => app_principal(directory, leg1, &cc.client_id)?,
            Identity::WorkloadIdentity(wi) => app_principal(directory, leg1, &wi.client_id)?,
            Identity::Static(_) => continue,
        };
        add_federated_once(
            directory,
            &leg2_app.client_id,
            FederatedCredential::for_identity(&tenant, &object_id),
        )
        .map_err(|e| identity_err(leg2, e))?;
    }
    Ok(())
}

fn app_principal(
    directory: &Directory,
    name: &str,
    client_id: &str,
) -> Result<(String, String), RegisterError> {
    let app = directory
        .app(client_id)
        .ok_or_else(|| identity_err(name, "the app is not registered"))?;
    Ok((app.tenant_id, app.object_id))
}

/// Every route's resource, answering as its upstream host. A host already served as another
/// resource stays with it: the authority then refuses the token's audience, as Azure would.
fn add_resources(directory: &Directory, config: &Config) -> Result<(), RegisterError> {
    for route in &config.routes {
        let host = upstream_host(route).map(|(host, _)| host);
        let route_err = |e: popgate_authority::directory::DirectoryError| RegisterError::Route {
            route: route.name.clone(),
            reason: e.to_string(),
        };
        match directory.resource(&route.resource) {
            None => {
                let hosts = host
                    .filter(|h| directory.resource_for_host(h).is_none())
                    .into_iter()
                    .collect();
                directory
                    .add_resource(Resource {
                        audience: route.resource.clone(),
                        hosts,
                        accepts: popgate_authority::directory::AcceptedTokens {
                            bearer: true,
                            mtls_pop: true,
                        },
                    })
                    .map_err(route_err)?;
            }
            Some(mut resource) => {
                if let Some(h) = host.filter(|h| directory.resource_for_host(h).is_none()) {
                    resource.hosts.push(h);
                    directory.add_resource(resource).map_err(route_err)?;
                }
            }
        }
    }
    Ok(())
}
