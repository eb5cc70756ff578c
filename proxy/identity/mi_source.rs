//! Which managed-identity source a host offers, detected from the environment in MSAL.NET's
//! order (`ManagedIdentityClient.GetManagedIdentitySourceNoImds`), and what each source accepts:
//! user-assigned selectors, mTLS PoP. Error codes and messages are MSAL.NET's.

use std::fmt;

use zeroize::Zeroizing;

use crate::identity::app_service::AppServiceEndpoint;
use crate::identity::azure_arc::ArcEndpoint;
use crate::identity::cloud_shell::CloudShellEndpoint;
use crate::identity::imds_endpoint::UamiSelector;
use crate::identity::machine_learning::MachineLearningEndpoint;
use crate::identity::service_fabric::ServiceFabricEndpoint;

/// `IDENTITY_ENDPOINT`: App Service, Service Fabric and Azure Arc.
pub const IDENTITY_ENDPOINT_ENV: &str = "IDENTITY_ENDPOINT";
/// `IDENTITY_HEADER`: the App Service / Service Fabric secret.
pub const IDENTITY_HEADER_ENV: &str = "IDENTITY_HEADER";
/// `IDENTITY_SERVER_THUMBPRINT`: Service Fabric's endpoint certificate (SHA-1, hex).
pub const IDENTITY_SERVER_THUMBPRINT_ENV: &str = "IDENTITY_SERVER_THUMBPRINT";
/// `IMDS_ENDPOINT`: with `IDENTITY_ENDPOINT`, marks Azure Arc.
pub const IMDS_ENDPOINT_ENV: &str = "IMDS_ENDPOINT";
/// `MSI_ENDPOINT`: Cloud Shell and Azure Machine Learning.
pub const MSI_ENDPOINT_ENV: &str = "MSI_ENDPOINT";
/// `MSI_SECRET`: with `MSI_ENDPOINT`, marks Azure Machine Learning.
pub const MSI_SECRET_ENV: &str = "MSI_SECRET";
/// `DEFAULT_IDENTITY_CLIENT_ID`: Azure ML's system-assigned identity's client id.
pub const DEFAULT_IDENTITY_CLIENT_ID_ENV: &str = "DEFAULT_IDENTITY_CLIENT_ID";
/// Every variable detection reads (for `popgate dev`, which hides them).
pub const SOURCE_ENV_VARS: [&str; 7] = [
    IDENTITY_ENDPOINT_ENV,
    IDENTITY_HEADER_ENV,
    IDENTITY_SERVER_THUMBPRINT_ENV,
    IMDS_ENDPOINT_ENV,
    MSI_ENDPOINT_ENV,
    MSI_SECRET_ENV,
    DEFAULT_IDENTITY_CLIENT_ID_ENV,
];
/// The Azure Arc agent's executable on Linux: MSAL detects Arc by it when the variables are unset.
pub const LINUX_HIMDS_FILE: &str = "/opt/azcmagent/bin/himds";

/// A managed-identity source, as the config's `source:` key spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MiSourceKind {
    /// App Service / Functions (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
    AppService,
    /// Azure Arc-enabled server (`IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`, or the himds agent).
    AzureArc,
    /// Service Fabric (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER` + `IDENTITY_SERVER_THUMBPRINT`).
    ServiceFabric,
    /// Cloud Shell (`MSI_ENDPOINT`).
    CloudShell,
    /// Azure Machine Learning (`MSI_ENDPOINT` + `MSI_SECRET`).
    MachineLearning,
    /// The VM's IMDS (v1 for Bearer, v2 for mTLS PoP); the default.
    Imds,
}

impl MiSourceKind {
    /// Every source, in MSAL's detection order (IMDS, the fallback, last).
    pub const ALL: [MiSourceKind; 6] = [
        MiSourceKind::ServiceFabric,
        MiSourceKind::AppService,
        MiSourceKind::MachineLearning,
        MiSourceKind::CloudShell,
        MiSourceKind::AzureArc,
        MiSourceKind::Imds,
    ];

    /// The config spelling (`app_service`, `azure_arc`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            MiSourceKind::AppService => "app_service",
            MiSourceKind::AzureArc => "azure_arc",
            MiSourceKind::ServiceFabric => "service_fabric",
            MiSourceKind::CloudShell => "cloud_shell",
            MiSourceKind::MachineLearning => "machine_learning",
            MiSourceKind::Imds => "imds",
        }
    }

    /// How MSAL's messages name it.
    pub fn msal_name(self) -> &'static str {
        match self {
            MiSourceKind::AppService => "App Service",
            MiSourceKind::AzureArc => "Azure Arc",
            MiSourceKind::ServiceFabric => "Service Fabric",
            MiSourceKind::CloudShell => "Cloud Shell",
            MiSourceKind::MachineLearning => "Machine Learning",
            MiSourceKind::Imds => "IMDS",
        }
    }

    /// From the config spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Only IMDS (its v2 API) issues mTLS PoP tokens.
    pub fn supports_mtls_pop(self) -> bool {
        self == MiSourceKind::Imds
    }
}

impl fmt::Display for MiSourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source refused a request before anything was sent: MSAL's error code and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MiSourceError {
    /// MSAL's `MsalError` code, e.g. `user_assigned_managed_identity_not_supported`.
    pub code: &'static str,
    /// MSAL's message.
    pub message: String,
}

/// MSAL's `MsalError.MtlsPopNotSupportedForEnvironment`.
pub const MTLS_POP_NOT_SUPPORTED_FOR_ENVIRONMENT: &str = "mtls_pop_not_supported_for_environment";
/// MSAL's `MsalErrorMessage.MtlsPopNotSupportedForManagedIdentityEnvironmentMessage`.
pub const MTLS_POP_NOT_SUPPORTED_MESSAGE: &str = "mTLS Proof-of-Possession with managed identity is only supported on IMDSv2. The detected managed identity source does not support mTLS PoP.";
/// MSAL's `MsalError.UserAssignedManagedIdentityNotSupported`.
pub const UAMI_NOT_SUPPORTED: &str = "user_assigned_managed_identity_not_supported";
/// MSAL's `MsalError.UserAssignedManagedIdentityNotConfigurableAtRuntime`.
pub const UAMI_NOT_CONFIGURABLE_AT_RUNTIME: &str =
    "user_assigned_managed_identity_not_configurable_at_runtime";
/// MSAL's `MsalError.InvalidManagedIdentityIdType`.
pub const INVALID_MI_ID_TYPE: &str = "invalid_managed_identity_id_type";
/// MSAL's `MsalError.InvalidManagedIdentityEndpoint`.
pub const INVALID_MI_ENDPOINT: &str = "invalid_managed_identity_endpoint";

fn uami_not_supported(kind: MiSourceKind) -> MiSourceError {
    MiSourceError {
        code: UAMI_NOT_SUPPORTED,
        message: format!(
            "[Managed Identity] User assigned identity is not supported by the {} Managed Identity. To authenticate with the system assigned identity omit the client id in ManagedIdentityApplicationBuilder.Create().",
            kind.msal_name()
        ),
    }
}

/// Whether `kind` can name the identity `selector` picks (MSAL's per-source rules):
/// Arc and Cloud Shell have the system-assigned identity only; Service Fabric takes an object id
/// only (sent as `principalId`); Machine Learning takes a client id only.
pub fn check_selector(
    kind: MiSourceKind,
    selector: Option<&UamiSelector>,
) -> Result<(), MiSourceError> {
    match (kind, selector) {
        (_, None) | (MiSourceKind::AppService | MiSourceKind::Imds, _) => Ok(()),
        (MiSourceKind::AzureArc | MiSourceKind::CloudShell, Some(_)) => {
            Err(uami_not_supported(kind))
        }
        (MiSourceKind::ServiceFabric, Some(UamiSelector::ObjectId(_))) => Ok(()),
        (MiSourceKind::ServiceFabric, Some(_)) => Err(MiSourceError {
            code: UAMI_NOT_CONFIGURABLE_AT_RUNTIME,
            message: "[Managed Identity] Service Fabric only supports object ID (sent on the wire as 'principalId') for specifying a user-assigned managed identity. ClientId and ResourceId are not supported. Use ManagedIdentityId.WithUserAssignedObjectId(\"<objectId>\") instead.".into(),
        }),
        (MiSourceKind::MachineLearning, Some(UamiSelector::ClientId(_))) => Ok(()),
        (MiSourceKind::MachineLearning, Some(_)) => Err(MiSourceError {
            code: INVALID_MI_ID_TYPE,
            message: "Only client id is supported for user-assigned managed identity in Machine Learning.".into(),
        }),
    }
}

/// Refuses mTLS PoP on a source other than IMDS, with MSAL's error.
pub fn check_mtls_pop(kind: MiSourceKind) -> Result<(), MiSourceError> {
    if kind.supports_mtls_pop() {
        Ok(())
    } else {
        Err(MiSourceError {
            code: MTLS_POP_NOT_SUPPORTED_FOR_ENVIRONMENT,
            message: MTLS_POP_NOT_SUPPORTED_MESSAGE.into(),
        })
    }
}

/// MSAL's `ManagedIdentityEndpointInvalidUriError` for `var` holding `value` in `kind`.
pub(crate) fn invalid_uri(var: &str, value: &str, kind: MiSourceKind) -> MiSourceError {
    MiSourceError {
        code: INVALID_MI_ENDPOINT,
        message: format!(
            "[Managed Identity] The environment variable {var} contains an invalid Uri {value} in {} managed identity source.",
            kind.msal_name()
        ),
    }
}

/// A variable the chosen source needs is unset (only reachable when `source:` names a source
/// the environment does not describe; detection never picks such a source).
pub(crate) fn missing_var(var: &str, kind: MiSourceKind) -> MiSourceError {
    MiSourceError {
        code: INVALID_MI_ENDPOINT,
        message: format!(
            "[Managed Identity] The environment variable {var} is not set, and the {} managed identity source needs it.",
            kind.msal_name()
        ),
    }
}

/// How detection looks a variable up: `None` for unset or empty (MSAL's `IsNullOrEmpty`).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The source MSAL would pick, in its order: Service Fabric / App Service (`IDENTITY_ENDPOINT` and
/// `IDENTITY_HEADER`, with or without `IDENTITY_SERVER_THUMBPRINT`), Machine Learning
/// (`MSI_SECRET` and `MSI_ENDPOINT`), Cloud Shell (`MSI_ENDPOINT`), Azure Arc (`IDENTITY_ENDPOINT`
/// and `IMDS_ENDPOINT`, or the himds agent on disk), else IMDS.
pub fn detect(env: EnvLookup<'_>, himds_installed: bool) -> MiSourceKind {
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    if set(IDENTITY_ENDPOINT_ENV) && set(IDENTITY_HEADER_ENV) {
        if set(IDENTITY_SERVER_THUMBPRINT_ENV) {
            MiSourceKind::ServiceFabric
        } else {
            MiSourceKind::AppService
        }
    } else if set(MSI_SECRET_ENV) && set(MSI_ENDPOINT_ENV) {
        MiSourceKind::MachineLearning
    } else if set(MSI_ENDPOINT_ENV) {
        MiSourceKind::CloudShell
    } else if (set(IDENTITY_ENDPOINT_ENV) && set(IMDS_ENDPOINT_ENV)) || himds_installed {
        MiSourceKind::AzureArc
    } else {
        MiSourceKind::Imds
    }
}

/// Whether the Arc agent is installed where MSAL looks for it (Linux only here; Windows's
/// `%ProgramFiles%\AzureConnectedMachineAgent\himds.exe` is not a popgate platform).
pub fn himds_installed() -> bool {
    cfg!(target_os = "linux") && std::path::Path::new(LINUX_HIMDS_FILE).is_file()
}

/// A secret sent in a header (`X-IDENTITY-HEADER`, `secret`): zeroized, `Debug` redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderSecret(Zeroizing<String>);

impl HeaderSecret {
    /// Wraps `value`.
    pub fn new(value: Zeroizing<String>) -> Self {
        Self(value)
    }

    /// The secret itself, for the one header it goes into.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HeaderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A resolved source: where its endpoint is and what it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MiSource {
    /// App Service / Functions.
    AppService(AppServiceEndpoint),
    /// Azure Arc.
    AzureArc(ArcEndpoint),
    /// Service Fabric.
    ServiceFabric(ServiceFabricEndpoint),
    /// Cloud Shell.
    CloudShell(CloudShellEndpoint),
    /// Azure Machine Learning.
    MachineLearning(MachineLearningEndpoint),
    /// IMDS at `network.imds_endpoint`.
    Imds,
}

impl MiSource {
    /// Which source this is.
    pub fn kind(&self) -> MiSourceKind {
        match self {
            MiSource::AppService(_) => MiSourceKind::AppService,
            MiSource::AzureArc(_) => MiSourceKind::AzureArc,
            MiSource::ServiceFabric(_) => MiSourceKind::ServiceFabric,
            MiSource::CloudShell(_) => MiSourceKind::CloudShell,
            MiSource::MachineLearning(_) => MiSourceKind::MachineLearning,
            MiSource::Imds => MiSourceKind::Imds,
        }
    }

    /// The endpoint URL (`None` for IMDS, whose base is `network.imds_endpoint`).
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            MiSource::AppService(e) => Some(e.url()),
            MiSource::AzureArc(e) => Some(e.url()),
            MiSource::ServiceFabric(e) => Some(e.url()),
            MiSource::CloudShell(e) => Some(e.url()),
            MiSource::MachineLearning(e) => Some(e.url()),
            MiSource::Imds => None,
        }
    }

    /// Reads what `kind` needs from `env` and checks it.
    pub fn resolve(kind: MiSourceKind, env: EnvLookup<'_>) -> Result<Self, MiSourceError> {
        let need = |var: &'static str| {
            env(var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| missing_var(var, kind))
        };
        let secret = |var: &'static str| need(var).map(|v| HeaderSecret::new(Zeroizing::new(v)));
        Ok(match kind {
            MiSourceKind::AppService => MiSource::AppService(AppServiceEndpoint::from_source_env(
                &need(IDENTITY_ENDPOINT_ENV)?,
                Zeroizing::new(need(IDENTITY_HEADER_ENV)?),
            )?),
            MiSourceKind::AzureArc => {
                MiSource::AzureArc(ArcEndpoint::new(env(IDENTITY_ENDPOINT_ENV).as_deref())?)
            }
            MiSourceKind::ServiceFabric => MiSource::ServiceFabric(ServiceFabricEndpoint::new(
                &need(IDENTITY_ENDPOINT_ENV)?,
                secret(IDENTITY_HEADER_ENV)?,
                &need(IDENTITY_SERVER_THUMBPRINT_ENV)?,
            )?),
            MiSourceKind::CloudShell => {
                MiSource::CloudShell(CloudShellEndpoint::new(&need(MSI_ENDPOINT_ENV)?)?)
            }
            MiSourceKind::MachineLearning => {
                MiSource::MachineLearning(MachineLearningEndpoint::new(
                    &need(MSI_ENDPOINT_ENV)?,
                    secret(MSI_SECRET_ENV)?,
                    env(DEFAULT_IDENTITY_CLIENT_ID_ENV).filter(|v| !v.is_empty()),
                )?)
            }
            MiSourceKind::Imds => MiSource::Imds,
        })
    }
}

/// Checks `url` (from `var`) is an absolute http(s) URL without a query, as the source endpoints
/// must be; MSAL's error otherwise.
pub(crate) fn endpoint_url(
    var: &str,
    url: &str,
    kind: MiSourceKind,
) -> Result<String, MiSourceError> {
    let uri: http::Uri = url.parse().map_err(|_| invalid_uri(var, url, kind))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() && uri.query().is_none() => {
            Ok(url.to_string())
        }
        _ => Err(invalid_uri(var, url, kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn detection_follows_msal_order() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Vars<'_>, bool, MiSourceKind)] = &[
            (&[], false, MiSourceKind::Imds),
            (&[], true, MiSourceKind::AzureArc),
            (
                &[("IDENTITY_ENDPOINT", "http://a")],
                false,
                MiSourceKind::Imds,
            ),
            (
                &[("IDENTITY_ENDPOINT", "http://a"), ("IDENTITY_HEADER", "")],
                false,
                MiSourceKind::Imds,
            ),
            (
                &[("IDENTITY_ENDPOINT", "http://a"), ("IDENTITY_HEADER", "h")],
                true,
                MiSourceKind::AppService,
            ),
            (
                &[
                    ("IDENTITY_ENDPOINT", "https://a"),
                    ("IDENTITY_HEADER", "h"),
                    ("IDENTITY_SERVER_THUMBPRINT", "AB"),
                    ("MSI_ENDPOINT", "http://m"),
                ],
                false,
                MiSourceKind::ServiceFabric,
            ),
            (
                &[
                    ("MSI_ENDPOINT", "http://m"),
                    ("MSI_SECRET", "s"),
                    ("IMDS_ENDPOINT", "x"),
                ],
                false,
                MiSourceKind::MachineLearning,
            ),
            (
                &[("MSI_ENDPOINT", "http://m")],
                true,
                MiSourceKind::CloudShell,
            ),
            (
                &[
                    ("IDENTITY_ENDPOINT", "http://a"),
                    ("IMDS_ENDPOINT", "http://i"),
                ],
                false,
                MiSourceKind::AzureArc,
            ),
        ];
        for (pairs, himds, expected) in cases {
            assert_eq!(
                detect(&env_of(pairs), *himds),
                *expected,
                "{pairs:?} {himds}"
            );
        }
    }

    #[test]
    fn selectors_and_pop_per_source() {
        let cid = UamiSelector::ClientId("c".into());
        let oid = UamiSelector::ObjectId("o".into());
        let rid = UamiSelector::ResourceId("/r".into());
        for kind in MiSourceKind::ALL {
            assert!(check_selector(kind, None).is_ok());
        }
        let err = check_selector(MiSourceKind::AzureArc, Some(&cid)).unwrap_err();
        assert_eq!(err.code, "user_assigned_managed_identity_not_supported");
        assert!(
            err.message.contains("by the Azure Arc Managed Identity"),
            "{err}"
        );
        assert!(check_selector(MiSourceKind::CloudShell, Some(&oid)).is_err());
        assert!(check_selector(MiSourceKind::ServiceFabric, Some(&oid)).is_ok());
        assert_eq!(
            check_selector(MiSourceKind::ServiceFabric, Some(&cid))
                .unwrap_err()
                .code,
            "user_assigned_managed_identity_not_configurable_at_runtime"
        );
        assert!(check_selector(MiSourceKind::MachineLearning, Some(&cid)).is_ok());
        assert_eq!(
            check_selector(MiSourceKind::MachineLearning, Some(&rid))
                .unwrap_err()
                .code,
            "invalid_managed_identity_id_type"
        );
        assert!(check_selector(MiSourceKind::AppService, Some(&rid)).is_ok());
        assert!(check_mtls_pop(MiSourceKind::Imds).is_ok());
        for kind in &MiSourceKind::ALL[..5] {
            let err = check_mtls_pop(*kind).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("mtls_pop_not_supported_for_environment: {MTLS_POP_NOT_SUPPORTED_MESSAGE}")
            );
        }
    }

    #[test]
    fn resolution_reads_each_sources_variables() {
        let env = env_of(&[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "s3cret"),
        ]);
        let src = MiSource::resolve(MiSourceKind::AppService, &env).unwrap();
        assert_eq!(src.endpoint(), Some("http://127.0.0.1:1/msi/token"));
        assert!(!format!("{src:?}").contains("s3cret"));
        let err = MiSource::resolve(MiSourceKind::CloudShell, &env).unwrap_err();
        assert!(err.message.contains("MSI_ENDPOINT is not set"), "{err}");
        let bad = env_of(&[("MSI_ENDPOINT", "not a url")]);
        let err = MiSource::resolve(MiSourceKind::CloudShell, &bad).unwrap_err();
        assert_eq!(
            err.message,
            "[Managed Identity] The environment variable MSI_ENDPOINT contains an invalid Uri not a url in Cloud Shell managed identity source."
        );
        // Arc found by the agent on disk: MSAL's default endpoint.
        let arc = MiSource::resolve(MiSourceKind::AzureArc, &env_of(&[])).unwrap();
        assert_eq!(
            arc.endpoint(),
            Some("http://127.0.0.1:40342/metadata/identity/oauth2/token")
        );
    }
}
