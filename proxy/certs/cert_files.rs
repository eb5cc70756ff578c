//! Loading a PEM certificate chain and a PEM private key from files into a [`BindingCert`].
//!
//! Key bytes are read into [`Zeroizing`] buffers so the PEM text does not linger on the heap.
//! Every error names the file and what is wrong with it, never the key material.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use zeroize::Zeroizing;

use crate::certs::binding::{BindingCert, BindingError};
use crate::certs::bounded_read::{BoundedReadError, read_open_file};
use crate::certs::x509;

/// Largest certificate or key file popgate reads: real chains are a few KiB; this bounds memory
/// when a path points at something else by mistake.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Which of the two files an error is about (config validation points at that node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The certificate chain file.
    Certificate,
    /// The private key file.
    Key,
}

/// Why a certificate or key file cannot be used. Displays as `file `PATH`: reason`.
#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    /// The file cannot be read.
    #[error("cannot read {role} file `{path}`: {reason}")]
    Read {
        /// Which file.
        role: FileRole,
        /// The file, as resolved.
        path: PathBuf,
        /// What the underlying reader or parser said (never key material).
        reason: String,
    },
    /// The file is larger than [`MAX_PEM_FILE_BYTES`].
    #[error("{role} file `{path}` is larger than {MAX_PEM_FILE_BYTES} bytes")]
    TooLarge {
        /// Which file.
        role: FileRole,
        /// The file, as resolved.
        path: PathBuf,
    },
    /// The file is not valid PEM.
    #[error("{role} file `{path}` is not valid PEM: {reason}")]
    BadPem {
        /// Which file.
        role: FileRole,
        /// The file, as resolved.
        path: PathBuf,
        /// What the underlying reader or parser said (never key material).
        reason: String,
    },
    /// No PEM block of the expected type.
    #[error("{role} file `{path}` has no {expected} PEM block{found}")]
    NoPemBlock {
        /// Which file.
        role: FileRole,
        /// The file, as resolved.
        path: PathBuf,
        /// The PEM block type(s) that were looked for.
        expected: &'static str,
        /// `" (found: …)"` listing other block types present, or empty.
        found: String,
    },
    /// An encrypted private key.
    #[error(
        "key file `{path}` holds an encrypted private key, which is not supported: decrypt it (e.g. `openssl pkey -in {path} -out plain.key`)"
    )]
    EncryptedKey {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// More than one private key in the key file.
    #[error("key file `{path}` holds more than one private key")]
    SeveralKeys {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// The certificate is not X.509.
    #[error("certificate file `{path}` does not hold a valid X.509 certificate: {reason}")]
    BadCertificate {
        /// The file, as resolved.
        path: PathBuf,
        /// What the underlying reader or parser said (never key material).
        reason: String,
    },
    /// The key cannot be used for signing.
    #[error("key file `{path}` does not hold a usable private key: {reason}")]
    BadKey {
        /// The file, as resolved.
        path: PathBuf,
        /// What the underlying reader or parser said (never key material).
        reason: String,
    },
    /// The key is not the certificate's key.
    #[error("key file `{key_path}` does not match the certificate in `{cert_path}`")]
    Mismatch {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
    },
}

impl CertFileError {
    /// The file this error is about.
    pub fn role(&self) -> FileRole {
        match self {
            CertFileError::Read { role, .. }
            | CertFileError::TooLarge { role, .. }
            | CertFileError::BadPem { role, .. }
            | CertFileError::NoPemBlock { role, .. } => *role,
            CertFileError::BadCertificate { .. } => FileRole::Certificate,
            CertFileError::EncryptedKey { .. }
            | CertFileError::SeveralKeys { .. }
            | CertFileError::BadKey { .. }
            | CertFileError::Mismatch { .. } => FileRole::Key,
        }
    }
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::Certificate => "certificate",
            FileRole::Key => "key",
        })
    }
}

/// Reads a whole file (bounded by [`MAX_PEM_FILE_BYTES`]) into a zeroizing buffer.
fn read_bounded(path: &Path, role: FileRole) -> Result<Zeroizing<Vec<u8>>, CertFileError> {
    let read_err = |reason: String| CertFileError::Read {
        role,
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    if role == FileRole::Key {
        warn_if_exposed(&file, path);
    }
    read_open_file(file, MAX_PEM_FILE_BYTES).map_err(|e| match e {
        BoundedReadError::Io(e) => read_err(e.to_string()),
        BoundedReadError::TooLarge { .. } => CertFileError::TooLarge {
            role,
            path: path.to_owned(),
        },
    })
}

/// Permission bits that let someone other than the owner at a private key: group or others may
/// read (or write) it.
pub const KEY_FILE_EXPOSED_BITS: u32 = 0o077;
/// Permission bits that let any user on the host at a private key: others may read or write it.
/// Config validation refuses such a PEM key file unless the identity allows it.
pub const KEY_FILE_WORLD_BITS: u32 = 0o006;

/// The permission bits of the file at `path` when any user may read or write it (following
/// symlinks, as a mounted Kubernetes secret is one); `None` when not, or when its mode cannot be
/// read (opening it then reports the real problem).
pub fn world_accessible_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & KEY_FILE_WORLD_BITS != 0).then_some(mode)
}

/// Warns (does not refuse: Kubernetes secret volumes are often 0644 by default) when a key file's
/// mode lets group or others access it. The mode is read from the open file, so it is the file
/// actually read, even if the path is swapped meanwhile.
fn warn_if_exposed(file: &std::fs::File, path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    match file.metadata() {
        Ok(meta) if meta.permissions().mode() & KEY_FILE_EXPOSED_BITS != 0 => {
            tracing::warn!(
                path = %path.display(),
                mode = %format!("{:04o}", meta.permissions().mode() & 0o7777),
                "private key file is accessible to group or others; restrict it (chmod 600)"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(path = %path.display(), error = %e, "cannot read key file mode"),
    }
}

/// One decoded PEM block: its kind and DER (zeroized on drop: it may be a key).
type PemSection = (SectionKind, Zeroizing<Vec<u8>>);

/// All PEM sections of `pem`, in order, with their kinds.
fn sections(pem: &[u8], role: FileRole, path: &Path) -> Result<Vec<PemSection>, CertFileError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .map(|item| {
            item.map(|(kind, der)| (kind, Zeroizing::new(der)))
                .map_err(|e| CertFileError::BadPem {
                    role,
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// The PEM label of a block kind, as it appears after `-----BEGIN `.
fn pem_label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        SectionKind::EchConfigList => "ECHCONFIG",
        _ => "another",
    }
}

fn found_list(kinds: &[SectionKind]) -> String {
    if kinds.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = kinds.iter().map(|k| pem_label(*k)).collect();
        format!(" (found: {})", names.join(", "))
    }
}

/// Loads a leaf-first PEM certificate chain; every `CERTIFICATE` block must be valid X.509.
pub fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertFileError> {
    let pem = read_bounded(path, FileRole::Certificate)?;
    let mut chain = Vec::new();
    let mut others = Vec::new();
    for (kind, der) in sections(&pem, FileRole::Certificate, path)? {
        if kind == SectionKind::Certificate {
            x509::parse(&der).map_err(|e| CertFileError::BadCertificate {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            chain.push(CertificateDer::from(der.to_vec()));
        } else {
            others.push(kind);
        }
    }
    if chain.is_empty() {
        return Err(CertFileError::NoPemBlock {
            role: FileRole::Certificate,
            path: path.to_owned(),
            expected: "CERTIFICATE",
            found: found_list(&others),
        });
    }
    Ok(chain)
}

/// Loads exactly one PEM private key: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or
/// `EC PRIVATE KEY` (SEC1). Encrypted keys are refused with a hint.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertFileError> {
    let pem = read_bounded(path, FileRole::Key)?;
    // rustls-pki-types skips block types it does not know, so look for encryption markers first.
    if contains(&pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(&pem, b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(CertFileError::EncryptedKey {
            path: path.to_owned(),
        });
    }
    let mut key: Option<PrivateKeyDer<'static>> = None;
    let mut others = Vec::new();
    for (kind, der) in sections(&pem, FileRole::Key, path)? {
        let parsed = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())),
            SectionKind::RsaPrivateKey => {
                PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der.to_vec()))
            }
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der.to_vec())),
            other => {
                others.push(other);
                continue;
            }
        };
        if key.replace(parsed).is_some() {
            return Err(CertFileError::SeveralKeys {
                path: path.to_owned(),
            });
        }
    }
    key.ok_or_else(|| CertFileError::NoPemBlock {
        role: FileRole::Key,
        path: path.to_owned(),
        expected: "PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY",
        found: found_list(&others),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Loads a certificate chain and its key into a [`BindingCert`], checking that they match.
pub fn load_binding_cert(cert_path: &Path, key_path: &Path) -> Result<BindingCert, CertFileError> {
    let chain = load_cert_chain(cert_path)?;
    let key = load_private_key(key_path)?;
    BindingCert::from_der(chain, key).map_err(|e| match e {
        BindingError::KeyMismatch => CertFileError::Mismatch {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        },
        BindingError::BadKey(reason) => CertFileError::BadKey {
            path: key_path.to_owned(),
            reason,
        },
        BindingError::EmptyChain => CertFileError::NoPemBlock {
            role: FileRole::Certificate,
            path: cert_path.to_owned(),
            expected: "CERTIFICATE",
            found: String::new(),
        },
        BindingError::BadCertificate(reason) => CertFileError::BadCertificate {
            path: cert_path.to_owned(),
            reason,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn write(&self, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            p
        }
    }

    fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key)
    }

    #[test]
    fn loads_pkcs8_ecdsa_pair() {
        let f = Files::new();
        let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let c = f.write("c.pem", &cert);
        let k = f.write("k.pem", key.serialize_pem());
        let binding = load_binding_cert(&c, &k).unwrap();
        assert_eq!(binding.x5t_s256().len(), 43);
    }

    #[test]
    fn loads_pkcs1_rsa_and_sec1_ec_keys() {
        let f = Files::new();
        let (cert, key) = self_signed(&rcgen::PKCS_RSA_SHA256);
        let c = f.write("c.pem", &cert);
        let pkcs8 = key.serialize_der();
        let pkcs1 = pkcs1_from_pkcs8(&pkcs8);
        let k = f.write("k.pem", pem_block("RSA PRIVATE KEY", &pkcs1));
        assert!(matches!(
            load_private_key(&k).unwrap(),
            PrivateKeyDer::Pkcs1(_)
        ));
        load_binding_cert(&c, &k).unwrap();

        let (ec_cert, ec_key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let ec_cert = f.write("ec-cert.pem", ec_cert);
        let sec1 = f.write(
            "ec.pem",
            pem_block("EC PRIVATE KEY", &sec1_from_pkcs8(&ec_key.serialize_der())),
        );
        assert!(matches!(
            load_private_key(&sec1).unwrap(),
            PrivateKeyDer::Sec1(_)
        ));
        load_binding_cert(&ec_cert, &sec1).unwrap();
    }

    /// Turns a P-256 PKCS#8 key into SEC1 `ECPrivateKey` with its curve parameters, as
    /// `openssl ec` writes it.
    fn sec1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        use der::{Decode as _, Encode as _};
        #[derive(der::Sequence)]
        struct EcPrivateKey<'a> {
            version: u8,
            private_key: der::asn1::OctetStringRef<'a>,
            #[asn1(context_specific = "0", optional = "true")]
            parameters: Option<der::asn1::ObjectIdentifier>,
            #[asn1(context_specific = "1", optional = "true")]
            public_key: Option<der::asn1::BitStringRef<'a>>,
        }
        let inner = pkcs1_from_pkcs8(pkcs8);
        let mut key = EcPrivateKey::from_der(&inner).unwrap();
        key.parameters = Some(der::asn1::ObjectIdentifier::new_unwrap(
            "1.2.840.10045.3.1.7",
        ));
        key.to_der().unwrap()
    }

    /// Extracts the algorithm-specific key (PKCS#1 for RSA, SEC1 for EC) from a PKCS#8
    /// `PrivateKeyInfo` (its OCTET STRING).
    fn pkcs1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        use der::Decode as _;
        #[derive(der::Sequence)]
        struct Pki<'a> {
            version: u8,
            alg: der::asn1::AnyRef<'a>,
            key: der::asn1::OctetStringRef<'a>,
        }
        let pki = Pki::from_der(pkcs8).unwrap();
        let _ = (pki.version, pki.alg);
        pki.key.as_bytes().to_vec()
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = load_cert_chain(Path::new("/nonexistent/app.pem")).unwrap_err();
        assert_eq!(err.role(), FileRole::Certificate);
        assert!(
            err.to_string()
                .starts_with("cannot read certificate file `/nonexistent/app.pem`: "),
            "{err}"
        );
    }

    #[test]
    fn no_pem_block() {
        let f = Files::new();
        let p = f.write("c.pem", "hello\n");
        assert_eq!(
            load_cert_chain(&p).unwrap_err().to_string(),
            format!(
                "certificate file `{}` has no CERTIFICATE PEM block",
                p.display()
            )
        );
    }

    #[test]
    fn wrong_block_type_is_named() {
        let f = Files::new();
        let (cert, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let c = f.write("c.pem", &cert);
        let k = f.write("k.pem", key.serialize_pem());
        assert_eq!(
            load_cert_chain(&k).unwrap_err().to_string(),
            format!(
                "certificate file `{}` has no CERTIFICATE PEM block (found: PRIVATE KEY)",
                k.display()
            )
        );
        let err = load_private_key(&c).unwrap_err();
        assert_eq!(err.role(), FileRole::Key);
        assert_eq!(
            err.to_string(),
            format!(
                "key file `{}` has no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY PEM block (found: CERTIFICATE)",
                c.display()
            )
        );
    }

    #[test]
    fn encrypted_key_is_refused() {
        let f = Files::new();
        let k = f.write("k.pem", pem_block("ENCRYPTED PRIVATE KEY", &[0x30, 0x00]));
        let err = load_private_key(&k).unwrap_err();
        assert!(matches!(err, CertFileError::EncryptedKey { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("encrypted private key, which is not supported")
        );
    }

    #[test]
    fn legacy_encrypted_rsa_key_is_refused() {
        let f = Files::new();
        let k = f.write(
            "k.pem",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        );
        assert!(matches!(
            load_private_key(&k).unwrap_err(),
            CertFileError::EncryptedKey { .. }
        ));
    }

    #[test]
    fn truncated_pem_is_reported() {
        let f = Files::new();
        let c = f.write("c.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let err = load_cert_chain(&c).unwrap_err();
        assert!(matches!(err, CertFileError::BadPem { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "certificate file `{}` is not valid PEM: ",
                c.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn oversized_file_is_refused() {
        let f = Files::new();
        let big = "A".repeat(usize::try_from(MAX_PEM_FILE_BYTES).unwrap() + 1);
        let k = f.write("k.pem", big);
        assert_eq!(
            load_private_key(&k).unwrap_err().to_string(),
            format!(
                "key file `{}` is larger than {MAX_PEM_FILE_BYTES} bytes",
                k.display()
            )
        );
    }

    #[test]
    fn garbage_certificate_and_key() {
        let f = Files::new();
        let c = f.write("c.pem", pem_block("CERTIFICATE", b"not der"));
        let err = load_cert_chain(&c).unwrap_err();
        assert!(matches!(err, CertFileError::BadCertificate { .. }), "{err}");
        let (cert, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let good_cert = f.write("good.pem", cert);
        let k = f.write("k.pem", pem_block("PRIVATE KEY", b"not a key"));
        let err = load_binding_cert(&good_cert, &k).unwrap_err();
        assert!(matches!(err, CertFileError::BadKey { .. }), "{err}");
        assert_eq!(err.role(), FileRole::Key);
    }

    #[test]
    fn mismatched_pair_is_refused() {
        let f = Files::new();
        let (cert, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, other_key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let c = f.write("c.pem", cert);
        let k = f.write("k.pem", other_key.serialize_pem());
        let err = load_binding_cert(&c, &k).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "key file `{}` does not match the certificate in `{}`",
                k.display(),
                c.display()
            )
        );
    }

    #[test]
    fn two_keys_are_refused() {
        let f = Files::new();
        let (_, a) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, b) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let k = f.write(
            "k.pem",
            format!("{}{}", a.serialize_pem(), b.serialize_pem()),
        );
        assert!(matches!(
            load_private_key(&k).unwrap_err(),
            CertFileError::SeveralKeys { .. }
        ));
    }
}
