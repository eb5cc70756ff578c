//! Test scaffolding shared by the IMDS tests: a small `ImdsBackend` (rcgen CA, `SigningKeys`
//! tokens), a CSR builder able to produce good and deliberately bad CSRs, and a loopback HTTP client.

use std::sync::Arc;
use std::time::Duration;

pub use super::{TENANT, sorted_keys as keys_of, unix_now, vector};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use der::asn1::{BitString, ObjectIdentifier, SetOfVec};
use der::{Any, Decode, Encode, Tag};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use popgate_authority::claims::Claims;
use popgate_authority::faults::Faults;
use popgate_authority::imds::backend::{
    BackendError, CuId, ImdsBackend, ManagedIdentity, MintedToken, UamiSelector,
};
use popgate_authority::imds::{ImdsHandle, ImdsSettings};
use popgate_authority::observe::Observations;
use popgate_authority::signing::SigningKeys;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::{Attribute, AttributeTypeAndValue};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo, Version};

pub const SAMI_CLIENT: &str = "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3";
pub const SAMI_OBJECT: &str = "0b1ec7aa-0000-4000-8000-000000000001";
pub const UAMI_CLIENT: &str = "6325cd32-9911-41f3-819c-416cdf9104e7";
pub const UAMI_OBJECT: &str = "ecb2ad92-3e30-4505-b79f-ac640d069f24";
pub const UAMI_RESOURCE: &str = "/subscriptions/c1686c51-b717-4fe0-9af3-24a20a41fb0c/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/msiv2uami";
pub const VM_ID: &str = "fake_vmId";
pub const MTLS_ENDPOINT: &str = "https://127.0.0.1:4443";
/// The backend refuses tokens for this resource, as ESTS does for an unknown principal.
pub const UNKNOWN_RESOURCE: &str = "https://unknown.example";
pub const TOKEN_LIFETIME: u64 = 3599;

/// A VM with a SAMI (optional) and one UAMI.
pub struct TestBackend {
    pub keys: Arc<SigningKeys>,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub with_sami: bool,
    pub cu: CuId,
}

impl TestBackend {
    pub fn new(with_sami: bool) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test managed identity CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Self {
            keys: Arc::new(SigningKeys::generate().unwrap()),
            ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
            with_sami,
            cu: CuId {
                vm_id: Some(VM_ID.into()),
                vmss_id: None,
            },
        }
    }

    pub fn sami() -> ManagedIdentity {
        ManagedIdentity {
            client_id: SAMI_CLIENT.into(),
            object_id: SAMI_OBJECT.into(),
            resource_id: None,
            tenant_id: TENANT.into(),
            system_assigned: true,
        }
    }

    pub fn uami() -> ManagedIdentity {
        ManagedIdentity {
            client_id: UAMI_CLIENT.into(),
            object_id: UAMI_OBJECT.into(),
            resource_id: Some(UAMI_RESOURCE.into()),
            tenant_id: TENANT.into(),
            system_assigned: false,
        }
    }
}

impl ImdsBackend for TestBackend {
    fn system_assigned(&self) -> Option<ManagedIdentity> {
        self.with_sami.then(Self::sami)
    }

    fn user_assigned(&self, selector: &UamiSelector) -> Option<ManagedIdentity> {
        let uami = Self::uami();
        let hit = match selector {
            UamiSelector::ClientId(v) => *v == uami.client_id,
            UamiSelector::ObjectId(v) => *v == uami.object_id,
            UamiSelector::ResourceId(v) => Some(v) == uami.resource_id.as_ref(),
        };
        hit.then_some(uami)
    }

    fn cu_id(&self) -> CuId {
        self.cu.clone()
    }

    fn issue_certificate(
        &self,
        identity: &ManagedIdentity,
        spki_der: &[u8],
        lifetime: Duration,
    ) -> Result<Vec<u8>, BackendError> {
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| BackendError {
            error: "invalid_request".into(),
            code: 0,
            description: e.to_string(),
        })?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            identity.tenant_id.as_str(),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, identity.client_id.as_str());
        let now = x509_parser::time::ASN1Time::now().to_datetime();
        params.not_before = now - Duration::from_secs(300);
        params.not_after = now + lifetime;
        let cert = params.signed_by(&public, &self.ca).unwrap();
        Ok(cert.der().to_vec())
    }

    fn mtls_authentication_endpoint(&self) -> String {
        MTLS_ENDPOINT.into()
    }

    fn mint_bearer_token(
        &self,
        identity: &ManagedIdentity,
        resource: &str,
    ) -> Result<MintedToken, BackendError> {
        if resource == UNKNOWN_RESOURCE {
            return Err(BackendError {
                error: "invalid_resource".into(),
                code: 500011,
                description: format!(
                    "The resource principal named {resource} was not found in the tenant"
                ),
            });
        }
        let now = unix_now();
        let claims = Claims {
            iss: format!(
                "https://login.microsoftonline.com/{}/v2.0",
                identity.tenant_id
            ),
            aud: resource.into(),
            sub: identity.object_id.clone(),
            tid: identity.tenant_id.clone(),
            oid: identity.object_id.clone(),
            appid: identity.client_id.clone(),
            iat: now,
            nbf: now,
            exp: now + TOKEN_LIFETIME,
            uti: uuid::Uuid::new_v4().to_string(),
            ver: "2.0".into(),
            cnf: None,
        };
        Ok(MintedToken {
            access_token: self.keys.sign(&claims).unwrap(),
            expires_in: TOKEN_LIFETIME,
        })
    }
}

/// A running IMDS plus what tests inspect.
pub struct Imds {
    pub handle: ImdsHandle,
    pub backend: Arc<TestBackend>,
    pub faults: Arc<Faults>,
    pub observations: Arc<Observations>,
}

pub async fn start(settings: ImdsSettings) -> Imds {
    start_with(TestBackend::new(true), settings).await
}

pub async fn start_with(backend: TestBackend, settings: ImdsSettings) -> Imds {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = Arc::new(backend);
    let faults = Arc::new(Faults::default());
    let observations = Arc::new(Observations::default());
    let handle = popgate_authority::imds::spawn(
        listener,
        backend.clone(),
        faults.clone(),
        observations.clone(),
        settings,
    )
    .await
    .unwrap();
    Imds {
        handle,
        backend,
        faults,
        observations,
    }
}

/// A response as the test saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// `error_description` of an error body (IMDS, IMDSv2 or App Service `message`).
    pub fn description(&self) -> String {
        let v = self.json();
        v.get("error_description")
            .or_else(|| v.get("message"))
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// Sends one request over a fresh loopback connection; `Err` when the server dropped it.
pub async fn send(
    imds: &Imds,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Reply, hyper::Error> {
    let stream = tokio::net::TcpStream::connect(imds.handle.addr())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", "169.254.169.254");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .unwrap();
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn get(imds: &Imds, path_and_query: &str, headers: &[(&str, &str)]) -> Reply {
    send(imds, "GET", path_and_query, headers, None)
        .await
        .expect("the server answered")
}

// ---------------------------------------------------------------------------------------------
// CSRs

pub const OID_DC: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.25");
pub const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
pub const OID_CU_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.90.2.10");
const OID_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// DER of `AlgorithmIdentifier { sha256, NULL }`.
const SHA256_ALG: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
];
/// DER of `AlgorithmIdentifier { sha256 }` (no parameters, as .NET writes it).
const SHA256_ALG_NO_PARAMS: &[u8] = &[
    0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];
/// DER of `AlgorithmIdentifier { sha1, NULL }`.
const SHA1_ALG: &[u8] = &[
    0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
];
const MGF1_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08,
];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    assert!(content.len() < 128, "short-form lengths only");
    let mut out = vec![tag, content.len() as u8];
    out.extend_from_slice(content);
    out
}

/// RSASSA-PSS-params DER with the given hash (for both hash and MGF1) and salt (`None`: omitted).
pub fn pss_params(hash_alg: &[u8], salt: Option<u8>, include_hash: bool) -> Vec<u8> {
    let mut inner = Vec::new();
    if include_hash {
        inner.extend(tlv(0xa0, hash_alg));
        let mut mgf = MGF1_OID.to_vec();
        mgf.extend_from_slice(hash_alg);
        inner.extend(tlv(0xa1, &tlv(0x30, &mgf)));
    }
    if let Some(s) = salt {
        inner.extend(tlv(0xa2, &[0x02, 0x01, s]));
    }
    tlv(0x30, &inner)
}

pub fn sha256_alg() -> &'static [u8] {
    SHA256_ALG
}

pub fn sha256_alg_no_params() -> &'static [u8] {
    SHA256_ALG_NO_PARAMS
}

pub fn sha1_alg() -> &'static [u8] {
    SHA1_ALG
}

/// How to sign a test CSR.
#[derive(Clone, Debug)]
pub enum Signing {
    /// RSASSA-PSS SHA-256 salt 32 with these (possibly wrong) parameter bytes.
    Pss { params: Vec<u8> },
    /// PKCS#1 v1.5 SHA-256 (`sha256WithRSAEncryption`).
    Pkcs1,
    /// Correct PSS, then one signature byte flipped.
    PssCorrupted,
}

/// Which key the CSR carries.
#[derive(Clone, Copy, Debug)]
pub enum TestKey {
    Rsa2048,
    Rsa3072,
    /// A P-256 key with a PSS signature made by an unrelated RSA key.
    EcP256,
}

/// Everything a test CSR says, defaulting to what IMDS wants for the SAMI.
#[derive(Clone, Debug)]
pub struct CsrSpec {
    pub key: TestKey,
    pub signing: Signing,
    /// RDNs in encoding order: (OID, string tag, value).
    pub subject: Vec<(ObjectIdentifier, Tag, String)>,
    /// Attributes: (OID, values as (tag, text)).
    pub attributes: Vec<(ObjectIdentifier, Vec<(Tag, String)>)>,
}

impl CsrSpec {
    pub fn for_identity(client_id: &str) -> Self {
        Self {
            key: TestKey::Rsa2048,
            signing: Signing::Pss {
                params: pss_params(SHA256_ALG, Some(32), true),
            },
            subject: vec![
                (OID_DC, Tag::Ia5String, TENANT.to_string()),
                (OID_CN, Tag::Utf8String, client_id.to_string()),
            ],
            attributes: vec![(
                OID_CU_ID,
                vec![(Tag::Utf8String, format!("{{\"vmId\":\"{VM_ID}\"}}"))],
            )],
        }
    }
}

fn any_string(tag: Tag, text: &str) -> Any {
    Any::new(tag, text.as_bytes()).unwrap()
}

fn rsa_key(size: KeySize) -> RsaKeyPair {
    RsaKeyPair::generate(size).unwrap()
}

/// A built CSR: the base64 for the request body and the SPKI DER the certificate must carry.
pub struct BuiltCsr {
    pub base64: String,
    pub der: Vec<u8>,
    pub spki_der: Vec<u8>,
}

pub fn build_csr(spec: &CsrSpec) -> BuiltCsr {
    let rsa = match spec.key {
        TestKey::Rsa3072 => rsa_key(KeySize::Rsa3072),
        _ => rsa_key(KeySize::Rsa2048),
    };
    let spki_der: Vec<u8> = match spec.key {
        TestKey::EcP256 => {
            let rng = SystemRandom::new();
            let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &rng,
            )
            .unwrap();
            let ec = signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                pkcs8.as_ref(),
            )
            .unwrap();
            ec.public_key().as_der().unwrap().as_ref().to_vec()
        }
        _ => rsa.public_key().as_der().unwrap().as_ref().to_vec(),
    };
    let public_key = SubjectPublicKeyInfoOwned::from_der(&spki_der).unwrap();
    let rdns: Vec<RelativeDistinguishedName> = spec
        .subject
        .iter()
        .map(|(oid, tag, value)| {
            RelativeDistinguishedName(
                SetOfVec::try_from(vec![AttributeTypeAndValue {
                    oid: *oid,
                    value: any_string(*tag, value),
                }])
                .unwrap(),
            )
        })
        .collect();
    let attributes: Vec<Attribute> = spec
        .attributes
        .iter()
        .map(|(oid, values)| Attribute {
            oid: *oid,
            values: SetOfVec::try_from(
                values
                    .iter()
                    .map(|(tag, text)| any_string(*tag, text))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        })
        .collect();
    let info = CertReqInfo {
        version: Version::V1,
        subject: Name::from(RdnSequence(rdns)),
        public_key,
        attributes: SetOfVec::try_from(attributes).unwrap(),
    };
    let tbs = info.to_der().unwrap();
    let rng = SystemRandom::new();
    let mut sig = vec![0u8; rsa.public_modulus_len()];
    let algorithm = match &spec.signing {
        Signing::Pss { params } => {
            rsa.sign(&signature::RSA_PSS_SHA256, &rng, &tbs, &mut sig)
                .unwrap();
            AlgorithmIdentifierOwned {
                oid: OID_PSS,
                parameters: Some(Any::from_der(params).unwrap()),
            }
        }
        Signing::PssCorrupted => {
            rsa.sign(&signature::RSA_PSS_SHA256, &rng, &tbs, &mut sig)
                .unwrap();
            sig[10] ^= 0x01;
            AlgorithmIdentifierOwned {
                oid: OID_PSS,
                parameters: Some(Any::from_der(&pss_params(SHA256_ALG, Some(32), true)).unwrap()),
            }
        }
        Signing::Pkcs1 => {
            rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, &tbs, &mut sig)
                .unwrap();
            AlgorithmIdentifierOwned {
                oid: OID_SHA256_RSA,
                parameters: Some(Any::new(Tag::Null, Vec::<u8>::new()).unwrap()),
            }
        }
    };
    let csr = CertReq {
        info,
        algorithm,
        signature: BitString::from_bytes(&sig).unwrap(),
    };
    let der = csr.to_der().unwrap();
    BuiltCsr {
        base64: STANDARD.encode(&der),
        der,
        spki_der,
    }
}

pub fn issue_body(csr_b64: &str) -> String {
    serde_json::json!({ "csr": csr_b64 }).to_string()
}
