//! The authority's PKI: a root CA (made at start or loaded from PEM files), an "IMDS issuing" CA
//! under it, the TLS server certificates of the token and resource listeners, certificate-app
//! credentials for tests, and the IMDSv2 binding certificates.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::client_auth::RequireAnyClientCert;

/// Hosts the token listener answers as (its server certificate's SANs), besides the loopback names.
pub const TOKEN_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoft.com",
    "login.windows.net",
    "sts.windows.net",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
    "*.login.microsoft.com",
    "*.login.microsoftonline.us",
    "*.login.partner.microsoftonline.cn",
    "mtlsauth.microsoft.com",
    "*.mtlsauth.microsoft.com",
    "mtlsauth.microsoftonline.us",
    "*.mtlsauth.microsoftonline.us",
    "mtlsauth.partner.microsoftonline.cn",
    "*.mtlsauth.partner.microsoftonline.cn",
];

/// Default hosts of the token-bound resource listener.
pub const DEFAULT_RESOURCE_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "management.azure.com",
    "*.vault.azure.net",
    "storage.azure.com",
    "*.blob.core.windows.net",
];

/// Names every server certificate also carries, so clients can dial the listener directly.
const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Server certificates are remade at every start; a year outlives any test or dev session.
const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificate-app credentials: Entra ID accepts up to a few years; a year is plenty locally.
const APP_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// A generated CA outlives every certificate it issues.
const CA_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Issued certificates start a minute in the past so a client whose clock is slightly behind
/// does not see them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(60);
/// OID of the `domainComponent` (DC) attribute (RFC 4519).
const OID_DOMAIN_COMPONENT: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 25];

/// Why the PKI could not be set up or could not issue something.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read the CA {what} file {path}: {source}")]
    ReadCa {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the CA certificate in {path} is not a PEM certificate: {reason}")]
    BadCaCert { path: String, reason: String },
    #[error("the CA key in {path} is not a usable PEM private key: {reason}")]
    BadCaKey { path: String, reason: String },
    #[error("the public key handed in for {what} is not a usable SubjectPublicKeyInfo: {reason}")]
    BadPublicKey { what: String, reason: String },
    #[error("cannot issue {what}: {reason}")]
    Issue { what: String, reason: String },
    #[error("cannot build the TLS server configuration for the {listener} listener: {reason}")]
    Tls {
        listener: &'static str,
        reason: String,
    },
}

/// Where the root CA comes from.
#[derive(Clone, Debug, Default)]
pub enum CaSource {
    /// A fresh ECDSA P-256 CA, made at start.
    #[default]
    Generate,
    /// An existing CA: PEM certificate and PEM private key (PKCS#8, PKCS#1 or SEC1).
    Files {
        cert_pem: std::path::PathBuf,
        key_pem: std::path::PathBuf,
    },
}

/// A certificate and private key for a certificate app (RSA-2048, so both RS256 and PS256
/// client assertions can be signed with it).
#[derive(Clone)]
pub struct AppCredential {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    /// PKCS#8 PEM; zeroized on drop.
    pub key_pem: Zeroizing<String>,
    /// `x5t#S256` of `cert_der`: what the app registers.
    pub x5t_s256: String,
}

impl AppCredential {
    /// The private key as rustls wants it.
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| PkiError::Issue {
            what: "the app key".into(),
            reason: e.to_string(),
        })
    }
}

impl std::fmt::Debug for AppCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredential")
            .field("x5t_s256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

/// A CA: its certificate and the issuer (subject + signing key) that signs with it.
struct Ca {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// One server certificate with its key, as PEM-free rustls types.
struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

/// The authority's certificates. Cheap to share behind an `Arc`.
pub struct Pki {
    root: Ca,
    imds: Ca,
    token_server: ServerIdentity,
    resource_server: ServerIdentity,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// Sets up the CA (generated or loaded), the IMDS issuing CA and both server certificates.
    /// `resource_hosts` become the SANs of the resource listener's certificate.
    pub fn new(ca: &CaSource, resource_hosts: &[String]) -> Result<Self, PkiError> {
        let root = match ca {
            CaSource::Generate => generate_root()?,
            CaSource::Files { cert_pem, key_pem } => load_root(cert_pem, key_pem)?,
        };
        let imds = issue_intermediate(&root, "popgate-authority IMDS issuing CA")?;
        let token_hosts: Vec<String> = TOKEN_HOSTS.iter().map(|h| h.to_string()).collect();
        let token_server = issue_server(&root, "token endpoint", &token_hosts)?;
        let resource_server = issue_server(&root, "resource", resource_hosts)?;
        Ok(Self {
            root,
            imds,
            token_server,
            resource_server,
        })
    }

    /// The root CA certificate, PEM: what clients trust.
    pub fn ca_pem(&self) -> String {
        pem_encode("CERTIFICATE", self.root.cert_der.as_ref())
    }

    /// The root CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.root.cert_der
    }

    /// The IMDS issuing CA's certificate, DER (binding certificates chain to it).
    pub fn imds_ca_der(&self) -> &CertificateDer<'static> {
        &self.imds.cert_der
    }

    /// A certificate-app credential: RSA-2048 key, certificate with CN=`common_name` issued by
    /// the root CA, client-auth EKU.
    pub fn issue_app_credential(&self, common_name: &str) -> Result<AppCredential, PkiError> {
        let what = format!("an app certificate for CN={common_name}");
        let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .map_err(|e| issue_err(&what, e))?;
        let mut params = leaf_params(APP_CERT_LIFETIME);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.root.issuer)
            .map_err(|e| issue_err(&what, e))?;
        let cert_der = cert.der().clone();
        Ok(AppCredential {
            cert_pem: cert.pem(),
            x5t_s256: crate::thumbprint::x5t_s256(cert_der.as_ref()),
            cert_der,
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// The IMDSv2 binding certificate for a CSR's public key: subject `DC={tenant}, CN={client_id}`
    /// (DC first, as .NET orders it), issued by the IMDS issuing CA, valid for `lifetime`.
    pub fn issue_binding_cert(
        &self,
        spki_der: &[u8],
        tenant: &str,
        client_id: &str,
        lifetime: Duration,
    ) -> Result<Vec<u8>, PkiError> {
        let now = SystemTime::now();
        self.issue_binding_cert_valid(spki_der, tenant, client_id, now - BACKDATE, now + lifetime)
    }

    /// [`Pki::issue_binding_cert`] with explicit validity dates (tests make expired ones).
    pub fn issue_binding_cert_valid(
        &self,
        spki_der: &[u8],
        tenant: &str,
        client_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Vec<u8>, PkiError> {
        let what = format!("a binding certificate for {client_id}");
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| {
            PkiError::BadPublicKey {
                what: what.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut params = leaf_params(Duration::ZERO);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.distinguished_name = DistinguishedName::new();
        let dc = rcgen::string::Ia5String::try_from(tenant.to_string())
            .map_err(|e| issue_err(&what, e))?;
        params.distinguished_name.push(
            DnType::CustomDnType(OID_DOMAIN_COMPONENT.to_vec()),
            DnValue::Ia5String(dc),
        );
        params
            .distinguished_name
            .push(DnType::CommonName, client_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&public_key, &self.imds.issuer)
            .map_err(|e| issue_err(&what, e))?;
        Ok(cert.der().to_vec())
    }

    /// Whether `cert_der` was signed by the IMDS issuing CA (signature check only; validity
    /// dates and subject are the caller's business).
    pub fn issued_by_imds_ca(&self, cert_der: &[u8]) -> bool {
        crate::cert_check::signed_by(cert_der, self.imds.issuer.key().subject_public_key_info())
    }

    /// Whether `cert_der` was signed by the root CA (the issuer a subject-name/issuer app
    /// trusts; signature check only).
    pub fn issued_by_root_ca(&self, cert_der: &[u8]) -> bool {
        crate::cert_check::signed_by(cert_der, self.root.issuer.key().subject_public_key_info())
    }

    /// The token listener's TLS configuration: asks for a client certificate but does not
    /// require one, so the HTTP layer can refuse with an ESTS error body instead of a TLS alert.
    pub fn token_server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        server_config(
            "token",
            &self.token_server,
            RequireAnyClientCert::new(false),
        )
    }

    /// The resource listener's TLS configuration: a client certificate is mandatory.
    pub fn resource_server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        self.resource_server_config_with(true)
    }

    /// The resource listener's TLS configuration, with a client certificate mandatory or only
    /// requested (Bearer callers need none; `mtls_pop` requests without one are refused per request).
    pub fn resource_server_config_with(
        &self,
        client_cert_mandatory: bool,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        server_config(
            "resource",
            &self.resource_server,
            RequireAnyClientCert::new(client_cert_mandatory),
        )
    }

    /// A rustls root store holding just this authority's CA, for clients.
    pub fn root_store(&self) -> Result<rustls::RootCertStore, PkiError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.root.cert_der.clone())
            .map_err(|e| PkiError::Tls {
                listener: "client",
                reason: e.to_string(),
            })?;
        Ok(roots)
    }
}

fn issue_err(what: &str, e: impl std::fmt::Display) -> PkiError {
    PkiError::Issue {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

fn leaf_params(lifetime: Duration) -> CertificateParams {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lifetime).into();
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    params
}

/// 16 random bytes with the top bit clear (serials are positive INTEGERs).
fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = leaf_params(CA_LIFETIME);
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "popgate-authority");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn generate_root() -> Result<Ca, PkiError> {
    let what = "the root CA";
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| issue_err(what, e))?;
    let params = ca_params("popgate-authority local CA");
    let cert = params.self_signed(&key).map_err(|e| issue_err(what, e))?;
    Ok(Ca {
        cert_der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    })
}

fn load_root(cert_path: &std::path::Path, key_path: &std::path::Path) -> Result<Ca, PkiError> {
    let cert_pem = std::fs::read_to_string(cert_path).map_err(|source| PkiError::ReadCa {
        what: "certificate",
        path: cert_path.display().to_string(),
        source,
    })?;
    let key_pem =
        Zeroizing::new(
            std::fs::read_to_string(key_path).map_err(|source| PkiError::ReadCa {
                what: "key",
                path: key_path.display().to_string(),
                source,
            })?,
        );
    let cert_der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| PkiError::BadCaCert {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert_der.as_ref()).map_err(|e| {
        PkiError::BadCaCert {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    if !parsed.is_ca() {
        return Err(PkiError::BadCaCert {
            path: cert_path.display().to_string(),
            reason: "it is not a CA certificate (basicConstraints CA:TRUE missing)".into(),
        });
    }
    let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadCaKey {
        path: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    if key.subject_public_key_info() != parsed.public_key().raw {
        return Err(PkiError::BadCaKey {
            path: key_path.display().to_string(),
            reason: format!(
                "it does not match the public key of the certificate in {}",
                cert_path.display()
            ),
        });
    }
    let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| PkiError::BadCaCert {
        path: cert_path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Ca { cert_der, issuer })
}

fn issue_intermediate(root: &Ca, common_name: &str) -> Result<Ca, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| issue_err(common_name, e))?;
    let mut params = ca_params(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &root.issuer)
        .map_err(|e| issue_err(common_name, e))?;
    Ok(Ca {
        cert_der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    })
}

fn issue_server(root: &Ca, listener: &str, hosts: &[String]) -> Result<ServerIdentity, PkiError> {
    let what = format!("the {listener} server certificate");
    let mut names: Vec<String> = hosts.to_vec();
    names.extend(LOOPBACK_NAMES.iter().map(|n| n.to_string()));
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| issue_err(&what, e))?;
    let mut params = CertificateParams::new(names).map_err(|e| issue_err(&what, e))?;
    let base = leaf_params(SERVER_CERT_LIFETIME);
    params.not_before = base.not_before;
    params.not_after = base.not_after;
    params.serial_number = base.serial_number;
    params.use_authority_key_identifier_extension = true;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("popgate-authority {listener}"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &root.issuer)
        .map_err(|e| issue_err(&what, e))?;
    Ok(ServerIdentity {
        chain: vec![cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    })
}

fn server_config(
    listener: &'static str,
    identity: &ServerIdentity,
    verifier: Arc<RequireAnyClientCert>,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let tls_err = |e: rustls::Error| PkiError::Tls {
        listener,
        reason: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls_err)?
    .with_client_cert_verifier(verifier)
    .with_single_cert(
        identity.chain.clone(),
        PrivateKeyDer::Pkcs8(identity.key.clone_key()),
    )
    .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// PEM armour for one DER object.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
