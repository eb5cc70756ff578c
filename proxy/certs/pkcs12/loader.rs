//! Walking a PFX: its `data` and `encryptedData` contents, their bags, and the choice of key and
//! leaf certificate.

use std::fmt;
use std::path::Path;

use der::asn1::{ObjectIdentifier as Oid, OctetStringRef};
use der::{Decode, Encode as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use super::asn1::{
    CertBag, ContentInfo, EncryptedData, EncryptedPrivateKeyInfo, Pfx, SafeBag, oid,
};
use super::{LEGACY_FIX, MAX_PKCS12_ITERATIONS, MAX_SAFE_CONTENTS_DEPTH, Pkcs12Error};
use crate::certs::binding::{BindingCert, BindingError};
use crate::certs::x509;

/// What the bags of one file held.
#[derive(Default)]
struct Contents {
    certs: Vec<CertificateDer<'static>>,
    keys: Vec<Zeroizing<Vec<u8>>>,
}

/// Reads one file; `path` names it in every error.
pub(super) struct Loader<'p> {
    pub(super) path: &'p Path,
}

impl Loader<'_> {
    pub(super) fn malformed(&self, reason: impl fmt::Display) -> Pkcs12Error {
        Pkcs12Error::Malformed {
            path: self.path.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub(super) fn unsupported(&self, what: &'static str, algorithm: &Oid) -> Pkcs12Error {
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

    pub(super) fn iterations(&self, what: &'static str, n: u64) -> Result<u32, Pkcs12Error> {
        match u32::try_from(n) {
            Ok(v) if (1..=MAX_PKCS12_ITERATIONS).contains(&v) => Ok(v),
            _ => Err(Pkcs12Error::Iterations {
                path: self.path.to_owned(),
                what,
                iterations: n,
            }),
        }
    }

    pub(super) fn load(
        &self,
        der: &[u8],
        password: &Zeroizing<String>,
    ) -> Result<BindingCert, Pkcs12Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
