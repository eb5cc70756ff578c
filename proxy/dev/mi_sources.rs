//! Every managed-identity source under `popgate dev`. The local authority emulates each one as
//! strictly as the real host does: App Service (`X-IDENTITY-HEADER`), Azure Arc (the
//! `WWW-Authenticate: Basic realm=` challenge file), Service Fabric (its `secret` header, over
//! TLS with a certificate popgate pins by thumbprint), Cloud Shell and Azure Machine Learning. An
//! identity whose `source:` names one of them reads that source's variables from here, pointing
//! at the authority, instead of from the process environment (where they would name the real
//! host's endpoint, or nothing).
//!
//! The config is loaded before the authority starts (the authority's certificate needs the
//! routes' host names), so [`load`] fills the variables with placeholders that only have to
//! pass validation, and [`repoint`] resolves each source again against the running authority.

use std::path::Path;

use popgate_authority::Authority;
use popgate_authority::imds::backend::ImdsBackend as _;
use popgate_authority::imds::server::{
    PATH_APP_SERVICE, PATH_AZURE_ARC, PATH_CLOUD_SHELL, PATH_MACHINE_LEARNING,
};

use crate::config::model::{Config, Identity, MiSource, MiSourceKind};
use crate::config::{ConfigErrors, load_with_source_env};
use crate::identity::mi_source::{
    DEFAULT_IDENTITY_CLIENT_ID_ENV, IDENTITY_ENDPOINT_ENV, IDENTITY_HEADER_ENV,
    IDENTITY_SERVER_THUMBPRINT_ENV, IMDS_ENDPOINT_ENV, MSI_ENDPOINT_ENV, MSI_SECRET_ENV,
    MiSourceError,
};

/// Placeholder endpoint host for loading: port 9 (discard) on loopback, never dialled, since
/// [`repoint`] replaces every endpoint before popgate starts.
const PLACEHOLDER_BASE: &str = "127.0.0.1:9";
/// A syntactically valid SHA-1 thumbprint for loading (replaced with the authority's).
const PLACEHOLDER_THUMBPRINT: &str = "0000000000000000000000000000000000000000";
/// A syntactically valid client id for loading (replaced with the authority's SAMI's).
const PLACEHOLDER_CLIENT_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The secrets the authority demands from each source's callers: fresh for every run, so no
/// other process on the machine can guess them.
#[derive(Clone)]
pub struct SourceSecrets {
    /// App Service's `IDENTITY_HEADER`.
    pub app_service: String,
    /// Service Fabric's `IDENTITY_HEADER`.
    pub service_fabric: String,
    /// Azure ML's `MSI_SECRET`.
    pub machine_learning: String,
}

impl SourceSecrets {
    /// Random secrets.
    pub fn generate() -> Self {
        let fresh = || uuid::Uuid::new_v4().simple().to_string();
        Self {
            app_service: fresh(),
            service_fabric: fresh(),
            machine_learning: fresh(),
        }
    }
}

impl std::fmt::Debug for SourceSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceSecrets(<redacted>)")
    }
}

/// Where each source's endpoint is, and what its callers must present.
struct Endpoints<'a> {
    /// `http://host:port` of the listener serving App Service, Arc, Cloud Shell and Azure ML.
    base: String,
    /// Service Fabric's `IDENTITY_ENDPOINT` and `IDENTITY_SERVER_THUMBPRINT`.
    service_fabric: (String, String),
    /// The system-assigned identity's client id (Azure ML's `DEFAULT_IDENTITY_CLIENT_ID`).
    sami_client_id: String,
    secrets: &'a SourceSecrets,
}

impl Endpoints<'_> {
    /// The value of `name` for the source `kind`, as the real host would set it.
    fn var(&self, kind: MiSourceKind, name: &str) -> Option<String> {
        let at = |path: &str| format!("{}{path}", self.base);
        let value = match (kind, name) {
            (MiSourceKind::AppService, IDENTITY_ENDPOINT_ENV) => at(PATH_APP_SERVICE),
            (MiSourceKind::AppService, IDENTITY_HEADER_ENV) => self.secrets.app_service.clone(),
            (MiSourceKind::AzureArc, IDENTITY_ENDPOINT_ENV) => at(PATH_AZURE_ARC),
            (MiSourceKind::AzureArc, IMDS_ENDPOINT_ENV) => self.base.clone(),
            (MiSourceKind::ServiceFabric, IDENTITY_ENDPOINT_ENV) => self.service_fabric.0.clone(),
            (MiSourceKind::ServiceFabric, IDENTITY_HEADER_ENV) => {
                self.secrets.service_fabric.clone()
            }
            (MiSourceKind::ServiceFabric, IDENTITY_SERVER_THUMBPRINT_ENV) => {
                self.service_fabric.1.clone()
            }
            (MiSourceKind::CloudShell, MSI_ENDPOINT_ENV) => at(PATH_CLOUD_SHELL),
            (MiSourceKind::MachineLearning, MSI_ENDPOINT_ENV) => at(PATH_MACHINE_LEARNING),
            (MiSourceKind::MachineLearning, MSI_SECRET_ENV) => {
                self.secrets.machine_learning.clone()
            }
            (MiSourceKind::MachineLearning, DEFAULT_IDENTITY_CLIENT_ID_ENV) => {
                self.sami_client_id.clone()
            }
            _ => return None,
        };
        Some(value)
    }
}

/// Loads `path` for `popgate dev`: the process environment as `popgate run` reads it, except
/// that an identity whose `source:` names a source other than IMDS gets placeholder variables
/// (see the module docs), so the config loads on any machine.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let secrets = SourceSecrets::generate();
    let placeholder = Endpoints {
        base: format!("http://{PLACEHOLDER_BASE}"),
        service_fabric: (
            format!("https://{PLACEHOLDER_BASE}/metadata/identity/oauth2/token"),
            PLACEHOLDER_THUMBPRINT.to_string(),
        ),
        sami_client_id: PLACEHOLDER_CLIENT_ID.to_string(),
        secrets: &secrets,
    };
    load_with_source_env(path, &|name| std::env::var(name).ok(), &|kind, name| {
        placeholder.var(kind, name)
    })
}

/// Why a source could not be pointed at the authority.
#[derive(Debug, thiserror::Error)]
pub enum RepointError {
    /// The authority runs no Service Fabric listener (it always does under `popgate dev`).
    #[error("the local authority has no Service Fabric endpoint")]
    NoServiceFabric,
    /// The directory has no system-assigned identity (register always makes one).
    #[error("the local authority has no system-assigned managed identity")]
    NoSystemAssigned,
    /// The source refused the authority's variables (a bug, never a config).
    #[error("identity `{identity}`: {error}")]
    Source {
        /// The identity's name.
        identity: String,
        /// What the source said.
        error: MiSourceError,
    },
}

/// Resolves every managed identity's source other than IMDS again, against `authority`.
pub fn repoint(
    config: &mut Config,
    authority: &Authority,
    secrets: &SourceSecrets,
) -> Result<(), RepointError> {
    let needs_source = config.identities.values().any(|identity| {
        matches!(identity, Identity::ManagedIdentity(mi) if mi.source.kind() != MiSourceKind::Imds)
    });
    if !needs_source {
        return Ok(());
    }
    let endpoints = Endpoints {
        base: authority.imds_base_url(),
        service_fabric: authority
            .service_fabric()
            .ok_or(RepointError::NoServiceFabric)?,
        sami_client_id: authority
            .directory()
            .system_assigned()
            .ok_or(RepointError::NoSystemAssigned)?
            .client_id,
        secrets,
    };
    for (name, identity) in &mut config.identities {
        let Identity::ManagedIdentity(mi) = identity else {
            continue;
        };
        let kind = mi.source.kind();
        if kind == MiSourceKind::Imds {
            continue;
        }
        mi.source = MiSource::resolve(kind, &|var| endpoints.var(kind, var)).map_err(|error| {
            RepointError::Source {
                identity: name.clone(),
                error,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_gets_every_variable_it_reads() {
        let secrets = SourceSecrets::generate();
        let endpoints = Endpoints {
            base: "http://127.0.0.1:1".into(),
            service_fabric: (
                "https://127.0.0.1:2/metadata/identity/oauth2/token".into(),
                "AB".repeat(20),
            ),
            sami_client_id: PLACEHOLDER_CLIENT_ID.into(),
            secrets: &secrets,
        };
        for kind in MiSourceKind::ALL {
            let source = MiSource::resolve(kind, &|var| endpoints.var(kind, var))
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(source.kind(), kind);
            if kind != MiSourceKind::Imds {
                let url = source.endpoint().unwrap_or_default();
                assert!(url.contains("127.0.0.1:"), "{kind}: {url}");
            }
        }
        assert!(!format!("{secrets:?}").contains(&secrets.app_service));
    }
}
