//! The authority's token-signing key: RS256 JWTs out, verification back in, and the JWKS document.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::PublicKeyData as _;

use crate::claims::Claims;

/// Why a token this authority is shown does not verify. Never carries the token itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the token is not a well-formed JWT signed by this authority: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's audience is not {expected}")]
    WrongAudience { expected: String },
}

/// At most this many issued signatures are recorded: tests issue tens; a bound keeps a long
/// `popgate dev` session with recording on from growing without end.
pub const MAX_RECORDED_SIGNATURES: usize = 10_000;

pub struct SigningKeys {
    /// Signature segments of issued JWTs and received client assertions, when recording is on (tests grep logs for them).
    issued: std::sync::Mutex<Option<Vec<String>>>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    modulus_b64: String,
    exponent_b64: String,
}

impl SigningKeys {
    /// A fresh RSA-2048 signing key.
    pub fn generate() -> Result<Self, String> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(|e| format!("cannot generate the signing key: {e}"))?;
        let encoding = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())
            .map_err(|e| format!("cannot load the signing key: {e}"))?;
        let spki_der = key.subject_public_key_info();
        let (modulus, exponent) = rsa_components(&spki_der)?;
        let decoding = DecodingKey::from_rsa_raw_components(&modulus, &exponent);
        let kid = crate::thumbprint::x5t_s256(&spki_der);
        Ok(Self {
            issued: std::sync::Mutex::new(None),
            encoding,
            decoding,
            kid,
            modulus_b64: URL_SAFE_NO_PAD.encode(&modulus),
            exponent_b64: URL_SAFE_NO_PAD.encode(&exponent),
        })
    }

    /// The key id stamped into every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let jwt = jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| format!("cannot sign the token: {e}"))?;
        self.note_secret(&jwt);
        Ok(jwt)
    }

    fn issued(&self) -> std::sync::MutexGuard<'_, Option<Vec<String>>> {
        // A panic while holding this lock leaves a plain Vec behind; keep using it.
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `jwt`'s signature segment when recording is on: every token signed here, and every
    /// client assertion the token endpoint receives.
    pub fn note_secret(&self, jwt: &str) {
        let mut issued = self.issued();
        if let Some(list) = issued.as_mut()
            && list.len() < MAX_RECORDED_SIGNATURES
            && let Some((_, signature)) = jwt.rsplit_once('.')
        {
            list.push(signature.to_string());
        }
    }

    /// Starts recording the signature segment of every JWT signed from now on and of every
    /// client assertion received (test use: a signature is unique per token, so finding it in a
    /// log means the token leaked).
    pub fn record_issued(&self) {
        self.issued().get_or_insert_with(Vec::new);
    }

    /// The recorded signature segments (empty unless [`SigningKeys::record_issued`] was called).
    pub fn issued_signatures(&self) -> Vec<String> {
        self.issued().clone().unwrap_or_default()
    }

    /// Verifies signature, `exp`, `nbf` and that `aud` equals `audience`.
    pub fn verify(&self, jwt: &str, audience: &str) -> Result<Claims, VerifyError> {
        let mut validation = Validation::new(Algorithm::RS256);
        // Tokens live seconds in some tests: no grace period, as strict as a resource can be.
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        match jsonwebtoken::decode::<Claims>(jwt, &self.decoding, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => VerifyError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
                jsonwebtoken::errors::ErrorKind::InvalidAudience => VerifyError::WrongAudience {
                    expected: audience.to_string(),
                },
                other => VerifyError::Invalid(format!("{other:?}")),
            }),
        }
    }

    /// The JWKS document served at `/{tenant}/discovery/v2.0/keys`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": self.kid,
                "n": self.modulus_b64,
                "e": self.exponent_b64,
            }]
        })
    }
}

/// Parses an RSA SPKI into (modulus, exponent) big-endian bytes without leading zeros.
fn rsa_components(spki_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| format!("bad public key: {e}"))?;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok((
            strip_leading_zeros(rsa.modulus).to_vec(),
            strip_leading_zeros(rsa.exponent).to_vec(),
        )),
        Ok(_) => Err("the signing key is not RSA".into()),
        Err(e) => Err(format!("bad public key: {e}")),
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(aud: &str, exp_in: i64) -> Claims {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Claims {
            iss: "https://login.microsoftonline.com/t/v2.0".into(),
            aud: aud.into(),
            sub: "s".into(),
            tid: "t".into(),
            oid: "o".into(),
            appid: "a".into(),
            iat: now,
            nbf: now - 1,
            exp: now.checked_add_signed(exp_in).unwrap(),
            uti: "u".into(),
            ver: "2.0".into(),
            cnf: None,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let keys = SigningKeys::generate().unwrap();
        let jwt = keys
            .sign(&claims("https://graph.microsoft.com", 600))
            .unwrap();
        assert_eq!(
            keys.verify(&jwt, "https://graph.microsoft.com")
                .unwrap()
                .aud,
            "https://graph.microsoft.com"
        );
        assert!(matches!(
            keys.verify(&jwt, "https://vault.azure.net"),
            Err(VerifyError::WrongAudience { .. })
        ));
        let expired = keys
            .sign(&claims("https://graph.microsoft.com", -10))
            .unwrap();
        assert_eq!(
            keys.verify(&expired, "https://graph.microsoft.com"),
            Err(VerifyError::Expired)
        );
        let other = SigningKeys::generate().unwrap();
        assert!(matches!(
            other.verify(&jwt, "https://graph.microsoft.com"),
            Err(VerifyError::Invalid(_))
        ));
        let mut tampered = jwt.clone();
        tampered.pop();
        tampered.push(if jwt.ends_with('A') { 'B' } else { 'A' });
        assert!(
            keys.verify(&tampered, "https://graph.microsoft.com")
                .is_err()
        );
        assert_eq!(keys.jwks()["keys"][0]["kid"], keys.kid());
    }
}
