//! private_key_jwt client assertions (RFC 7523 as ESTS applies it): RS256 or PS256 signed by a
//! registered certificate's key, named by `x5t#S256` or `x5c` in the header; `aud` the token
//! endpoint; `iss` = `sub` = client id; `exp` in the future but not far; `nbf` ≤ now; a `jti`
//! never seen before.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;

use super::errors::EstsError;
use crate::directory::RegisteredCertificate;
use crate::faults::lock;

/// MSAL makes 10-minute assertions; an hour leaves room for other clients while still refusing
/// the effectively-permanent assertions ESTS refuses.
pub const MAX_ASSERTION_LIFETIME_SECS: u64 = 3600;
/// Replay entries live until their assertion's `exp`; this caps memory under a load test that
/// makes assertions faster than they expire (at most an hour's worth are kept).
pub const MAX_REPLAY_ENTRIES: usize = 1_000_000;
/// An assertion longer than this is not something any client sends (an x5c chain of a few
/// certificates is a few KB).
const MAX_ASSERTION_LEN: usize = 32 * 1024;

/// `jti`s seen, with the `exp` after which they can be forgotten.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<String, u64>>,
}

impl ReplayCache {
    /// Records `client_id`'s `jti`; `false` when it was seen before (a replay) or the cache is
    /// full of unexpired entries.
    pub fn first_use(&self, client_id: &str, jti: &str, exp: u64, now: u64) -> bool {
        let mut seen = lock(&self.seen);
        if seen.len() >= MAX_REPLAY_ENTRIES {
            seen.retain(|_, e| *e >= now);
            if seen.len() >= MAX_REPLAY_ENTRIES {
                return false;
            }
        }
        let key = format!("{client_id}\u{0}{jti}");
        if seen.get(&key).is_some_and(|e| *e >= now) {
            return false;
        }
        seen.insert(key, exp);
        true
    }
}

/// The decoded, not yet verified parts of a compact JWS.
pub struct Jws<'a> {
    pub header: serde_json::Map<String, serde_json::Value>,
    pub claims: serde_json::Map<String, serde_json::Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn bad(description: impl Into<String>) -> EstsError {
    EstsError::invalid_client(700027, description)
}

fn json_part(
    part: &str,
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, EstsError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| bad(format!("Client assertion {what} is not base64url.")))?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(bad(format!(
            "Client assertion {what} is not a JSON object."
        ))),
    }
}

impl<'a> Jws<'a> {
    /// Splits and decodes `token`; says what is malformed.
    pub fn parse(token: &'a str) -> Result<Self, EstsError> {
        if token.len() > MAX_ASSERTION_LEN {
            return Err(bad("Client assertion is too long."));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(
                "Client assertion is not a JWT (three base64url parts separated by dots).",
            ));
        };
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| bad("Client assertion signature is not base64url."))?;
        Ok(Self {
            header: json_part(h, "header")?,
            claims: json_part(c, "payload")?,
            signing_input: &token[..h.len() + 1 + c.len()],
            signature,
        })
    }

    /// A string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(|v| v.as_str())
    }
}

/// What the assertion must say.
pub struct Expected<'a> {
    pub client_id: &'a str,
    /// `https://{host}/{tenant}/oauth2/v2.0/token`.
    pub audience: &'a str,
    pub registered: &'a [RegisteredCertificate],
    pub now: u64,
}

/// Verifies a private_key_jwt assertion completely (signature, claims, replay).
pub fn verify_private_key_jwt(
    jws: &Jws<'_>,
    expected: &Expected<'_>,
    replay: &ReplayCache,
) -> Result<(), EstsError> {
    let cert = signing_certificate(jws, expected.registered)?;
    verify_signature(jws, &cert.der)?;
    check_claims_and_replay(jws, expected, replay)
}

/// How a subject-name + issuer ("SNI") app's certificate is trusted: its CN, and who may have
/// issued it.
pub struct TrustedSubject<'a> {
    /// The CN the app registration names.
    pub common_name: &'a str,
    /// Whether a certificate was signed by a trusted CA.
    pub issued_by_trusted_ca: &'a dyn Fn(&[u8]) -> bool,
}

/// Verifies the assertion of an app registered by subject name + issuer: no thumbprint is
/// registered, so the certificate must travel in `x5c` (leaf first; an array as RFC 7515 says,
/// or the single string MSAL.NET sends), chain to a trusted CA, carry the registered CN, be
/// within its validity period and verify the signature; then the usual claims and replay checks.
pub fn verify_subject_name_jwt(
    jws: &Jws<'_>,
    expected: &Expected<'_>,
    trusted: &TrustedSubject<'_>,
    replay: &ReplayCache,
) -> Result<(), EstsError> {
    let chain = x5c_chain(jws)?;
    let Some(leaf) = chain.first() else {
        let named = jws
            .header
            .get("x5t#S256")
            .and_then(|v| v.as_str())
            .unwrap_or("(none)");
        return Err(bad(format!(
            "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{named}'] Application '{}' is registered for subject name and issuer authentication: send the certificate in the assertion's 'x5c' header.",
            expected.client_id
        )));
    };
    let leaf_x5t = crate::thumbprint::x5t_s256(leaf);
    if let Some(named) = jws.header.get("x5t#S256")
        && named.as_str() != Some(leaf_x5t.as_str())
    {
        return Err(bad(
            "Client assertion header 'x5t#S256' does not name the 'x5c' leaf certificate.",
        ));
    }
    let issued_by_trusted = (trusted.issued_by_trusted_ca)(leaf)
        || chain[1..].iter().any(|ca| {
            crate::cert_check::signed_by(leaf, spki_der(ca)) && (trusted.issued_by_trusted_ca)(ca)
        });
    if !issued_by_trusted {
        return Err(bad(format!(
            "The certificate in 'x5c' (thumbprint '{leaf_x5t}') does not chain to an issuer trusted for application '{}'.",
            expected.client_id
        )));
    }
    let summary = crate::cert_check::CertSummary::parse(leaf)
        .ok_or_else(|| bad("The certificate in 'x5c' cannot be parsed."))?;
    if summary.common_name.as_deref() != Some(trusted.common_name) {
        return Err(bad(format!(
            "The subject name of the certificate in 'x5c' (CN={}) is not the one registered on application '{}'.",
            summary.common_name.as_deref().unwrap_or("(none)"),
            expected.client_id
        )));
    }
    if !summary.valid_at(i64::try_from(expected.now).unwrap_or(i64::MAX)) {
        return Err(bad("The certificate in 'x5c' is expired or not yet valid."));
    }
    verify_signature(jws, leaf)?;
    check_claims_and_replay(jws, expected, replay)
}

/// The DER certificates of the `x5c` header, leaf first; empty when there is none.
fn x5c_chain(jws: &Jws<'_>) -> Result<Vec<Vec<u8>>, EstsError> {
    let decode = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|b64| STANDARD.decode(b64).ok())
            .ok_or_else(|| bad("Client assertion header 'x5c' is not standard base64."))
    };
    match jws.header.get("x5c") {
        None => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) if !items.is_empty() => {
            items.iter().map(decode).collect()
        }
        Some(v @ serde_json::Value::String(_)) => Ok(vec![decode(v)?]),
        Some(_) => Err(bad(
            "Client assertion header 'x5c' is not an array of certificates.",
        )),
    }
}

/// The SubjectPublicKeyInfo DER of a certificate (empty when it does not parse: then nothing
/// verifies under it).
fn spki_der(cert_der: &[u8]) -> Vec<u8> {
    x509_parser::parse_x509_certificate(cert_der)
        .map(|(_, c)| c.tbs_certificate.subject_pki.raw.to_vec())
        .unwrap_or_default()
}

fn check_claims_and_replay(
    jws: &Jws<'_>,
    expected: &Expected<'_>,
    replay: &ReplayCache,
) -> Result<(), EstsError> {
    check_claims(jws, expected)?;
    let jti = jws
        .claim_str("jti")
        .filter(|j| !j.is_empty())
        .ok_or_else(|| bad("Client assertion has no 'jti' claim."))?;
    let exp = jws.claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
    if !replay.first_use(expected.client_id, jti, exp, expected.now) {
        return Err(bad(format!(
            "The client assertion with jti '{jti}' has already been used (replay)."
        )));
    }
    Ok(())
}

/// The registered certificate the header names, by `x5t#S256` or by the leaf of `x5c`.
fn signing_certificate<'r>(
    jws: &Jws<'_>,
    registered: &'r [RegisteredCertificate],
) -> Result<&'r RegisteredCertificate, EstsError> {
    let thumbprint = if let Some(x5t) = jws.header.get("x5t#S256") {
        x5t.as_str()
            .ok_or_else(|| bad("Client assertion header 'x5t#S256' is not a string."))?
            .to_string()
    } else if let Some(x5c) = jws.header.get("x5c") {
        let leaf = x5c
            .as_array()
            .and_then(|a| a.first())
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("Client assertion header 'x5c' is not an array of certificates."))?;
        let der = STANDARD
            .decode(leaf)
            .map_err(|_| bad("Client assertion header 'x5c' is not standard base64."))?;
        crate::thumbprint::x5t_s256(&der)
    } else {
        return Err(bad(
            "Client assertion header names no certificate: 'x5t#S256' or 'x5c' is required.",
        ));
    };
    registered
        .iter()
        .find(|c| c.x5t_s256 == thumbprint)
        .ok_or_else(|| {
            bad(format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}']"
            ))
        })
}

fn verify_signature(jws: &Jws<'_>, cert_der: &[u8]) -> Result<(), EstsError> {
    let algorithm: &dyn signature::VerificationAlgorithm =
        match jws.header.get("alg").and_then(|a| a.as_str()) {
            Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
            Some(other) => {
                return Err(bad(format!(
                    "Client assertion algorithm '{other}' is not supported; use RS256 or PS256."
                )));
            }
            None => return Err(bad("Client assertion header has no 'alg'.")),
        };
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|_| bad("The registered certificate cannot be parsed."))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_PKCS1_RSAENCRYPTION {
        return Err(bad(
            "The registered certificate's key is not RSA; RS256/PS256 assertions need an RSA key.",
        ));
    }
    UnparsedPublicKey::new(algorithm, spki.subject_public_key.data.as_ref())
        .verify(jws.signing_input.as_bytes(), &jws.signature)
        .map_err(|_| bad("Client assertion contains an invalid signature."))
}

fn check_claims(jws: &Jws<'_>, expected: &Expected<'_>) -> Result<(), EstsError> {
    match jws.claim_str("aud") {
        Some(aud) if aud == expected.audience => {}
        Some(aud) => {
            return Err(bad(format!(
                "Client assertion audience claim does not match Realm issuer. Expected '{}', got '{aud}'.",
                expected.audience
            )));
        }
        None => return Err(bad("Client assertion has no string 'aud' claim.")),
    }
    for claim in ["iss", "sub"] {
        if jws.claim_str(claim) != Some(expected.client_id) {
            return Err(bad(format!(
                "Client assertion '{claim}' claim must be the client id '{}'.",
                expected.client_id
            )));
        }
    }
    let time_range = |detail: String| {
        EstsError::invalid_client(
            700024,
            format!("Client assertion is not within its valid time range. {detail}"),
        )
    };
    let exp = jws
        .claims
        .get("exp")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("Client assertion has no numeric 'exp' claim."))?;
    if exp <= expected.now {
        return Err(time_range(format!(
            "Current time: {}, assertion expiry time: {exp}.",
            expected.now
        )));
    }
    if exp - expected.now > MAX_ASSERTION_LIFETIME_SECS {
        return Err(time_range(format!(
            "The assertion expires more than {MAX_ASSERTION_LIFETIME_SECS} seconds from now."
        )));
    }
    if let Some(nbf) = jws.claims.get("nbf") {
        let nbf = nbf
            .as_u64()
            .ok_or_else(|| bad("Client assertion 'nbf' claim is not a number."))?;
        if nbf > expected.now {
            return Err(time_range(format!(
                "Current time: {}, assertion valid from: {nbf}.",
                expected.now
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_refuses_a_second_use_until_expiry() {
        let cache = ReplayCache::default();
        assert!(cache.first_use("c", "j", 100, 50));
        assert!(!cache.first_use("c", "j", 100, 60));
        assert!(cache.first_use("other", "j", 100, 60));
        // After exp the jti may be forgotten; the assertion itself is expired by then anyway.
        assert!(cache.first_use("c", "j", 200, 101));
    }

    #[test]
    fn malformed_assertions_are_named() {
        assert!(
            Jws::parse("a.b")
                .err()
                .unwrap()
                .description
                .contains("not a JWT")
        );
        assert!(
            Jws::parse("!!.e30.e30")
                .err()
                .unwrap()
                .description
                .contains("header is not base64url")
        );
        let header = URL_SAFE_NO_PAD.encode("[1]");
        assert!(
            Jws::parse(&format!("{header}.e30.e30"))
                .err()
                .unwrap()
                .description
                .contains("header is not a JSON object")
        );
    }
}
