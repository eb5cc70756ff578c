//! The RFC 7292 (and PKCS#5 / PKCS#7) structures popgate reads, as `der` types, and their OIDs.

use der::Sequence;
use der::asn1::{AnyRef, ObjectIdentifier as Oid, OctetStringRef};
use spki::AlgorithmIdentifierRef;

pub(super) mod oid {
    use der::asn1::ObjectIdentifier as Oid;

    pub(crate) const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
    pub(crate) const ENCRYPTED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.6");
    pub(crate) const ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
    pub(crate) const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
    pub(crate) const KEY_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.1");
    pub(crate) const SHROUDED_KEY_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.2");
    pub(crate) const CERT_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.3");
    pub(crate) const SAFE_CONTENTS_BAG: Oid = Oid::new_unwrap("1.2.840.113549.1.12.10.1.6");
    pub(crate) const X509_CERTIFICATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.22.1");
    pub(crate) const PBES2: Oid = Oid::new_unwrap("1.2.840.113549.1.5.13");
    pub(crate) const PBKDF2: Oid = Oid::new_unwrap("1.2.840.113549.1.5.12");
    pub(crate) const PBMAC1: Oid = Oid::new_unwrap("1.2.840.113549.1.5.14");
    pub(crate) const HMAC_SHA1: Oid = Oid::new_unwrap("1.2.840.113549.2.7");
    pub(crate) const HMAC_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.2.9");
    pub(crate) const HMAC_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.2.10");
    pub(crate) const HMAC_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.2.11");
    pub(crate) const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
    pub(crate) const AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
    pub(crate) const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
    pub(crate) const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
    pub(crate) const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub(crate) const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub(crate) const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
    /// `pkcs-12PbeIds` arc: pbeWithSHAAnd128BitRC4 (.1) … pbewithSHAAnd40BitRC2-CBC (.6).
    pub(crate) const PKCS12_PBE_ARC: &str = "1.2.840.113549.1.12.1.";
    /// PKCS#5 v1.5 PBES1 arc (pbeWithMD5AndDES-CBC etc.): 1.2.840.113549.1.5.1 … .11.
    pub(crate) const PBES1_ARC: &str = "1.2.840.113549.1.5.";
}

/// `PFX ::= SEQUENCE { version, authSafe ContentInfo, macData MacData OPTIONAL }`.
#[derive(Sequence)]
pub(super) struct Pfx<'a> {
    pub(super) version: u8,
    pub(super) auth_safe: ContentInfo<'a>,
    pub(super) mac_data: Option<MacData<'a>>,
}

/// `ContentInfo ::= SEQUENCE { contentType, content [0] EXPLICIT ANY OPTIONAL }`.
#[derive(Sequence)]
pub(super) struct ContentInfo<'a> {
    pub(super) content_type: Oid,
    #[asn1(context_specific = "0", optional = "true")]
    pub(super) content: Option<AnyRef<'a>>,
}

/// `MacData ::= SEQUENCE { mac DigestInfo, macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }`.
#[derive(Sequence)]
pub(super) struct MacData<'a> {
    pub(super) mac: DigestInfo<'a>,
    pub(super) salt: OctetStringRef<'a>,
    pub(super) iterations: Option<u64>,
}

#[derive(Sequence)]
pub(super) struct DigestInfo<'a> {
    pub(super) algorithm: AlgorithmIdentifierRef<'a>,
    pub(super) digest: OctetStringRef<'a>,
}

/// `EncryptedData ::= SEQUENCE { version, encryptedContentInfo }`.
#[derive(Sequence)]
pub(super) struct EncryptedData<'a> {
    pub(super) version: u8,
    pub(super) content: EncryptedContentInfo<'a>,
}

#[derive(Sequence)]
pub(super) struct EncryptedContentInfo<'a> {
    pub(super) content_type: Oid,
    pub(super) algorithm: AlgorithmIdentifierRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub(super) encrypted: Option<OctetStringRef<'a>>,
}

/// `SafeBag ::= SEQUENCE { bagId, bagValue [0] EXPLICIT ANY, bagAttributes SET OF … OPTIONAL }`.
#[derive(Sequence)]
pub(super) struct SafeBag<'a> {
    pub(super) bag_id: Oid,
    #[asn1(context_specific = "0")]
    pub(super) value: AnyRef<'a>,
    /// friendlyName / localKeyId: decoded so the bag parses, not needed (the key is matched to
    /// its certificate by public key).
    #[allow(dead_code)]
    pub(super) attributes: Option<AnyRef<'a>>,
}

/// `CertBag ::= SEQUENCE { certId, certValue [0] EXPLICIT ANY }`.
#[derive(Sequence)]
pub(super) struct CertBag<'a> {
    pub(super) cert_id: Oid,
    #[asn1(context_specific = "0")]
    pub(super) value: AnyRef<'a>,
}

/// `EncryptedPrivateKeyInfo ::= SEQUENCE { encryptionAlgorithm, encryptedData OCTET STRING }`.
#[derive(Sequence)]
pub(super) struct EncryptedPrivateKeyInfo<'a> {
    pub(super) algorithm: AlgorithmIdentifierRef<'a>,
    pub(super) data: OctetStringRef<'a>,
}

#[derive(Sequence)]
pub(super) struct Pbes2Params<'a> {
    pub(super) kdf: AlgorithmIdentifierRef<'a>,
    pub(super) encryption: AlgorithmIdentifierRef<'a>,
}

/// `PBKDF2-params`; the salt must be the `specified` OCTET STRING choice (the only one in use).
#[derive(Sequence)]
pub(super) struct Pbkdf2Params<'a> {
    pub(super) salt: OctetStringRef<'a>,
    pub(super) iterations: u64,
    pub(super) key_length: Option<u64>,
    pub(super) prf: Option<AlgorithmIdentifierRef<'a>>,
}
