//! Loading a PKCS#12 (`.pfx` / `.p12`) file into a [`BindingCert`] (RFC 7292).
//!
//! Supported: what `openssl pkcs12 -export` (OpenSSL 3) and current Windows/Azure Key Vault
//! exports write: a password-integrity MAC (HMAC with SHA-1/SHA-256/SHA-384/SHA-512, key from the
//! RFC 7292 appendix-B KDF), `data` and `encryptedData` contents, `certBag`s,
//! `pkcs8ShroudedKeyBag`s and `keyBag`s, encrypted with PBES2 (PBKDF2 + AES-CBC). The legacy
//! PKCS#12 PBE algorithms (3DES, RC2, RC4) are refused with the command that converts the file.
//!
//! Decrypted key bytes and derived keys live only in [`Zeroizing`] buffers; errors name the file
//! and the problem, never the password or key material.

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aws_lc_rs::{cipher, digest, hmac, pbkdf2};
use der::asn1::{AnyRef, ObjectIdentifier as Oid, OctetStringRef};
use der::{Decode, Encode as _, Sequence};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

use crate::certs::binding::{BindingCert, BindingError};
use crate::certs::bounded_read::{BoundedReadError, read_bounded};
use crate::certs::x509;

/// Largest PKCS#12 file popgate reads: a key and a chain of a few certificates is a few KiB;
/// this bounds memory when a path points at something else by mistake.
pub const MAX_PKCS12_FILE_BYTES: u64 = 1024 * 1024;

/// Largest iteration count accepted for the MAC KDF or PBKDF2: real files use 2 048 (OpenSSL) to
/// 600 000; a larger count is a file built to burn CPU on every (re)load.
pub const MAX_PKCS12_ITERATIONS: u32 = 10_000_000;

/// Deepest nesting of `safeContentsBag`s followed: real files never nest; the cap keeps a crafted
/// file from exhausting the stack through recursion.
const MAX_SAFE_CONTENTS_DEPTH: usize = 4;

/// The command that rewrites a legacy-encrypted file with current algorithms.
// Two steps: OpenSSL 3.0's `pkcs12 -export` reads its input twice, so it cannot take a pipe.
const LEGACY_FIX: &str = "convert it with `openssl pkcs12 -legacy -in old.pfx -nodes -out plain.pem && openssl pkcs12 -export -in plain.pem -out new.pfx` (then delete plain.pem, it holds the unencrypted key), or convert it to PEM and use `cert_file`/`key_file`";

/// A PKCS#12 password. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs12Password(Zeroizing<String>);

impl Pkcs12Password {
    /// Wraps a password (taken by value so no unzeroized copy is left behind by the caller).
    pub fn new(password: Zeroizing<String>) -> Self {
        Self(password)
    }

    /// The password.
    pub fn expose(&self) -> &Zeroizing<String> {
        &self.0
    }
}

impl fmt::Debug for Pkcs12Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkcs12Password(<redacted>)")
    }
}

/// Why a PKCS#12 file cannot be used. Displays as `PKCS#12 file `PATH` …`.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    /// The file cannot be read.
    #[error("cannot read PKCS#12 file `{path}`: {reason}")]
    Read {
        /// The file, as resolved.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// The file is larger than [`MAX_PKCS12_FILE_BYTES`].
    #[error("PKCS#12 file `{path}` is larger than {MAX_PKCS12_FILE_BYTES} bytes")]
    TooLarge {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// The structure is not valid DER PKCS#12 (truncated, PEM, BER-only, …).
    #[error("PKCS#12 file `{path}` is not a valid PKCS#12 (DER) file: {reason}")]
    Malformed {
        /// The file, as resolved.
        path: PathBuf,
        /// Which part is wrong (never key material).
        reason: String,
    },
    /// The file has no integrity MAC, so a wrong password cannot be told from a corrupt file.
    #[error(
        "PKCS#12 file `{path}` has no password MAC (integrity check); re-export it with a password"
    )]
    NoMac {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// The MAC does not verify: the password is wrong or the file was altered.
    #[error(
        "PKCS#12 file `{path}`: the MAC does not verify — the password is wrong or the file is corrupt"
    )]
    MacMismatch {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// An algorithm popgate does not implement.
    #[error("PKCS#12 file `{path}` uses {what} {algorithm}, which is not supported{hint}")]
    Unsupported {
        /// The file, as resolved.
        path: PathBuf,
        /// Where the algorithm is used (e.g. "key encryption").
        what: &'static str,
        /// The algorithm's name or OID.
        algorithm: String,
        /// `": how to fix"`, or empty.
        hint: String,
    },
    /// An iteration count above [`MAX_PKCS12_ITERATIONS`] (or zero).
    #[error(
        "PKCS#12 file `{path}` asks for {iterations} {what} iterations; popgate accepts 1 to {MAX_PKCS12_ITERATIONS}"
    )]
    Iterations {
        /// The file, as resolved.
        path: PathBuf,
        /// Which KDF.
        what: &'static str,
        /// The count in the file.
        iterations: u64,
    },
    /// Decryption failed although the MAC verified (corrupt or mis-built file).
    #[error("PKCS#12 file `{path}`: cannot decrypt the {what}")]
    Decrypt {
        /// The file, as resolved.
        path: PathBuf,
        /// What was being decrypted.
        what: &'static str,
    },
    /// No private key in the file.
    #[error("PKCS#12 file `{path}` holds no private key (export it with its key)")]
    NoKey {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// More than one private key in the file.
    #[error("PKCS#12 file `{path}` holds more than one private key")]
    SeveralKeys {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// No X.509 certificate in the file.
    #[error("PKCS#12 file `{path}` holds no X.509 certificate")]
    NoCertificate {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// No certificate in the file matches its key.
    #[error("PKCS#12 file `{path}`: no certificate in it matches its private key")]
    NoMatchingCertificate {
        /// The file, as resolved.
        path: PathBuf,
    },
    /// A certificate or the key cannot be used.
    #[error("PKCS#12 file `{path}`: {reason}")]
    Unusable {
        /// The file, as resolved.
        path: PathBuf,
        /// What rustls or the X.509 parser said (never key material).
        reason: String,
    },
}

mod oid {
    use der::asn1::ObjectIdentifier as Oid;

    pub const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
    pub const ENCRYPTED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.6");
    pub const ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
    pub const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
    pub const KEY_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.1");
    pub const SHROUDED_KEY_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.2");
    pub const CERT_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.3");
    pub const SAFE_CONTENTS_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.6");
    pub const X509_CERTIFICATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.22.1");
    pub const PBES2: Oid = Oid::new_unwrap("1.2.840.113549.1.5.13");
    pub const PBKDF2: Oid = Oid::new_unwrap("1.2.840.113549.1.5.12");
    pub const PBMAC1: Oid = Oid::new_unwrap("1.2.840.113549.1.5.14");
    pub const HMAC_SHA1: Oid = Oid::new_unwrap("1.2.840.113549.2.7");
    pub const HMAC_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.2.9");
    pub const HMAC_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.2.10");
    pub const HMAC_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.2.11");
    pub const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
    pub const AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
    pub const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
    pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
    /// `pkcs-12PbeIds` arc: pbeWithSHAAnd128BitRC4 (.1) … pbewithSHAAnd40BitRC2-CBC (.6).
    pub const PKCS12_PBE_ARC: &str = "1.2.840.113549.1.12.1.";
    /// PKCS#5 v1.5 PBES1 arc (pbeWithMD5AndDES-CBC etc.): 1.2.840.113549.1.5.1 … .11.
    pub const PBES1_ARC: &str = "1.2.840.113549.1.5.";
}

/// `PFX ::= SEQUENCE { version, authSafe ContentInfo, macData MacData OPTIONAL }`.
#[derive(Sequence)]
struct Pfx<'a> {
    version: u8,
    auth_safe: ContentInfo<'a>,
    mac_data: Option<MacData<'a>>,
}

/// `ContentInfo ::= SEQUENCE { contentType, content [0] EXPLICIT ANY OPTIONAL }`.
#[derive(Sequence)]
struct ContentInfo<'a> {
    content_type: Oid,
    #[asn1(context_specific = "0", optional = "true")]
    content: Option<AnyRef<'a>>,
}

/// `MacData ::= SEQUENCE { mac DigestInfo, macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }`.
#[derive(Sequence)]
struct MacData<'a> {
    mac: DigestInfo<'a>,
    salt: OctetStringRef<'a>,
    iterations: Option<u64>,
}

#[derive(Sequence)]
struct DigestInfo<'a> {
    algorithm: AlgorithmIdentifierRef<'a>,
    digest: OctetStringRef<'a>,
}

/// `EncryptedData ::= SEQUENCE { version, encryptedContentInfo }`.
#[derive(Sequence)]
struct EncryptedData<'a> {
    version: u8,
    content: EncryptedContentInfo<'a>,
}

#[derive(Sequence)]
struct EncryptedContentInfo<'a> {
    content_type: Oid,
    algorithm: AlgorithmIdentifierRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    encrypted: Option<OctetStringRef<'a>>,
}

/// `SafeBag ::= SEQUENCE { bagId, bagValue [0] EXPLICIT ANY, bagAttributes SET OF … OPTIONAL }`.
#[derive(Sequence)]
struct SafeBag<'a> {
    bag_id: Oid,
    #[asn1(context_specific = "0")]
    value: AnyRef<'a>,
    /// friendlyName / localKeyId: decoded so the bag parses, not needed (the key is matched to
    /// its certificate by public key).
    #[allow(dead_code)]
    attributes: Option<AnyRef<'a>>,
}

/// `CertBag ::= SEQUENCE { certId, certValue [0] EXPLICIT ANY }`.
#[derive(Sequence)]
struct CertBag<'a> {
    cert_id: Oid,
    #[asn1(context_specific = "0")]
    value: AnyRef<'a>,
}

/// `EncryptedPrivateKeyInfo ::= SEQUENCE { encryptionAlgorithm, encryptedData OCTET STRING }`.
#[derive(Sequence)]
struct EncryptedPrivateKeyInfo<'a> {
    algorithm: AlgorithmIdentifierRef<'a>,
    data: OctetStringRef<'a>,
}

#[derive(Sequence)]
struct Pbes2Params<'a> {
    kdf: AlgorithmIdentifierRef<'a>,
    encryption: AlgorithmIdentifierRef<'a>,
}

/// `PBKDF2-params`; the salt must be the `specified` OCTET STRING choice (the only one in use).
#[derive(Sequence)]
struct Pbkdf2Params<'a> {
    salt: OctetStringRef<'a>,
    iterations: u64,
    key_length: Option<u64>,
    prf: Option<AlgorithmIdentifierRef<'a>>,
}

/// Loads the certificate chain and private key in the PKCS#12 file at `path` into a
/// [`BindingCert`], after checking the file's MAC with `password`. The chain is ordered leaf
/// first: the certificate whose public key matches the key, then the others in file order.
pub fn load_pkcs12(path: &Path, password: &Zeroizing<String>) -> Result<BindingCert, Pkcs12Error> {
    let bytes = read_file(path)?;
    Loader { path }.load(&bytes, password)
}

/// Reads the whole file (bounded by [`MAX_PKCS12_FILE_BYTES`]) into a zeroizing buffer.
fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    read_bounded(path, MAX_PKCS12_FILE_BYTES).map_err(|e| match e {
        BoundedReadError::Io(e) => Pkcs12Error::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        BoundedReadError::TooLarge { .. } => Pkcs12Error::TooLarge {
            path: path.to_owned(),
        },
    })
}

/// What the bags of one file held.
#[derive(Default)]
struct Contents {
    certs: Vec<CertificateDer<'static>>,
    keys: Vec<Zeroizing<Vec<u8>>>,
}

struct Loader<'p> {
    path: &'p Path,
}

impl Loader<'_> {
    fn malformed(&self, reason: impl fmt::Display) -> Pkcs12Error {
        Pkcs12Error::Malformed {
            path: self.path.to_owned(),
            reason: reason.to_string(),
        }
    }

    fn unsupported(&self, what: &'static str, algorithm: &Oid) -> Pkcs12Error {
        let name = algorithm.to_string();
        let legacy = name.starts_with(oid::PKCS12_PBE_ARC) || name.starts_with(oid::PBES1_ARC);
        let (algorithm, hint) = if legacy {
            (
                format!("the legacy algorithm {} ({name})", legacy_name(&name)),
                format!(": {LEGACY_FIX}"),
            )
        } else {
            (name, String::new())
        };
        Pkcs12Error::Unsupported {
            path: self.path.to_owned(),
            what,
            algorithm,
            hint,
        }
    }

    fn iterations(&self, what: &'static str, n: u64) -> Result<u32, Pkcs12Error> {
        match u32::try_from(n) {
            Ok(v) if (1..=MAX_PKCS12_ITERATIONS).contains(&v) => Ok(v),
            _ => Err(Pkcs12Error::Iterations {
                path: self.path.to_owned(),
                what,
                iterations: n,
            }),
        }
    }

    fn load(&self, der: &[u8], password: &Zeroizing<String>) -> Result<BindingCert, Pkcs12Error> {
        let pfx = Pfx::from_der(der).map_err(|e| self.malformed(e))?;
        if pfx.version != 3 {
            return Err(self.malformed(format!("version {} (expected 3)", pfx.version)));
        }
        if pfx.auth_safe.content_type != oid::DATA {
            // signedData = public-key integrity mode, which nothing in use produces.
            return Err(self.unsupported("integrity mode", &pfx.auth_safe.content_type));
        }
        let auth_safe = self.data_octets(&pfx.auth_safe, "authSafe")?;
        let mac = pfx.mac_data.ok_or_else(|| Pkcs12Error::NoMac {
            path: self.path.to_owned(),
        })?;
        self.verify_mac(&mac, auth_safe, password)?;

        let infos = Vec::<ContentInfo<'_>>::from_der(auth_safe).map_err(|e| self.malformed(e))?;
        let mut contents = Contents::default();
        for info in &infos {
            if info.content_type == oid::DATA {
                let safe = self.data_octets(info, "SafeContents")?;
                self.safe_contents(safe, password, &mut contents, 0)?;
            } else if info.content_type == oid::ENCRYPTED_DATA {
                let plain = self.encrypted_data(info, password)?;
                self.safe_contents(&plain, password, &mut contents, 0)?;
            } else if info.content_type == oid::ENVELOPED_DATA
                || info.content_type == oid::SIGNED_DATA
            {
                return Err(self.unsupported("content type", &info.content_type));
            } else {
                return Err(self.malformed(format!(
                    "unknown content type {} in the authenticated safe",
                    info.content_type
                )));
            }
        }
        self.binding(contents)
    }

    /// The OCTET STRING inside a `data` ContentInfo.
    fn data_octets<'a>(&self, info: &ContentInfo<'a>, what: &str) -> Result<&'a [u8], Pkcs12Error> {
        let any = info
            .content
            .ok_or_else(|| self.malformed(format!("{what} has no content")))?;
        let octets: OctetStringRef<'a> = any
            .decode_as()
            .map_err(|e| self.malformed(format!("{what}: {e}")))?;
        Ok(octets.as_bytes())
    }

    /// Checks the password-integrity MAC over the authenticated safe's octets.
    fn verify_mac(
        &self,
        mac: &MacData<'_>,
        auth_safe: &[u8],
        password: &Zeroizing<String>,
    ) -> Result<(), Pkcs12Error> {
        let alg = &mac.mac.algorithm.oid;
        if *alg == oid::PBMAC1 {
            return Err(self.unsupported("MAC algorithm", alg));
        }
        let (md, hm) = digest_for(alg).ok_or_else(|| self.unsupported("MAC digest", alg))?;
        let iterations = self.iterations("MAC", mac.iterations.unwrap_or(1))?;
        let salt = mac.salt.as_bytes();
        let expected = mac.mac.digest.as_bytes();
        // OpenSSL writes an empty password as the BMPString terminator only ("\0\0") but also
        // accepts no bytes at all, so both are tried for an empty password.
        let mut candidates = vec![bmp_password(password)];
        if password.is_empty() {
            candidates.push(Zeroizing::new(Vec::new()));
        }
        for pw in &candidates {
            let key = pkcs12_kdf(md, MAC_KEY_ID, pw, salt, iterations, md.output_len());
            let key = hmac::Key::new(hm, &key);
            if hmac::verify(&key, auth_safe, expected).is_ok() {
                return Ok(());
            }
        }
        Err(Pkcs12Error::MacMismatch {
            path: self.path.to_owned(),
        })
    }

    fn encrypted_data(
        &self,
        info: &ContentInfo<'_>,
        password: &Zeroizing<String>,
    ) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
        let any = info
            .content
            .ok_or_else(|| self.malformed("encryptedData has no content"))?;
        let data: EncryptedData<'_> = any
            .decode_as()
            .map_err(|e| self.malformed(format!("encryptedData: {e}")))?;
        let ciphertext = data
            .content
            .encrypted
            .ok_or_else(|| self.malformed("encryptedData has no encrypted content"))?;
        self.pbes2_decrypt(
            &data.content.algorithm,
            ciphertext.as_bytes(),
            password,
            "certificate encryption",
            "encrypted certificates",
        )
    }

    fn safe_contents(
        &self,
        der: &[u8],
        password: &Zeroizing<String>,
        out: &mut Contents,
        depth: usize,
    ) -> Result<(), Pkcs12Error> {
        if depth > MAX_SAFE_CONTENTS_DEPTH {
            return Err(self.malformed(format!(
                "safeContentsBag nested more than {MAX_SAFE_CONTENTS_DEPTH} deep"
            )));
        }
        let bags = Vec::<SafeBag<'_>>::from_der(der).map_err(|e| self.malformed(e))?;
        for bag in &bags {
            if bag.bag_id == oid::CERT_BAG {
                let cert: CertBag<'_> = bag
                    .value
                    .decode_as()
                    .map_err(|e| self.malformed(format!("certBag: {e}")))?;
                if cert.cert_id != oid::X509_CERTIFICATE {
                    // SDSI certificates are ignored, as OpenSSL does.
                    continue;
                }
                let octets: OctetStringRef<'_> = cert
                    .value
                    .decode_as()
                    .map_err(|e| self.malformed(format!("certBag: {e}")))?;
                x509::parse(octets.as_bytes()).map_err(|e| {
                    self.malformed(format!(
                        "certificate {} is not valid X.509: {e}",
                        out.certs.len() + 1
                    ))
                })?;
                out.certs
                    .push(CertificateDer::from(octets.as_bytes().to_vec()));
            } else if bag.bag_id == oid::KEY_BAG {
                out.keys.push(Zeroizing::new(
                    bag.value
                        .to_der()
                        .map_err(|e| self.malformed(format!("keyBag: {e}")))?,
                ));
            } else if bag.bag_id == oid::SHROUDED_KEY_BAG {
                let epki: EncryptedPrivateKeyInfo<'_> = bag
                    .value
                    .decode_as()
                    .map_err(|e| self.malformed(format!("pkcs8ShroudedKeyBag: {e}")))?;
                out.keys.push(self.pbes2_decrypt(
                    &epki.algorithm,
                    epki.data.as_bytes(),
                    password,
                    "key encryption",
                    "private key",
                )?);
            } else if bag.bag_id == oid::SAFE_CONTENTS_BAG {
                // Nested SafeContents (rare), recursion bounded by MAX_SAFE_CONTENTS_DEPTH.
                let inner = bag
                    .value
                    .to_der()
                    .map_err(|e| self.malformed(format!("safeContentsBag: {e}")))?;
                self.safe_contents(&inner, password, out, depth + 1)?;
            }
            // crlBag, secretBag: not needed for a client certificate.
        }
        Ok(())
    }

    /// Decrypts PBES2 (PBKDF2 + AES-CBC) ciphertext; anything else is refused by name.
    fn pbes2_decrypt(
        &self,
        alg: &AlgorithmIdentifierRef<'_>,
        ciphertext: &[u8],
        password: &Zeroizing<String>,
        what: &'static str,
        object: &'static str,
    ) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
        if alg.oid != oid::PBES2 {
            return Err(self.unsupported(what, &alg.oid));
        }
        let params: Pbes2Params<'_> = alg
            .parameters
            .ok_or_else(|| self.malformed("PBES2 without parameters"))?
            .decode_as()
            .map_err(|e| self.malformed(format!("PBES2 parameters: {e}")))?;
        if params.kdf.oid != oid::PBKDF2 {
            return Err(self.unsupported("key derivation", &params.kdf.oid));
        }
        let kdf: Pbkdf2Params<'_> = params
            .kdf
            .parameters
            .ok_or_else(|| self.malformed("PBKDF2 without parameters"))?
            .decode_as()
            .map_err(|e| self.malformed(format!("PBKDF2 parameters: {e}")))?;
        let prf = match &kdf.prf {
            None => pbkdf2::PBKDF2_HMAC_SHA1,
            Some(p) if p.oid == oid::HMAC_SHA1 => pbkdf2::PBKDF2_HMAC_SHA1,
            Some(p) if p.oid == oid::HMAC_SHA256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Some(p) if p.oid == oid::HMAC_SHA384 => pbkdf2::PBKDF2_HMAC_SHA384,
            Some(p) if p.oid == oid::HMAC_SHA512 => pbkdf2::PBKDF2_HMAC_SHA512,
            Some(p) => return Err(self.unsupported("PBKDF2 PRF", &p.oid)),
        };
        let (cipher_alg, key_len) = match params.encryption.oid {
            o if o == oid::AES128_CBC => (&cipher::AES_128, 16),
            o if o == oid::AES192_CBC => (&cipher::AES_192, 24),
            o if o == oid::AES256_CBC => (&cipher::AES_256, 32),
            o => return Err(self.unsupported(what, &o)),
        };
        if kdf.key_length.is_some_and(|l| l != key_len as u64) {
            return Err(self.malformed("PBKDF2 key length does not match the cipher"));
        }
        let iv: OctetStringRef<'_> = params
            .encryption
            .parameters
            .ok_or_else(|| self.malformed("AES-CBC without an IV"))?
            .decode_as()
            .map_err(|e| self.malformed(format!("AES-CBC IV: {e}")))?;
        let iv: [u8; 16] = iv
            .as_bytes()
            .try_into()
            .map_err(|_| self.malformed("AES-CBC IV is not 16 bytes"))?;
        let iterations = NonZeroU32::new(self.iterations("PBKDF2", kdf.iterations)?)
            .ok_or_else(|| self.malformed("PBKDF2 iteration count 0"))?;
        let mut key = Zeroizing::new(vec![0u8; key_len]);
        // `derive` panics only when the output is longer than (2^32 - 1) * PRF length; AES keys
        // are at most 32 bytes.
        pbkdf2::derive(
            prf,
            iterations,
            kdf.salt.as_bytes(),
            password.as_bytes(),
            &mut key,
        );
        let decrypt_err = || Pkcs12Error::Decrypt {
            path: self.path.to_owned(),
            what: object,
        };
        let unbound = cipher::UnboundCipherKey::new(cipher_alg, &key).map_err(|_| decrypt_err())?;
        let dec =
            cipher::PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| decrypt_err())?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain_len = dec
            .decrypt(&mut buf, cipher::DecryptionContext::Iv128(iv.into()))
            .map_err(|_| decrypt_err())?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }

    /// Picks the key, orders the chain leaf first and builds the binding.
    fn binding(&self, contents: Contents) -> Result<BindingCert, Pkcs12Error> {
        let path = || self.path.to_owned();
        let mut keys = contents.keys.into_iter();
        let key = keys
            .next()
            .ok_or_else(|| Pkcs12Error::NoKey { path: path() })?;
        if keys.next().is_some() {
            return Err(Pkcs12Error::SeveralKeys { path: path() });
        }
        if contents.certs.is_empty() {
            return Err(Pkcs12Error::NoCertificate { path: path() });
        }
        let key_der = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
        let unusable = |e: BindingError| Pkcs12Error::Unusable {
            path: path(),
            reason: e.to_string(),
        };
        for (i, leaf) in contents.certs.iter().enumerate() {
            let mut chain = vec![leaf.clone()];
            chain.extend(
                contents
                    .certs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, c)| c.clone()),
            );
            match BindingCert::from_der(chain, key_der()) {
                Ok(b) => return Ok(b),
                Err(BindingError::KeyMismatch) => continue,
                Err(e) => return Err(unusable(e)),
            }
        }
        Err(Pkcs12Error::NoMatchingCertificate { path: path() })
    }
}

/// The digest and HMAC for a MAC `DigestInfo` algorithm.
fn digest_for(alg: &Oid) -> Option<(&'static digest::Algorithm, hmac::Algorithm)> {
    match *alg {
        o if o == oid::SHA1 => Some((
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        )),
        o if o == oid::SHA256 => Some((&digest::SHA256, hmac::HMAC_SHA256)),
        o if o == oid::SHA384 => Some((&digest::SHA384, hmac::HMAC_SHA384)),
        o if o == oid::SHA512 => Some((&digest::SHA512, hmac::HMAC_SHA512)),
        _ => None,
    }
}

fn legacy_name(oid: &str) -> &'static str {
    match oid {
        "1.2.840.113549.1.12.1.1" => "pbeWithSHAAnd128BitRC4",
        "1.2.840.113549.1.12.1.2" => "pbeWithSHAAnd40BitRC4",
        "1.2.840.113549.1.12.1.3" => "pbeWithSHAAnd3-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.4" => "pbeWithSHAAnd2-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.5" => "pbeWithSHAAnd128BitRC2-CBC",
        "1.2.840.113549.1.12.1.6" => "pbeWithSHAAnd40BitRC2-CBC",
        _ => "PKCS#5 v1.5 PBES1",
    }
}

/// The password as RFC 7292 appendix B.1 wants it for the MAC KDF: big-endian UTF-16 with a
/// two-byte terminator.
fn bmp_password(password: &Zeroizing<String>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(password.len() * 2 + 2));
    for unit in password.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// Appendix B.3 `ID` for MAC key material.
const MAC_KEY_ID: u8 = 3;

/// RFC 7292 appendix B.2 key derivation: `n` bytes from `password` (already BMP-encoded),
/// `salt` and `iterations` with hash `md`.
fn pkcs12_kdf(
    md: &'static digest::Algorithm,
    id: u8,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    n: usize,
) -> Zeroizing<Vec<u8>> {
    let u = md.output_len();
    let v = md.block_len();
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = v * src.len().div_ceil(v);
        src.iter().copied().cycle().take(len).collect()
    };
    let d = vec![id; v];
    let mut i = Zeroizing::new(fill(salt));
    i.extend_from_slice(&Zeroizing::new(fill(password)));
    let mut out = Zeroizing::new(Vec::with_capacity(n.div_ceil(u) * u));
    while out.len() < n {
        let mut ctx = digest::Context::new(md);
        ctx.update(&d);
        ctx.update(&i);
        let mut a = Zeroizing::new(ctx.finish().as_ref().to_vec());
        for _ in 1..iterations {
            a = Zeroizing::new(digest::digest(md, &a).as_ref().to_vec());
        }
        out.extend_from_slice(&a);
        if out.len() >= n {
            break;
        }
        // I_j = (I_j + B + 1) mod 2^(8v) for each v-byte block, B = A repeated to v bytes.
        let b: Zeroizing<Vec<u8>> = Zeroizing::new(a.iter().copied().cycle().take(v).collect());
        for block in i.chunks_mut(v) {
            let mut carry: u16 = 1;
            for k in (0..v).rev() {
                let sum = u16::from(block[k]) + u16::from(b[k]) + carry;
                block[k] = (sum & 0xff) as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7292 has no test vectors; this one is from the PKCS#12 KDF test set used by OpenSSL
    /// and Bouncy Castle (SHA-1, ID 1, password "smeg", 1 iteration, 24 bytes).
    #[test]
    fn kdf_matches_known_vector() {
        let pw = bmp_password(&Zeroizing::new("smeg".to_owned()));
        let salt = [0x0A, 0x58, 0xCF, 0x64, 0x53, 0x0D, 0x82, 0x3F];
        let out = pkcs12_kdf(&digest::SHA1_FOR_LEGACY_USE_ONLY, 1, &pw, &salt, 1, 24);
        let expected = [
            0x8A, 0xAA, 0xE6, 0x29, 0x7B, 0x6C, 0xB0, 0x46, 0x42, 0xAB, 0x5B, 0x07, 0x78, 0x51,
            0x28, 0x4E, 0xB7, 0x12, 0x8F, 0x1A, 0x2A, 0x7F, 0xBC, 0xA3,
        ];
        assert_eq!(out.as_slice(), expected.as_slice());
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = (len as u32).to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (4 - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    /// SafeContents holding `levels` nested safeContentsBags around an empty SafeContents.
    fn nested(levels: usize) -> Vec<u8> {
        let oid = oid::SAFE_CONTENTS_BAG.to_der().unwrap();
        let mut inner = tlv(0x30, &[]);
        for _ in 0..levels {
            let mut bag = oid.clone();
            bag.extend(tlv(0xA0, &inner));
            inner = tlv(0x30, &tlv(0x30, &bag));
        }
        inner
    }

    #[test]
    fn nested_safe_contents_are_bounded() {
        let loader = Loader {
            path: Path::new("nested.pfx"),
        };
        let password = Zeroizing::new("pw".to_owned());
        let mut contents = Contents::default();
        loader
            .safe_contents(&nested(2), &password, &mut contents, 0)
            .unwrap();
        let err = loader
            .safe_contents(&nested(1000), &password, &mut contents, 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "PKCS#12 file `nested.pfx` is not a valid PKCS#12 (DER) file: safeContentsBag nested more than {MAX_SAFE_CONTENTS_DEPTH} deep"
            )
        );
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Pkcs12Password::new(Zeroizing::new("hunter2".to_owned()));
        assert_eq!(format!("{p:?}"), "Pkcs12Password(<redacted>)");
    }
}
