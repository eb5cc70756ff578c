//! The IMDSv2 binding key and certificate signing request (protocol.md §3 steps 2–3).
//!
//! The key is RSA-2048, generated with aws-lc-rs and held only in memory. The CSR is PKCS#10 built
//! with x509-cert types: subject `DC={tenantId}, CN={clientId}` (DC first, as .NET encodes MSAL's
//! `CN=…, DC=…` string), one attribute carrying the VM's
//! `cuId` JSON, signed RSASSA-PSS / SHA-256 / MGF1-SHA-256 / salt 32 (rcgen cannot sign PSS).

use std::fmt;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PSS_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::asn1::{
    Any, BitString, Ia5StringRef, ObjectIdentifier, PrintableStringRef, SetOfVec, Utf8StringRef,
};
use der::{Decode as _, Encode as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::{Attribute, AttributeTypeAndValue};
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo, Version};
use zeroize::Zeroizing;

use crate::certs::binding::{BindingCert, BindingError};
use crate::identity::imds_v2::CuId;

// `new_unwrap` runs at compile time in these consts: a malformed OID fails the build, not a run.

/// The attribute IMDS reads the VM identity from (Microsoft arc, `…311.90.2.10`).
pub const CU_ID_ATTRIBUTE_OID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.90.2.10");
/// `domainComponent` (RFC 4519).
pub const DOMAIN_COMPONENT_OID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.25");
/// `commonName`.
pub const COMMON_NAME_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// `id-RSASSA-PSS` (RFC 4055).
pub const RSASSA_PSS_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");

/// DER of `RSASSA-PSS-params` for SHA-256 / MGF1-SHA-256 / salt 32 / trailer 1 (default, omitted):
/// `SEQUENCE { [0] { sha256 }, [1] { mgf1, { sha256 } }, [2] INTEGER 32 }`.
/// Written out because the parameter set is fixed. The SHA-256 identifiers have **no**
/// parameters, as .NET's `CertificateRequest` writes them (MSAL.NET's IMDSv2 CSR) and as RFC 5754
/// §2 says for SHA-2 (RFC 4055 makes verifiers accept absent and NULL alike).
pub const RSASSA_PSS_SHA256_PARAMS: &[u8] = &[
    0x30, 0x30, // SEQUENCE, 48 bytes
    0xa0, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x01, // [0] sha256
    0xa1, 0x1a, 0x30, 0x18, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
    0x08, // [1] mgf1
    0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x01, //     sha256
    0xa2, 0x03, 0x02, 0x01, 0x20, // [2] saltLength 32
];

/// Why a key or CSR could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// aws-lc could not generate the key.
    #[error("generating the RSA-2048 binding key failed")]
    KeyGeneration,
    /// An input (from `getplatformmetadata`) cannot go into the CSR.
    #[error("cannot build the CSR: {field} {problem}")]
    BadInput {
        /// The metadata field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// DER encoding failed.
    #[error("encoding the CSR failed: {0}")]
    Encoding(String),
    /// aws-lc could not sign.
    #[error("signing the CSR failed")]
    Signing,
}

impl From<der::Error> for CsrError {
    fn from(e: der::Error) -> Self {
        CsrError::Encoding(e.to_string())
    }
}

/// The in-memory RSA-2048 key a managed identity's binding certificates are issued for.
/// Generated once per process and identity; never written anywhere.
pub struct BindingKey {
    key: KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl BindingKey {
    /// Generates a fresh RSA-2048 key.
    pub fn generate() -> Result<Self, CsrError> {
        let key = KeyPair::generate(KeySize::Rsa2048).map_err(|_| CsrError::KeyGeneration)?;
        // aws-lc-rs's DER buffer zeroizes itself on drop; our copy is zeroizing too.
        let pkcs8 = Zeroizing::new(
            key.as_der()
                .map_err(|_| CsrError::KeyGeneration)?
                .as_ref()
                .to_vec(),
        );
        Ok(Self { key, pkcs8 })
    }

    /// The key as PKCS#8 DER. Secret: only for loading into a TLS signer.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a `SubjectPublicKeyInfo` DER.
    pub fn spki_der(&self) -> Result<Vec<u8>, CsrError> {
        let der = self
            .key
            .public_key()
            .as_der()
            .map_err(|_| CsrError::Encoding("the public key cannot be encoded".into()))?;
        Ok(der.as_ref().to_vec())
    }

    /// A [`BindingCert`] for a certificate issued for this key (leaf first). Fails if the leaf's
    /// public key is not this key's.
    pub fn binding_cert(
        &self,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<BindingCert, BindingError> {
        // rustls loads the key from an owned copy and keeps it inside aws-lc.
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.to_vec()));
        BindingCert::from_der(chain, key)
    }

    fn sign_pss(&self, message: &[u8]) -> Result<Vec<u8>, CsrError> {
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        // RSA_PSS_SHA256 uses a salt as long as the digest: 32 bytes.
        self.key
            .sign(
                &RSA_PSS_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| CsrError::Signing)?;
        Ok(signature)
    }
}

impl fmt::Debug for BindingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BindingKey(RSA-2048, <redacted>)")
    }
}

/// A DER-encoded PKCS#10 request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Csr {
    der: Vec<u8>,
}

impl Csr {
    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Single-line standard base64 of the DER, as `issuecredential` wants it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.der)
    }
}

/// The compact `cuId` JSON carried in the CSR: `{"vmId":"…"}`, `{"vmssId":"…"}` or
/// `{"vmId":"…","vmssId":"…"}` — absent fields omitted, that key order, standard JSON escaping.
pub fn cu_id_json(cu_id: &CuId) -> String {
    #[derive(serde::Serialize)]
    struct Compact<'a> {
        #[serde(rename = "vmId", skip_serializing_if = "Option::is_none")]
        vm_id: Option<&'a str>,
        #[serde(rename = "vmssId", skip_serializing_if = "Option::is_none")]
        vmss_id: Option<&'a str>,
    }
    let compact = Compact {
        vm_id: cu_id.vm_id.as_deref(),
        vmss_id: cu_id.vmss_id.as_deref(),
    };
    // Serializing two optional strings cannot fail.
    serde_json::to_string(&compact).unwrap_or_default()
}

/// Builds and signs the CSR for `DC={tenant_id}, CN={client_id}` with the `cuId` attribute.
pub fn build_csr(
    key: &BindingKey,
    tenant_id: &str,
    client_id: &str,
    cu_id: &CuId,
) -> Result<Csr, CsrError> {
    let bad = |field, problem: &str| CsrError::BadInput {
        field,
        problem: problem.to_string(),
    };
    if tenant_id.is_empty() {
        return Err(bad("tenantId", "is empty"));
    }
    if client_id.is_empty() {
        return Err(bad("clientId", "is empty"));
    }
    if !cu_id.has_any() {
        return Err(bad("cuId", "has neither vmId nor vmssId"));
    }
    // String types as Windows encodes `CN=…, DC=…` for MSAL: DC is an IA5String (RFC 4519), CN a
    // PrintableString when its characters allow (GUIDs do), else a UTF8String.
    let dc = Ia5StringRef::new(tenant_id).map_err(|_| bad("tenantId", "is not ASCII"))?;
    let cn = match PrintableStringRef::new(client_id) {
        Ok(printable) => Any::encode_from(&printable)?,
        Err(_) => Any::encode_from(&Utf8StringRef::new(client_id)?)?,
    };
    let subject = RdnSequence(vec![
        rdn(DOMAIN_COMPONENT_OID, Any::encode_from(&dc)?)?,
        rdn(COMMON_NAME_OID, cn)?,
    ]);
    let public_key = SubjectPublicKeyInfoOwned::from_der(&key.spki_der()?)?;
    let cu_json = cu_id_json(cu_id);
    let attribute = Attribute {
        oid: CU_ID_ATTRIBUTE_OID,
        values: SetOfVec::try_from(vec![Any::encode_from(&Utf8StringRef::new(&cu_json)?)?])?,
    };
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key,
        attributes: SetOfVec::try_from(vec![attribute])?,
    };
    let signature = key.sign_pss(&info.to_der()?)?;
    let request = CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned {
            oid: RSASSA_PSS_OID,
            parameters: Some(Any::from_der(RSASSA_PSS_SHA256_PARAMS)?),
        },
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(Csr {
        der: request.to_der()?,
    })
}

fn rdn(oid: ObjectIdentifier, value: Any) -> Result<RelativeDistinguishedName, CsrError> {
    Ok(RelativeDistinguishedName(SetOfVec::try_from(vec![
        AttributeTypeAndValue { oid, value },
    ])?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        RSA_PSS_2048_8192_SHA256, RsaParameters, RsaPssSaltLength, UnparsedPublicKey,
    };
    use der::{Tag, Tagged as _};
    use x509_parser::prelude::FromDer as _;
    use x509_parser::signature_algorithm::SignatureAlgorithm;

    fn cu(vm: Option<&str>, vmss: Option<&str>) -> CuId {
        CuId {
            vm_id: vm.map(str::to_owned),
            vmss_id: vmss.map(str::to_owned),
        }
    }

    #[test]
    fn csr_round_trips_and_its_pss_signature_verifies() {
        let key = BindingKey::generate().unwrap();
        let csr = build_csr(
            &key,
            "751a212b-4003-416e-b600-e1f48e40db9f",
            "d3adb33f-c0de",
            &cu(Some("vm-1"), Some("ss-2")),
        )
        .unwrap();
        assert!(!csr.to_base64().contains(['\n', '\r', '-', '_']));
        assert_eq!(STANDARD.decode(csr.to_base64()).unwrap(), csr.der());

        let parsed = CertReq::from_der(csr.der()).unwrap();
        // Subject: DC first (IA5String), then CN (UTF8String).
        let rdns = &parsed.info.subject.0;
        assert_eq!(rdns.len(), 2);
        let dc = rdns[0].0.get(0).unwrap();
        assert_eq!(dc.oid, DOMAIN_COMPONENT_OID);
        assert_eq!(dc.value.tag(), Tag::Ia5String);
        assert_eq!(dc.value.value(), b"751a212b-4003-416e-b600-e1f48e40db9f");
        let cn = rdns[1].0.get(0).unwrap();
        assert_eq!(cn.oid, COMMON_NAME_OID);
        assert_eq!(cn.value.tag(), Tag::PrintableString);
        assert_eq!(cn.value.value(), b"d3adb33f-c0de");
        // One attribute: the cuId JSON as a UTF8String.
        assert_eq!(parsed.info.attributes.len(), 1);
        let attr = parsed.info.attributes.get(0).unwrap();
        assert_eq!(attr.oid, CU_ID_ATTRIBUTE_OID);
        let value = attr.values.get(0).unwrap();
        assert_eq!(value.tag(), Tag::Utf8String);
        assert_eq!(value.value(), br#"{"vmId":"vm-1","vmssId":"ss-2"}"#);
        // The public key is ours.
        assert_eq!(
            parsed.info.public_key.to_der().unwrap(),
            key.spki_der().unwrap()
        );
        // The algorithm parameters, read back by an independent parser.
        assert_eq!(parsed.algorithm.oid, RSASSA_PSS_OID);
        // As .NET writes them: both SHA-256 identifiers without parameters (no NULL).
        let params = parsed
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .to_der()
            .unwrap();
        let sha256_bare = [
            0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        ];
        let found = params
            .windows(sha256_bare.len())
            .filter(|w| *w == sha256_bare)
            .count();
        assert_eq!(found, 2, "{params:02x?}");
        assert!(
            !params.windows(2).any(|w| w == [0x05, 0x00]),
            "no NULL: {params:02x?}"
        );
        let (_, x509_req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(csr.der())
                .unwrap();
        match SignatureAlgorithm::try_from(&x509_req.signature_algorithm).unwrap() {
            SignatureAlgorithm::RSASSA_PSS(params) => {
                assert_eq!(
                    params.hash_algorithm_oid().to_id_string(),
                    "2.16.840.1.101.3.4.2.1"
                );
                let mgf = params.mask_gen_algorithm().unwrap();
                assert_eq!(mgf.mgf.to_id_string(), "1.2.840.113549.1.1.8");
                assert_eq!(mgf.hash.to_id_string(), "2.16.840.1.101.3.4.2.1");
                assert_eq!(params.salt_length(), 32);
                assert_eq!(params.trailer_field(), 1);
            }
            other => panic!("not PSS: {other:?}"),
        }
        // The signature verifies over the CertificationRequestInfo, with salt exactly 32.
        let public = parsed
            .info
            .public_key
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let signed = parsed.info.to_der().unwrap();
        let sig = parsed.signature.raw_bytes();
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, &public)
            .verify(&signed, sig)
            .unwrap();
        static SALT_32: RsaParameters =
            RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Custom(32));
        static SALT_20: RsaParameters =
            RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Custom(20));
        UnparsedPublicKey::new(&SALT_32, &public)
            .verify(&signed, sig)
            .unwrap();
        assert!(
            UnparsedPublicKey::new(&SALT_20, &public)
                .verify(&signed, sig)
                .is_err()
        );
    }

    #[test]
    fn a_common_name_outside_printable_string_is_utf8() {
        let key = BindingKey::generate().unwrap();
        let csr = build_csr(&key, "t", "client_ü", &cu(Some("v"), None)).unwrap();
        let parsed = CertReq::from_der(csr.der()).unwrap();
        let cn = parsed.info.subject.0[1].0.get(0).unwrap();
        assert_eq!(cn.value.tag(), Tag::Utf8String);
        assert_eq!(cn.value.value(), "client_ü".as_bytes());
    }

    #[test]
    fn cu_id_json_is_compact_ordered_and_omits_absent_fields() {
        assert_eq!(
            cu_id_json(&cu(Some("fake_vmId"), None)),
            r#"{"vmId":"fake_vmId"}"#
        );
        assert_eq!(cu_id_json(&cu(None, Some("s"))), r#"{"vmssId":"s"}"#);
        assert_eq!(
            cu_id_json(&cu(Some("a\"b"), Some("c"))),
            r#"{"vmId":"a\"b","vmssId":"c"}"#
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let key = BindingKey::generate().unwrap();
        let ok = cu(Some("v"), None);
        let err = build_csr(&key, "", "c", &ok).unwrap_err().to_string();
        assert!(err.contains("tenantId is empty"), "{err}");
        let err = build_csr(&key, "t", "", &ok).unwrap_err().to_string();
        assert!(err.contains("clientId is empty"), "{err}");
        let err = build_csr(&key, "tenänt", "c", &ok).unwrap_err().to_string();
        assert!(err.contains("tenantId is not ASCII"), "{err}");
        let err = build_csr(&key, "t", "c", &cu(None, Some("")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cuId has neither"), "{err}");
    }

    #[test]
    fn key_debug_is_redacted() {
        let key = BindingKey::generate().unwrap();
        assert_eq!(format!("{key:?}"), "BindingKey(RSA-2048, <redacted>)");
    }
}
