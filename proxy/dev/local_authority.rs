//! Starting the local authority for a config: its resource listener answers as every upstream
//! host, its directory knows every identity and resource, and the tokens a config reads from files
//! (workload identity, static) are minted by it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use popgate_authority::directory::DEFAULT_TENANT_ID;
use popgate_authority::imds::mi_sources::ArcSettings;
use popgate_authority::pki::DEFAULT_RESOURCE_HOSTS;
use popgate_authority::tokens::{TOKEN_EXCHANGE_AUDIENCE, TokenSubject, mint};
use popgate_authority::{Authority, AuthorityConfig, AuthorityError};

use crate::config::model::{Config, Flow, Identity};

use super::mi_sources::SourceSecrets;
use super::register::{self, DEV_SERVICE_ACCOUNT, RegisterError};
use super::targets::upstream_host;
use super::token_files::{TokenFileError, TokenFiles};

/// Lifetime of the tokens `popgate dev` writes to files: a static token is only re-read on
/// SIGHUP, so it must outlive a working day of `popgate dev`.
pub const DEV_FILE_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The `appid` of the static tokens `popgate dev` mints (shown in the resource's echo).
const DEV_STATIC_APP: &str = "popgate-dev-static";

/// Why the local authority could not be set up for the config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The authority itself did not start.
    #[error("cannot start the local authority: {0}")]
    Start(#[from] AuthorityError),
    /// The directory cannot represent the config.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// A token could not be minted.
    #[error("identity `{identity}`: cannot mint its token: {reason}")]
    Mint {
        /// The identity's name.
        identity: String,
        /// What failed.
        reason: String,
    },
    /// A token file could not be written.
    #[error("cannot write a dev token file: {0}")]
    Files(#[from] TokenFileError),
}

/// The running authority and the token files minted for the config's identities.
#[derive(Debug)]
pub struct LocalAuthority {
    /// The authority (stops when dropped).
    pub authority: Authority,
    /// Identity name → the token file it must read instead of its configured one.
    pub token_files: BTreeMap<String, PathBuf>,
    /// The secrets the authority's managed-identity sources demand (App Service, Service
    /// Fabric, Azure ML).
    pub source_secrets: SourceSecrets,
    /// Owns the files; removes them when dropped.
    _files: TokenFiles,
    /// Azure Arc's token directory, where the authority writes its challenge files (removed
    /// when dropped).
    arc_dir: TokenFiles,
}

impl LocalAuthority {
    /// The directory Azure Arc's challenges name: popgate must read its secret files there
    /// instead of under the Arc agent's own directory.
    pub fn arc_token_dir(&self) -> &std::path::Path {
        self.arc_dir.dir()
    }
}

/// Starts the authority on loopback and registers everything `config` needs.
pub async fn start(config: &Config) -> Result<LocalAuthority, SetupError> {
    let mut resource_hosts: Vec<String> = DEFAULT_RESOURCE_HOSTS
        .iter()
        .map(|h| h.to_string())
        .collect();
    for route in &config.routes {
        if let Some((host, _)) = upstream_host(route)
            // An IP literal upstream is reached by address already; only names need SANs.
            && host.parse::<IpAddr>().is_err()
            && !resource_hosts.contains(&host)
        {
            resource_hosts.push(host);
        }
    }
    // Every managed-identity source is served, each demanding its own fresh secret.
    let source_secrets = SourceSecrets::generate();
    let arc_dir = TokenFiles::create()?;
    let mut settings = AuthorityConfig {
        resource_hosts,
        // Azure resources serve Bearer callers that present no certificate; so must this one.
        resource_requires_client_cert: false,
        ..AuthorityConfig::default()
    };
    settings.imds.app_service_identity_header = Some(source_secrets.app_service.clone());
    settings.imds.service_fabric_secret = Some(source_secrets.service_fabric.clone());
    settings.imds.machine_learning_secret = Some(source_secrets.machine_learning.clone());
    settings.imds.cloud_shell = true;
    settings.imds.arc = Some(ArcSettings {
        dir: arc_dir.dir().to_path_buf(),
        fixed_challenge: None,
    });
    let authority = Authority::start(settings).await?;
    register::register(authority.directory(), config)?;

    let files = TokenFiles::create()?;
    let mut token_files = BTreeMap::new();
    for (index, (name, identity)) in config.identities.iter().enumerate() {
        let jwt = match identity {
            Identity::WorkloadIdentity(wi) => mint_file_token(
                &authority,
                name,
                &TokenSubject {
                    tenant_id: wi.tenant_id.clone(),
                    object_id: DEV_SERVICE_ACCOUNT.to_string(),
                    client_id: DEV_SERVICE_ACCOUNT.to_string(),
                },
                TOKEN_EXCHANGE_AUDIENCE,
                None,
            )?,
            Identity::Static(st) => {
                let Some(audience) = static_audience(&authority, config, name) else {
                    // No route uses it: nothing to mint for.
                    continue;
                };
                mint_file_token(
                    &authority,
                    name,
                    &TokenSubject {
                        tenant_id: DEFAULT_TENANT_ID.to_string(),
                        object_id: uuid::Uuid::new_v4().to_string(),
                        client_id: DEV_STATIC_APP.to_string(),
                    },
                    &audience,
                    Some(st.certificate.x5t_s256().to_string()),
                )?
            }
            _ => continue,
        };
        let path = files.write(&format!("identity-{index}.jwt"), &jwt)?;
        token_files.insert(name.clone(), path);
    }
    Ok(LocalAuthority {
        authority,
        token_files,
        source_secrets,
        _files: files,
        arc_dir,
    })
}

/// The audience of a static identity's token: the resource of the first route presenting it.
fn static_audience(authority: &Authority, config: &Config, identity: &str) -> Option<String> {
    let route = config
        .routes
        .iter()
        .find(|r| matches!(&r.flow, Flow::Vanilla { identity: i } if i == identity))?;
    Some(
        authority
            .directory()
            .resource(&route.resource)
            .map_or_else(|| route.resource.clone(), |r| r.audience),
    )
}

fn mint_file_token(
    authority: &Authority,
    identity: &str,
    subject: &TokenSubject,
    audience: &str,
    cnf_x5t: Option<String>,
) -> Result<zeroize::Zeroizing<String>, SetupError> {
    let mut settings = authority.settings().tokens();
    settings.lifetime = DEV_FILE_TOKEN_LIFETIME;
    let minted = mint(
        authority.signing_keys(),
        &settings,
        subject,
        audience,
        cnf_x5t,
    )
    .map_err(|reason| SetupError::Mint {
        identity: identity.to_string(),
        reason,
    })?;
    Ok(minted.jwt)
}
