//! The private_key_jwt client assertion (RFC 7523) a certificate app signs with its binding
//! certificate's key, for Bearer requests to `login.*`.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::SignatureScheme;
use zeroize::Zeroizing;

use crate::certs::binding::BindingCert;

/// How long an assertion is valid. ESTS accepts it once, within minutes of signing; ten minutes is
/// what MSAL uses and leaves room for clock skew without making a leaked assertion long-lived.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Which signature the assertion should carry, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256 (`PS256`); preferred.
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`).
    Rs256,
}

impl AssertionAlgorithm {
    fn scheme(self) -> SignatureScheme {
        match self {
            AssertionAlgorithm::Ps256 => SignatureScheme::RSA_PSS_SHA256,
            AssertionAlgorithm::Rs256 => SignatureScheme::RSA_PKCS1_SHA256,
        }
    }

    fn from_scheme(scheme: SignatureScheme) -> Option<Self> {
        match scheme {
            SignatureScheme::RSA_PSS_SHA256 => Some(AssertionAlgorithm::Ps256),
            SignatureScheme::RSA_PKCS1_SHA256 => Some(AssertionAlgorithm::Rs256),
            _ => None,
        }
    }

    /// The JWS `alg` value.
    pub fn jws_name(self) -> &'static str {
        match self {
            AssertionAlgorithm::Ps256 => "PS256",
            AssertionAlgorithm::Rs256 => "RS256",
        }
    }
}

/// The default preference: PS256, then RS256.
pub const DEFAULT_ALGORITHMS: &[AssertionAlgorithm] =
    &[AssertionAlgorithm::Ps256, AssertionAlgorithm::Rs256];

/// What goes into an assertion besides the key.
#[derive(Clone, Copy, Debug)]
pub struct AssertionInput<'a> {
    /// The app's client id: `iss` and `sub`.
    pub client_id: &'a str,
    /// The token endpoint URL: `aud`.
    pub audience: &'a str,
    /// The signing time: `iat` and `nbf`; `exp` is this plus [`ASSERTION_LIFETIME`].
    pub now: SystemTime,
    /// Send the certificate chain as `x5c` (needed for subject-name/issuer authentication).
    pub include_x5c: bool,
}

/// A signed assertion. Zeroized on drop; `Debug` shows only its length.
pub struct ClientAssertion(Zeroizing<String>);

impl ClientAssertion {
    /// The compact JWS, for the request body only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientAssertion(<redacted, {} bytes>)", self.0.len())
    }
}

/// Why an assertion could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// The key is not RSA.
    #[error(
        "cannot sign a client assertion with a {key_algorithm} key: Entra ID wants RSA assertions (PS256 or RS256)"
    )]
    NotRsa {
        /// The key's algorithm as rustls names it.
        key_algorithm: String,
    },
    /// `client_id` or `audience` is empty.
    #[error("cannot sign a client assertion: {0} is empty")]
    EmptyInput(&'static str),
    /// The system clock reads before the Unix epoch.
    #[error("cannot sign a client assertion: the clock is before 1970")]
    Clock,
    /// The key refused to sign.
    #[error("signing the client assertion failed: {0}")]
    Signing(String),
}

/// Signs an assertion with the binding certificate's key, preferring PS256.
pub fn sign_client_assertion(
    binding: &BindingCert,
    input: &AssertionInput<'_>,
) -> Result<ClientAssertion, AssertionError> {
    sign_client_assertion_with(binding, input, DEFAULT_ALGORITHMS)
}

/// Signs an assertion with the first of `algorithms` the key supports.
pub fn sign_client_assertion_with(
    binding: &BindingCert,
    input: &AssertionInput<'_>,
    algorithms: &[AssertionAlgorithm],
) -> Result<ClientAssertion, AssertionError> {
    if input.client_id.is_empty() {
        return Err(AssertionError::EmptyInput("client_id"));
    }
    if input.audience.is_empty() {
        return Err(AssertionError::EmptyInput("audience"));
    }
    let certified = binding.certified_key();
    let schemes: Vec<SignatureScheme> = algorithms.iter().map(|a| a.scheme()).collect();
    let signer = certified
        .key
        .choose_scheme(&schemes)
        .ok_or_else(|| AssertionError::NotRsa {
            key_algorithm: format!("{:?}", certified.key.algorithm()),
        })?;
    let alg =
        AssertionAlgorithm::from_scheme(signer.scheme()).ok_or_else(|| AssertionError::NotRsa {
            key_algorithm: format!("{:?}", certified.key.algorithm()),
        })?;

    let mut header = serde_json::json!({
        "alg": alg.jws_name(),
        "typ": "JWT",
        "x5t#S256": binding.x5t_s256(),
    });
    if input.include_x5c {
        let chain: Vec<String> = certified
            .cert
            .iter()
            .map(|c| STANDARD.encode(c.as_ref()))
            .collect();
        header["x5c"] = serde_json::Value::from(chain);
    }
    let iat = input
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| AssertionError::Clock)?
        .as_secs();
    let claims = serde_json::json!({
        "aud": input.audience,
        "iss": input.client_id,
        "sub": input.client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": iat,
        "nbf": iat,
        "exp": iat + ASSERTION_LIFETIME.as_secs(),
    });
    let mut jws = Zeroizing::new(String::with_capacity(1024));
    jws.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = signer
        .sign(jws.as_bytes())
        .map_err(|e| AssertionError::Signing(e.to_string()))?;
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(ClientAssertion(jws))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::csr::BindingKey;
    use aws_lc_rs::signature::{self, UnparsedPublicKey};
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    fn rsa_binding() -> BindingCert {
        let key = BindingKey::generate().unwrap();
        let kp = rcgen::KeyPair::try_from(key.pkcs8_der()).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app.test".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        key.binding_cert(vec![CertificateDer::from(cert.der().to_vec())])
            .unwrap()
    }

    fn decode_part(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn verify(
        binding: &BindingCert,
        jwt: &str,
        alg: &'static dyn signature::VerificationAlgorithm,
    ) {
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let cert = crate::certs::x509::parse(binding.leaf_der().as_ref()).unwrap();
        let public = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec();
        UnparsedPublicKey::new(alg, public)
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .expect("signature verifies against the certificate's public key");
    }

    #[test]
    fn ps256_and_rs256_assertions_verify_with_the_certificate_key() {
        let binding = rsa_binding();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let input = AssertionInput {
            client_id: "app-id",
            audience: "https://login.microsoftonline.com/tid/oauth2/v2.0/token",
            now,
            include_x5c: true,
        };
        for (algs, name, verifier) in [
            (
                &[AssertionAlgorithm::Ps256][..],
                "PS256",
                &signature::RSA_PSS_2048_8192_SHA256
                    as &'static dyn signature::VerificationAlgorithm,
            ),
            (
                &[AssertionAlgorithm::Rs256][..],
                "RS256",
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
        ] {
            let jwt = sign_client_assertion_with(&binding, &input, algs).unwrap();
            let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
            assert_eq!(parts.len(), 3);
            let header = decode_part(parts[0]);
            assert_eq!(header["alg"], name);
            assert_eq!(header["typ"], "JWT");
            assert_eq!(header["x5t#S256"], binding.x5t_s256());
            assert_eq!(
                header["x5c"][0],
                STANDARD.encode(binding.leaf_der().as_ref())
            );
            let claims = decode_part(parts[1]);
            assert_eq!(claims["aud"], input.audience);
            assert_eq!(claims["iss"], "app-id");
            assert_eq!(claims["sub"], "app-id");
            assert_eq!(claims["iat"], 1_800_000_000u64);
            assert_eq!(claims["nbf"], 1_800_000_000u64);
            assert_eq!(claims["exp"], 1_800_000_600u64);
            assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
            verify(&binding, jwt.expose_secret(), verifier);
            assert!(!format!("{jwt:?}").contains(parts[2]));
        }
        let default = sign_client_assertion(
            &binding,
            &AssertionInput {
                include_x5c: false,
                ..input
            },
        )
        .unwrap();
        let header = decode_part(default.expose_secret().split('.').next().unwrap());
        assert_eq!(header["alg"], "PS256");
        assert!(header.get("x5c").is_none());
    }

    #[test]
    fn ec_keys_are_refused_with_a_clear_error() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ec.test".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let binding = BindingCert::from_der(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(kp.serialize_der())),
        )
        .unwrap();
        let input = AssertionInput {
            client_id: "c",
            audience: "a",
            now: SystemTime::now(),
            include_x5c: false,
        };
        let err = sign_client_assertion(&binding, &input)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Entra ID wants RSA assertions"), "{err}");
    }

    #[test]
    fn empty_inputs_are_refused() {
        let binding = rsa_binding();
        let input = AssertionInput {
            client_id: "",
            audience: "a",
            now: SystemTime::now(),
            include_x5c: false,
        };
        assert!(matches!(
            sign_client_assertion(&binding, &input),
            Err(AssertionError::EmptyInput("client_id"))
        ));
        let input = AssertionInput {
            client_id: "c",
            audience: "",
            now: SystemTime::now(),
            include_x5c: false,
        };
        assert!(matches!(
            sign_client_assertion(&binding, &input),
            Err(AssertionError::EmptyInput("audience"))
        ));
        let input = AssertionInput {
            client_id: "c",
            audience: "a",
            now: SystemTime::UNIX_EPOCH - Duration::from_secs(1),
            include_x5c: false,
        };
        let err = sign_client_assertion(&binding, &input)
            .unwrap_err()
            .to_string();
        assert!(err.contains("clock is before 1970"), "{err}");
    }
}
