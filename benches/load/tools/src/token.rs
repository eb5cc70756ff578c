//! The token binding check: `Authorization: mtls_pop <jwt>` whose payload's `cnf."x5t#S256"`
//! equals the presented certificate's thumbprint. This is NOT a signature validator: the
//! upstream checks the binding only (the real authority's signature is popgate's concern).

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

/// The authorization scheme of a certificate-bound token (compared case-insensitively).
const SCHEME: &str = "mtls_pop";

/// base64url (no padding) of the SHA-256 of a certificate's DER: RFC 8705 `x5t#S256`.
pub fn thumbprint(cert_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// True when `authorization` is `mtls_pop <jwt>` and the JWT payload's `cnf."x5t#S256"` is
/// `expected_thumbprint`. Any malformed part simply fails the check.
pub fn binding_matches(authorization: &[u8], expected_thumbprint: &str) -> bool {
    let Ok(text) = std::str::from_utf8(authorization) else {
        return false;
    };
    let Some((scheme, jwt)) = text.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return false;
    }
    let mut parts = jwt.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    // JWTs use unpadded base64url; a padded payload is tolerated rather than misreported.
    let Ok(bytes) = URL_SAFE_NO_PAD
        .decode(payload)
        .or_else(|_| URL_SAFE.decode(payload))
    else {
        return false;
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    claims
        .get("cnf")
        .and_then(|cnf| cnf.get("x5t#S256"))
        .and_then(|v| v.as_str())
        .is_some_and(|v| v == expected_thumbprint)
}

/// Builds an unsigned JWT-shaped token bound to `thumbprint` (dummy header and signature): the
/// tests and the cert script's companion use it to make a token the upstream accepts.
pub fn bound_token(thumbprint: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"pop"}"#);
    let payload = serde_json::json!({ "cnf": { "x5t#S256": thumbprint } });
    let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    format!("{header}.{payload}.c2ln")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_token_matches_its_thumbprint_only() {
        let thumb = thumbprint(b"leaf-der");
        let token = bound_token(&thumb);
        assert!(binding_matches(
            format!("mtls_pop {token}").as_bytes(),
            &thumb
        ));
        assert!(binding_matches(
            format!("MTLS_POP {token}").as_bytes(),
            &thumb
        ));
        assert!(!binding_matches(
            format!("Bearer {token}").as_bytes(),
            &thumb
        ));
        assert!(!binding_matches(
            format!("mtls_pop {token}").as_bytes(),
            &thumbprint(b"other")
        ));
        assert!(!binding_matches(b"mtls_pop a.b", &thumb));
        assert!(!binding_matches(b"mtls_pop a.!!!.c", &thumb));
        assert!(!binding_matches(b"", &thumb));
    }

    #[test]
    fn thumbprint_is_unpadded_base64url_sha256() {
        // SHA-256("abc") = ba7816bf...; its base64url form is fixed.
        assert_eq!(
            thumbprint(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }
}
