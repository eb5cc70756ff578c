//! Admin calls that change the directory: more resources (audiences) and more certificates on an
//! existing app (rotation). Used by the load harness (`benches/load/`) and by anyone driving the
//! standalone binary from a script.

use std::path::Path;

use serde_json::{Value, json};

use crate::directory::{AcceptedTokens, Directory, Resource};
use crate::pki::Pki;

/// A resource's host list is a handful of names; hundreds is a mistake, not a resource.
pub const MAX_RESOURCE_HOSTS: usize = 64;

/// `POST /resources`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequest {
    audience: String,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default = "yes")]
    bearer: bool,
    #[serde(default = "yes")]
    mtls_pop: bool,
}

fn yes() -> bool {
    true
}

/// `POST /certificates`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    client_id: String,
    common_name: Option<String>,
}

/// Registers (or replaces, by audience) a resource tokens can be issued for.
pub fn add_resource(directory: &Directory, request: ResourceRequest) -> Result<Value, String> {
    if !request.audience.starts_with("https://") && !request.audience.starts_with("api://") {
        return Err(format!(
            "audience {:?} must start with https:// or api://",
            request.audience
        ));
    }
    if request.hosts.len() > MAX_RESOURCE_HOSTS {
        return Err(format!(
            "at most {MAX_RESOURCE_HOSTS} hosts per resource ({} given)",
            request.hosts.len()
        ));
    }
    if let Some(bad) = request
        .hosts
        .iter()
        .find(|h| h.is_empty() || h.contains(['/', ':', ' ']))
    {
        return Err(format!("host {bad:?} is not a host name"));
    }
    if !request.bearer && !request.mtls_pop {
        return Err("a resource must accept bearer, mtls_pop or both".into());
    }
    let resource = Resource {
        audience: request.audience,
        hosts: request.hosts,
        accepts: AcceptedTokens {
            bearer: request.bearer,
            mtls_pop: request.mtls_pop,
        },
    };
    let answer = json!(resource);
    directory
        .add_resource(resource)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

/// Issues one more certificate for an existing app and registers it (both the old and the new
/// one are accepted, as during a real rotation). Writes the new pair into `state_dir` under names
/// derived from its thumbprint, so a caller can move them over the files popgate watches.
pub fn add_certificate(
    directory: &Directory,
    pki: &Pki,
    state_dir: &Path,
    request: CertificateRequest,
) -> Result<Value, String> {
    let client_id = request.client_id.to_ascii_lowercase();
    if directory.app(&client_id).is_none() {
        return Err(format!("no app with client_id {client_id}"));
    }
    let common_name = request.common_name.unwrap_or_else(|| "popgate-app".into());
    let credential = pki
        .issue_app_credential(&common_name)
        .map_err(|e| e.to_string())?;
    directory
        .add_certificate(&client_id, credential.cert_der.as_ref())
        .map_err(|e| e.to_string())?;
    let stem = format!("{client_id}.{}", &credential.x5t_s256);
    let (cert_path, key_path) = crate::admin::write_credential(state_dir, &stem, &credential)?;
    tracing::info!(client_id = %client_id, x5t = %credential.x5t_s256, "certificate added to app");
    Ok(json!({
        "client_id": client_id,
        "x5t_s256": credential.x5t_s256,
        "cert_path": cert_path,
        "key_path": key_path,
    }))
}
