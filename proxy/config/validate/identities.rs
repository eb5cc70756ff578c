//! Identities: which keys each kind takes, GUIDs, tenants, regions, authority hosts, and the
//! files (certificates, static tokens) they name.

use crate::identity::workload_identity::FEDERATED_TOKEN_FILE_ENV;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_saphyr::Location;
use zeroize::Zeroizing;

use crate::certs::binding::BindingCert;
use crate::certs::cert_files::{self, FileRole};
use crate::certs::pkcs12::{self, Pkcs12Password};
use crate::config::model::{
    CertificateFiles, ConfidentialClient, Identity, IdentityKind, ManagedIdentity, StaticIdentity,
    UamiSelector, WorkloadIdentity,
};
use crate::config::schema::{RawCertificate, RawIdentity, S, SpannedMap};
use crate::identity::authority_host::{self, DEFAULT_AUTHORITY_HOST};
use crate::identity::mi_source::{self, MiSource, MiSourceKind};

use super::Ctx;
use super::values::{is_guid, is_route_name};

/// Workload identity defaults, as set by the Azure Workload Identity webhook.
const ENV_CLIENT_ID: &str = "AZURE_CLIENT_ID";
const ENV_TENANT_ID: &str = "AZURE_TENANT_ID";

/// What route validation needs to know about one identity, even when the identity itself had
/// errors (so one bad certificate does not cascade into errors on every route).
pub(crate) struct IdentityEntry {
    pub(crate) kind: IdentityKind,
    /// confidential_client only: whether it has a `certificate`.
    pub(crate) has_certificate: bool,
    /// managed_identity: its source (detected or `source:`), for the mTLS PoP rule.
    pub(crate) mi_source: Option<MiSourceKind>,
    /// confidential_client: the raw authority host and region, for the mTLS host rule.
    pub(crate) authority_host: Option<S<String>>,
    pub(crate) region: Option<S<String>>,
    /// The validated identity; `None` when it had errors.
    validated: Option<Identity>,
}

/// All identities by name, in file order.
pub(crate) struct Identities(Vec<(String, IdentityEntry)>);

impl Identities {
    pub(crate) fn get(&self, name: &str) -> Option<&IdentityEntry> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    /// The names, for "unknown identity" hints.
    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        if names.is_empty() {
            "none are defined".to_owned()
        } else {
            format!("defined: {}", names.join(", "))
        }
    }

    /// The validated identities; only called when validation found no errors at all.
    pub(crate) fn into_validated(self) -> BTreeMap<String, Identity> {
        self.0
            .into_iter()
            .filter_map(|(n, e)| e.validated.map(|i| (n, i)))
            .collect()
    }
}

pub(super) fn identities(
    cx: &mut Ctx<'_>,
    raw: Option<&S<SpannedMap<S<RawIdentity>>>>,
) -> Identities {
    let mut out = Vec::new();
    let Some(raw) = raw else {
        return Identities(out);
    };
    for (name, ident) in &raw.value.0 {
        if !is_route_name(&name.value) {
            cx.error(
                name.referenced,
                format!(
                    "identity name `{}` may only contain letters, digits, `_`, `.` and `-`",
                    name.value
                ),
            );
        }
        out.push((name.value.clone(), identity(cx, &name.value, &ident.value)));
    }
    Identities(out)
}

/// Keys each kind accepts (besides `kind`).
fn allowed_keys(kind: IdentityKind) -> &'static [&'static str] {
    match kind {
        IdentityKind::ManagedIdentity => &[
            "client_id",
            "resource_id",
            "object_id",
            "attestation_command",
            "source",
        ],
        IdentityKind::ConfidentialClient => &[
            "tenant_id",
            "client_id",
            "certificate",
            "region",
            "authority_host",
            "allow_insecure_key_permissions",
            "send_x5c",
        ],
        IdentityKind::WorkloadIdentity => {
            &["client_id", "tenant_id", "token_file", "authority_host"]
        }
        IdentityKind::Static => &[
            "token_file",
            "certificate",
            "allow_insecure_key_permissions",
        ],
    }
}

/// The keys present in `raw` with their value positions, in file order.
fn present_keys(raw: &RawIdentity) -> Vec<(&'static str, Location)> {
    let mut keys: Vec<(&'static str, Location)> = [
        ("client_id", raw.client_id.as_ref().map(|v| v.referenced)),
        (
            "resource_id",
            raw.resource_id.as_ref().map(|v| v.referenced),
        ),
        ("object_id", raw.object_id.as_ref().map(|v| v.referenced)),
        (
            "attestation_command",
            raw.attestation_command.as_ref().map(|v| v.referenced),
        ),
        ("source", raw.source.as_ref().map(|v| v.referenced)),
        ("tenant_id", raw.tenant_id.as_ref().map(|v| v.referenced)),
        (
            "certificate",
            raw.certificate.as_ref().map(|v| v.referenced),
        ),
        ("region", raw.region.as_ref().map(|v| v.referenced)),
        (
            "authority_host",
            raw.authority_host.as_ref().map(|v| v.referenced),
        ),
        ("token_file", raw.token_file.as_ref().map(|v| v.referenced)),
        (
            "allow_insecure_key_permissions",
            raw.allow_insecure_key_permissions
                .as_ref()
                .map(|v| v.referenced),
        ),
        ("send_x5c", raw.send_x5c.as_ref().map(|v| v.referenced)),
    ]
    .into_iter()
    .filter_map(|(k, at)| at.map(|at| (k, at)))
    .collect();
    keys.sort_by_key(|(_, at)| (at.line(), at.column()));
    keys
}

fn identity(cx: &mut Ctx<'_>, name: &str, raw: &RawIdentity) -> IdentityEntry {
    let kind = raw.kind.value;
    let before = cx.errors.len();
    let allowed = allowed_keys(kind);
    for (key, at) in present_keys(raw) {
        if !allowed.contains(&key) {
            cx.error(
                at,
                format!(
                    "`{key}` is not a key of a {kind} identity (allowed: kind, {})",
                    allowed.join(", ")
                ),
            );
        }
    }
    let mi_source = (kind == IdentityKind::ManagedIdentity).then(|| mi_source_kind(cx, raw));
    let validated = match kind {
        IdentityKind::ManagedIdentity => mi_source
            .flatten()
            .and_then(|(source, detected)| managed_identity(cx, raw, source, detected))
            .map(Identity::ManagedIdentity),
        IdentityKind::ConfidentialClient => {
            confidential_client(cx, name, raw).map(Identity::ConfidentialClient)
        }
        IdentityKind::WorkloadIdentity => {
            workload_identity(cx, name, raw).map(Identity::WorkloadIdentity)
        }
        IdentityKind::Static => static_identity(cx, name, raw).map(Identity::Static),
    };
    IdentityEntry {
        kind,
        mi_source: mi_source.flatten().map(|(k, _)| k),
        has_certificate: raw.certificate.is_some(),
        authority_host: raw.authority_host.clone(),
        region: raw.region.clone(),
        validated: validated.filter(|_| cx.errors.len() == before),
    }
}

fn guid(cx: &mut Ctx<'_>, key: &str, raw: &S<String>) -> Option<String> {
    if is_guid(&raw.value) {
        Some(raw.value.to_ascii_lowercase())
    } else {
        cx.error(
            raw.referenced,
            format!(
                "{key} `{}` is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                raw.value
            ),
        );
        None
    }
}

/// The source `source:` names, or the one detected from the environment (MSAL's order); and
/// whether it was detected.
fn mi_source_kind(cx: &mut Ctx<'_>, raw: &RawIdentity) -> Option<(MiSourceKind, bool)> {
    match &raw.source {
        Some(s) => match MiSourceKind::parse(&s.value) {
            Some(kind) => Some((kind, false)),
            None => {
                let names: Vec<&str> = MiSourceKind::ALL.iter().map(|k| k.as_str()).collect();
                cx.error(
                    s.referenced,
                    format!(
                        "unknown managed identity source `{}` (one of: {})",
                        s.value,
                        names.join(", ")
                    ),
                );
                None
            }
        },
        None => {
            let env = |name: &str| cx.env(name);
            Some((mi_source::detect(&env, mi_source::himds_installed()), true))
        }
    }
}

fn managed_identity(
    cx: &mut Ctx<'_>,
    raw: &RawIdentity,
    kind: MiSourceKind,
    detected: bool,
) -> Option<ManagedIdentity> {
    let mut selectors: Vec<(&str, &S<String>)> = [
        ("client_id", raw.client_id.as_ref()),
        ("resource_id", raw.resource_id.as_ref()),
        ("object_id", raw.object_id.as_ref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    selectors.sort_by_key(|(_, v)| (v.referenced.line(), v.referenced.column()));
    if let [(first, _), (second, at), ..] = selectors.as_slice() {
        cx.error(
            at.referenced,
            format!(
                "a managed identity takes at most one of client_id, resource_id, object_id: `{second}` conflicts with `{first}`"
            ),
        );
        return None;
    }
    let selector = match selectors.first() {
        None => None,
        Some(("client_id", v)) => Some(UamiSelector::ClientId(guid(cx, "client_id", v)?)),
        Some(("object_id", v)) => Some(UamiSelector::ObjectId(guid(cx, "object_id", v)?)),
        Some((_, v)) => {
            let lower = v.value.to_ascii_lowercase();
            if !lower.starts_with("/subscriptions/")
                || !lower.contains("/providers/microsoft.managedidentity/userassignedidentities/")
                || v.value.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                cx.error(
                    v.referenced,
                    format!(
                        "resource_id `{}` is not a user-assigned identity ARM id (/subscriptions/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)",
                        v.value
                    ),
                );
                return None;
            }
            Some(UamiSelector::ResourceId(v.value.clone()))
        }
    };
    let attestation_command = match &raw.attestation_command {
        None => None,
        Some(argv) if argv.value.first().is_some_and(|a| !a.value.is_empty()) => {
            Some(argv.value.iter().map(|a| a.value.clone()).collect())
        }
        Some(argv) => {
            cx.error(
                argv.referenced,
                "attestation_command must be a non-empty argv list, e.g. [/usr/local/bin/attest, --json]",
            );
            return None;
        }
    };
    let at = raw
        .source
        .as_ref()
        .map_or(raw.kind.referenced, |s| s.referenced);
    let how = if detected {
        "detected from the environment"
    } else {
        "set by `source`"
    };
    let source = if detected {
        let env = |name: &str| cx.env(name);
        MiSource::resolve(kind, &env)
    } else {
        let env = |name: &str| cx.source_var(kind, name);
        MiSource::resolve(kind, &env)
    };
    let source = match source {
        Ok(s) => s,
        Err(e) => {
            cx.error(at, format!("managed identity source {kind} ({how}): {e}"));
            return None;
        }
    };
    let selector_check = match &source {
        MiSource::MachineLearning(ml) => ml.client_id(selector.as_ref()).map(|_| ()),
        _ => mi_source::check_selector(kind, selector.as_ref()),
    };
    if let Err(e) = selector_check {
        let at = [&raw.client_id, &raw.resource_id, &raw.object_id]
            .into_iter()
            .flatten()
            .next()
            .map_or(at, |v| v.referenced);
        cx.error(at, format!("managed identity source {kind} ({how}): {e}"));
        return None;
    }
    if attestation_command.is_some() && kind != MiSourceKind::Imds {
        if let Some(a) = &raw.attestation_command {
            cx.error(
                a.referenced,
                format!("attestation_command is for IMDSv2 only; managed identity source {kind} ({how}) has no attestation"),
            );
        }
        return None;
    }
    Some(ManagedIdentity {
        selector,
        attestation_command,
        source,
        source_detected: detected,
    })
}

fn tenant(cx: &mut Ctx<'_>, raw: &S<String>) -> Option<String> {
    let t = &raw.value;
    if let Err(e) = authority_host::check_tenant(t) {
        cx.error(raw.referenced, e.to_string());
        return None;
    }
    if is_guid(t) {
        return Some(t.to_ascii_lowercase());
    }
    // A verified domain (contoso.onmicrosoft.com) also names a single tenant.
    match authority_host::normalize_host(t) {
        Ok(domain) if t.contains('.') => Some(domain),
        _ => {
            cx.error(
                raw.referenced,
                format!("tenant_id `{t}` is not a GUID or a tenant domain name"),
            );
            None
        }
    }
}

fn authority(cx: &mut Ctx<'_>, raw: Option<&S<String>>) -> Option<String> {
    let Some(raw) = raw else {
        return Some(DEFAULT_AUTHORITY_HOST.to_owned());
    };
    match authority_host::normalize_host(&raw.value) {
        Ok(h) => Some(h),
        Err(e) => {
            cx.error(raw.referenced, format!("authority_host: {e}"));
            None
        }
    }
}

fn required<'r>(
    cx: &mut Ctx<'_>,
    name: &str,
    raw: &'r RawIdentity,
    key: &str,
    value: Option<&'r S<String>>,
) -> Option<&'r S<String>> {
    if value.is_none() {
        cx.error(
            raw.kind.referenced,
            format!("{} identity `{name}` needs `{key}`", raw.kind.value),
        );
    }
    value
}

/// Whether the identity lets its key file be readable by others.
fn allows_insecure_key(raw: &RawIdentity) -> bool {
    raw.allow_insecure_key_permissions
        .as_ref()
        .is_some_and(|v| v.value)
}

fn certificate(
    cx: &mut Ctx<'_>,
    raw: &S<RawCertificate>,
    allow_insecure_key: bool,
) -> Option<(BindingCert, CertificateFiles)> {
    let c = &raw.value;
    let pem = c.cert_file.is_some() || c.key_file.is_some();
    let p12 = c.pkcs12_file.is_some() || c.password_env.is_some();
    match (pem, p12) {
        (true, false) => pem_certificate(cx, raw, allow_insecure_key),
        (false, true) => pkcs12_certificate(cx, raw, allow_insecure_key),
        (true, true) => {
            cx.error(
                raw.referenced,
                "certificate takes either `cert_file` + `key_file` (PEM) or `pkcs12_file` + `password_env` (PKCS#12), not both",
            );
            None
        }
        (false, false) => {
            cx.error(
                raw.referenced,
                "certificate needs `cert_file` + `key_file` (PEM) or `pkcs12_file` + `password_env` (PKCS#12)",
            );
            None
        }
    }
}

/// A required key of the `certificate` block, or an error at the block naming it.
fn certificate_key<'r>(
    cx: &mut Ctx<'_>,
    raw: &'r S<RawCertificate>,
    key: &str,
    with: &str,
    value: Option<&'r S<String>>,
) -> Option<&'r S<String>> {
    if value.is_none() {
        cx.error(
            raw.referenced,
            format!("certificate with `{with}` needs `{key}`"),
        );
    }
    value
}

fn pem_certificate(
    cx: &mut Ctx<'_>,
    raw: &S<RawCertificate>,
    allow_insecure_key: bool,
) -> Option<(BindingCert, CertificateFiles)> {
    let c = &raw.value;
    let cert = certificate_key(cx, raw, "cert_file", "key_file", c.cert_file.as_ref());
    let key = certificate_key(cx, raw, "key_file", "cert_file", c.key_file.as_ref());
    let (cert, key) = (cert?, key?);
    let (cert_file, key_file) = (cx.path(&cert.value), cx.path(&key.value));
    match cert_files::load_binding_cert(&cert_file, &key_file) {
        Ok(_)
            if !allow_insecure_key
                && world_readable_key(cx, key, &key_file, "key_file", "on the identity") =>
        {
            None
        }
        Ok(b) => Some((
            b,
            CertificateFiles::Pem {
                cert_file,
                key_file,
            },
        )),
        Err(e) => {
            let at = match e.role() {
                FileRole::Certificate => cert.referenced,
                FileRole::Key => key.referenced,
            };
            cx.error(at, e.to_string());
            None
        }
    }
}

/// Any user on the host could copy a world-readable key and present the certificate the
/// identity's tokens are bound to: an error at the file's key (`what`, e.g. `key_file`), saying
/// where `allow_insecure_key_permissions` goes (`allow_on`). Group-readable stays a warning
/// (Kubernetes `fsGroup` mounts are group-readable by design).
pub(super) fn world_readable_key(
    cx: &mut Ctx<'_>,
    key: &S<String>,
    key_file: &std::path::Path,
    what: &str,
    allow_on: &str,
) -> bool {
    let Some(mode) = cert_files::world_accessible_mode(key_file) else {
        return false;
    };
    cx.error(
        key.referenced,
        format!(
            "{what} `{}` is readable or writable by any user (mode {mode:04o}); restrict it (chmod 600, or 640 for a group-readable mount such as a Kubernetes fsGroup secret) or set `allow_insecure_key_permissions: true` {allow_on}",
            key_file.display()
        ),
    );
    true
}

/// Warns when a PKCS#12 file (it holds the private key) is group-readable: allowed, as for
/// PEM key files, since Kubernetes `fsGroup` secret mounts are.
fn warn_if_group_accessible(file: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & cert_files::KEY_FILE_EXPOSED_BITS != 0
    {
        tracing::warn!(
            path = %file.display(),
            mode = %format!("{:04o}", meta.permissions().mode() & 0o7777),
            "PKCS#12 file is accessible to group or others; restrict it (chmod 600)"
        );
    }
}

fn pkcs12_certificate(
    cx: &mut Ctx<'_>,
    raw: &S<RawCertificate>,
    allow_insecure_key: bool,
) -> Option<(BindingCert, CertificateFiles)> {
    let c = &raw.value;
    let file = certificate_key(
        cx,
        raw,
        "pkcs12_file",
        "password_env",
        c.pkcs12_file.as_ref(),
    );
    let var = certificate_key(
        cx,
        raw,
        "password_env",
        "pkcs12_file",
        c.password_env.as_ref(),
    );
    let (file, var) = (file?, var?);
    // Only the variable's name is ever shown; its value goes straight into a zeroizing buffer.
    let Some(password) = cx.env(&var.value).map(Zeroizing::new) else {
        cx.error(
            var.referenced,
            format!(
                "password_env: environment variable `{}` is not set or is empty",
                var.value
            ),
        );
        return None;
    };
    let path = cx.path(&file.value);
    warn_if_group_accessible(&path);
    match pkcs12::load_pkcs12(&path, &password) {
        Ok(_)
            if !allow_insecure_key
                && world_readable_key(cx, file, &path, "pkcs12_file", "on the identity") =>
        {
            None
        }
        Ok(b) => Some((
            b,
            CertificateFiles::Pkcs12 {
                file: path,
                password: Pkcs12Password::new(password),
            },
        )),
        Err(e) => {
            cx.error(file.referenced, e.to_string());
            None
        }
    }
}

fn confidential_client(
    cx: &mut Ctx<'_>,
    name: &str,
    raw: &RawIdentity,
) -> Option<ConfidentialClient> {
    let tenant_raw = required(cx, name, raw, "tenant_id", raw.tenant_id.as_ref());
    let client_raw = required(cx, name, raw, "client_id", raw.client_id.as_ref());
    let tenant_id = tenant_raw.and_then(|t| tenant(cx, t));
    let client_id = client_raw.and_then(|c| guid(cx, "client_id", c));
    let region = match &raw.region {
        None => Some(None),
        Some(r) if authority_host::is_valid_region(&r.value) => {
            Some(Some(r.value.to_ascii_lowercase()))
        }
        Some(r) => {
            cx.error(
                r.referenced,
                authority_host::HostRuleError::BadRegion(r.value.clone()).to_string(),
            );
            None
        }
    };
    let authority_host = authority(cx, raw.authority_host.as_ref());
    let certificate = match &raw.certificate {
        None => Some(None),
        Some(c) => certificate(cx, c, allows_insecure_key(raw)).map(Some),
    };
    let (certificate, certificate_files) = match certificate? {
        Some((cert, files)) => (Some(cert), Some(files)),
        None => (None, None),
    };
    let send_x5c = raw.send_x5c.as_ref().is_some_and(|v| v.value);
    if let Some(at) = raw.send_x5c.as_ref().filter(|v| v.value)
        && certificate.is_none()
    {
        cx.error(
            at.referenced,
            format!(
                "confidential_client `{name}` has `send_x5c: true` but no `certificate`: x5c is the certificate its client assertion is signed with"
            ),
        );
        return None;
    }
    Some(ConfidentialClient {
        tenant_id: tenant_id?,
        client_id: client_id?,
        certificate,
        certificate_files,
        region: region?,
        authority_host: authority_host?,
        send_x5c,
    })
}

fn from_config_or_env(
    cx: &mut Ctx<'_>,
    name: &str,
    raw: &RawIdentity,
    key: &str,
    value: Option<&S<String>>,
    env: &str,
) -> Option<(String, Location)> {
    if let Some(v) = value {
        return Some((v.value.clone(), v.referenced));
    }
    if let Some(v) = cx.env(env) {
        return Some((v, raw.kind.referenced));
    }
    cx.error(
        raw.kind.referenced,
        format!("workload_identity `{name}` has no `{key}` and {env} is not set"),
    );
    None
}

fn workload_identity(cx: &mut Ctx<'_>, name: &str, raw: &RawIdentity) -> Option<WorkloadIdentity> {
    let client = from_config_or_env(
        cx,
        name,
        raw,
        "client_id",
        raw.client_id.as_ref(),
        ENV_CLIENT_ID,
    );
    let tenant_v = from_config_or_env(
        cx,
        name,
        raw,
        "tenant_id",
        raw.tenant_id.as_ref(),
        ENV_TENANT_ID,
    );
    let file = from_config_or_env(
        cx,
        name,
        raw,
        "token_file",
        raw.token_file.as_ref(),
        FEDERATED_TOKEN_FILE_ENV,
    );
    let client_id = client.and_then(|(v, at)| guid(cx, "client_id", &S::new(v, at, at)));
    let tenant_id = tenant_v.and_then(|(v, at)| tenant(cx, &S::new(v, at, at)));
    // The projected token is rotated by kubelet and may not exist where `popgate check` runs,
    // so only its path is validated here; the credential code reads it on every acquisition.
    let token_file = file.map(|(v, _)| cx.path(&v));
    let authority_host = authority(cx, raw.authority_host.as_ref());
    Some(WorkloadIdentity {
        client_id: client_id?,
        tenant_id: tenant_id?,
        token_file: token_file?,
        authority_host: authority_host?,
    })
}

fn static_identity(cx: &mut Ctx<'_>, name: &str, raw: &RawIdentity) -> Option<StaticIdentity> {
    let token_file: Option<PathBuf> =
        required(cx, name, raw, "token_file", raw.token_file.as_ref()).and_then(|f| {
            let path = cx.path(&f.value);
            // Read only to prove it is readable; the contents are a secret and are dropped here.
            match std::fs::read(&path).map(zeroize::Zeroizing::new) {
                Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
                    cx.error(
                        f.referenced,
                        format!("token_file `{}` is empty", path.display()),
                    );
                    None
                }
                Ok(_) => Some(path),
                Err(e) => {
                    cx.error(
                        f.referenced,
                        format!("cannot read token_file `{}`: {e}", path.display()),
                    );
                    None
                }
            }
        });
    let certificate = match &raw.certificate {
        Some(c) => certificate(cx, c, allows_insecure_key(raw)).map(|(cert, _files)| cert),
        None => {
            cx.error(
                raw.kind.referenced,
                format!("static identity `{name}` needs `certificate` (the certificate its token is bound to)"),
            );
            None
        }
    };
    Some(StaticIdentity {
        token_file: token_file?,
        certificate: certificate?,
    })
}
