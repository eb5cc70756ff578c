//! Builds each route's [`Credential`] from the validated config.
//!
//! This build knows only the `static` identity; every other kind is refused with an error naming
//! the route and the kind. (The full factory replaces this file at integration.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::{Config, Flow, Identity};
use crate::credential::token::TokenType;

use super::credential::{Credential, CredentialLabels};
use super::sources::static_file::StaticCredential;

/// Why the credentials could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("route `{route}`: identity `{identity}` is not defined")]
    UnknownIdentity { route: String, identity: String },
    #[error(
        "route `{route}`: identity `{identity}` is a {kind} identity, which this build of popgate cannot acquire tokens for"
    )]
    NotInThisBuild {
        route: String,
        identity: String,
        kind: String,
    },
    #[error("route `{route}`: the FIC flow is not available in this build of popgate")]
    FicNotInThisBuild { route: String },
}

/// What credentials share (in the full build: HTTP clients for the token endpoint and IMDS). The
/// static identity needs nothing, so this build's is empty.
#[derive(Clone, Debug, Default)]
pub struct EngineDeps {
    _private: (),
}

impl EngineDeps {
    /// The dependencies `config` calls for.
    pub fn from_config(_config: &Config) -> Result<EngineDeps, BuildError> {
        Ok(EngineDeps::default())
    }
}

/// One credential per route, keyed by route name. Routes using the same static identity with the
/// same token type share one credential (one file read serves them all).
pub fn build_credentials(
    config: &Config,
    _deps: &EngineDeps,
) -> Result<BTreeMap<String, Arc<dyn Credential>>, BuildError> {
    let mut shared: HashMap<(String, TokenType), Arc<dyn Credential>> = HashMap::new();
    let mut out = BTreeMap::new();
    for route in &config.routes {
        let identity_name = match &route.flow {
            Flow::Vanilla { identity } => identity,
            Flow::Fic { .. } => {
                return Err(BuildError::FicNotInThisBuild {
                    route: route.name.clone(),
                });
            }
        };
        let identity =
            config
                .identity(identity_name)
                .ok_or_else(|| BuildError::UnknownIdentity {
                    route: route.name.clone(),
                    identity: identity_name.clone(),
                })?;
        let Identity::Static(static_identity) = identity else {
            return Err(BuildError::NotInThisBuild {
                route: route.name.clone(),
                identity: identity_name.clone(),
                kind: identity.kind().as_str().to_string(),
            });
        };
        let credential = shared
            .entry((identity_name.clone(), route.token_type))
            .or_insert_with(|| {
                Arc::new(StaticCredential::new(
                    CredentialLabels {
                        identity: identity_name.clone(),
                        identity_kind: "static",
                        flow: "vanilla",
                        token_type: route.token_type,
                        leg1: None,
                    },
                    static_identity.token_file.clone(),
                    static_identity.certificate.clone(),
                    route.token_type,
                )) as Arc<dyn Credential>
            });
        out.insert(route.name.clone(), Arc::clone(credential));
    }
    Ok(out)
}
