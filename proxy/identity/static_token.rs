//! The `static` identity: bring your own token (a file) and, for PoP, the certificate it is bound
//! to. Lets the whole data path work without the credential engine.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::certs::binding::BindingCert;
use crate::certs::bounded_read::{BoundedReadError, read_bounded};
use crate::identity::token::{AccessToken, Token, TokenType};

/// Largest token file accepted. Entra tokens are a few KiB; anything far bigger is the wrong file.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Expiry given to a token that is not a JWT and so carries none we can read (9999-12-31): it is
/// used until the file is replaced.
const OPAQUE_TOKEN_EXPIRY_SECS: u64 = 253_402_300_799;

/// Why a static token cannot be used. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum StaticTokenError {
    /// Cannot read token file `path`: `source`.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Token file `path` is larger than `max` bytes.
    #[error("token file {path} is larger than {max} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// Token file `path` is empty.
    #[error("token file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Token file `path` holds more than one line.
    #[error("token file {path} holds more than one line")]
    MultiLine {
        /// The file.
        path: PathBuf,
    },
    /// Token file `path` holds characters a token cannot contain (non-ASCII, spaces or control characters).
    #[error(
        "token file {path} holds characters a token cannot contain (non-ASCII, spaces or control characters)"
    )]
    BadCharacters {
        /// The file.
        path: PathBuf,
    },
    /// Token file `path` looks like a JWT but its `part` is not valid base64url JSON.
    #[error("token file {path} looks like a JWT but its {part} is not valid base64url JSON")]
    BadJwt {
        /// The file.
        path: PathBuf,
        /// The JWT part that is not valid (`header` or `payload`).
        part: &'static str,
    },
    /// The token in `path` expired at `expired_at`.
    #[error("the token in {path} expired at {expired_at}")]
    Expired {
        /// The file.
        path: PathBuf,
        /// When the token expired.
        expired_at: String,
    },
    /// The token in `path` is mtls_pop but no certificate is configured for it.
    #[error("the token in {path} is mtls_pop but no certificate is configured for it")]
    PopWithoutCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The token in `path` is mtls_pop but is not a JWT, so its certificate binding cannot be checked.
    #[error(
        "the token in {path} is mtls_pop but is not a JWT, so its certificate binding cannot be checked"
    )]
    PopNotJwt {
        /// The file.
        path: PathBuf,
    },
    /// The token in `path` is mtls_pop but has no cnf.x5t#S256 claim.
    #[error("the token in {path} is mtls_pop but has no cnf.x5t#S256 claim")]
    PopWithoutCnf {
        /// The file.
        path: PathBuf,
    },
    /// The token in `path` is bound to certificate x5t#S256=`token_x5t`, but the configured certificate is x5t#S256=`cert_x5t`.
    #[error(
        "the token in {path} is bound to certificate x5t#S256={token_x5t}, but the configured certificate is x5t#S256={cert_x5t}"
    )]
    ThumbprintMismatch {
        /// The file.
        path: PathBuf,
        /// The token's `cnf.x5t#S256`.
        token_x5t: String,
        /// The configured certificate's `x5t#S256`.
        cert_x5t: String,
    },
}

/// The claims read from a JWT payload.
#[derive(serde::Deserialize)]
struct Claims {
    exp: Option<f64>,
    cnf: Option<Confirmation>,
}

#[derive(serde::Deserialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
}

/// Loads a static token. See the module docs; errors name the file, never the token.
pub fn load(
    token_file: &Path,
    binding: Option<BindingCert>,
    token_type: TokenType,
) -> Result<Token, StaticTokenError> {
    let path = || token_file.to_path_buf();
    let secret = read_token(token_file)?;
    let claims =
        jwt_claims(&secret).map_err(|part| StaticTokenError::BadJwt { path: path(), part })?;

    let expires_at = match claims.as_ref().and_then(|c| c.exp) {
        Some(exp) if exp.is_finite() && exp > 0.0 => {
            SystemTime::UNIX_EPOCH + Duration::from_secs(exp as u64)
        }
        Some(_) => SystemTime::UNIX_EPOCH,
        None => SystemTime::UNIX_EPOCH + Duration::from_secs(OPAQUE_TOKEN_EXPIRY_SECS),
    };
    if expires_at <= SystemTime::now() {
        return Err(StaticTokenError::Expired {
            path: path(),
            expired_at: httpdate::fmt_http_date(expires_at),
        });
    }

    if token_type == TokenType::MtlsPop {
        let cert = binding
            .as_ref()
            .ok_or_else(|| StaticTokenError::PopWithoutCertificate { path: path() })?;
        let claims = claims.ok_or_else(|| StaticTokenError::PopNotJwt { path: path() })?;
        let token_x5t = claims
            .cnf
            .and_then(|c| c.x5t_s256)
            .ok_or_else(|| StaticTokenError::PopWithoutCnf { path: path() })?;
        if token_x5t != cert.x5t_s256() {
            return Err(StaticTokenError::ThumbprintMismatch {
                path: path(),
                token_x5t,
                cert_x5t: cert.x5t_s256().to_string(),
            });
        }
    }

    // Move the secret into the token without leaving an unzeroized copy behind.
    let owned = String::from(secret.as_str());
    drop(secret);
    Ok(Token {
        access_token: AccessToken::new(token_type, owned),
        token_type,
        expires_at,
        refresh_in: None,
        binding,
    })
}

/// Reads, trims and checks the file; the buffers are zeroized on drop.
fn read_token(token_file: &Path) -> Result<Zeroizing<String>, StaticTokenError> {
    let path = || token_file.to_path_buf();
    let raw = read_bounded(token_file, MAX_TOKEN_FILE_BYTES).map_err(|e| match e {
        BoundedReadError::Io(source) => StaticTokenError::Read {
            path: path(),
            source,
        },
        BoundedReadError::TooLarge { max } => StaticTokenError::TooLarge { path: path(), max },
    })?;
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() {
        return Err(StaticTokenError::Empty { path: path() });
    }
    if trimmed.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return Err(StaticTokenError::MultiLine { path: path() });
    }
    if !trimmed.iter().all(|b| b.is_ascii_graphic()) {
        return Err(StaticTokenError::BadCharacters { path: path() });
    }
    let mut secret = Zeroizing::new(String::with_capacity(trimmed.len()));
    // Every byte is ASCII (checked above), so each is one char.
    secret.extend(trimmed.iter().map(|b| char::from(*b)));
    Ok(secret)
}

/// `Ok(None)`: not a JWT (an opaque token). `Ok(Some)`: a JWT's claims. `Err(part)`: three
/// dot-separated parts whose header decodes as JSON, but whose payload does not.
fn jwt_claims(token: &str) -> Result<Option<Claims>, &'static str> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let Ok(header) = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')) else {
        return Ok(None);
    };
    if serde_json::from_slice::<serde_json::Value>(&header).map_or(true, |v| !v.is_object()) {
        return Ok(None);
    }
    let payload = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| "payload")?,
    );
    serde_json::from_slice::<Claims>(&payload)
        .map(Some)
        .map_err(|_| "payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{body}.c2lnbmF0dXJl")
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn binding() -> BindingCert {
        crate::certs::binding::test_binding("client")
    }

    fn file(dir: &tempfile::TempDir, contents: &str) -> PathBuf {
        let p = dir.path().join("token");
        std::fs::write(&p, contents).unwrap();
        p
    }

    #[test]
    fn bearer_jwt_reads_exp_and_trims() {
        let dir = tempfile::tempdir().unwrap();
        let exp = now_secs() + 3600;
        let p = file(
            &dir,
            &format!("  {}\n", jwt(serde_json::json!({ "exp": exp }))),
        );
        let token = load(&p, None, TokenType::Bearer).unwrap();
        assert_eq!(
            token.expires_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(exp)
        );
        assert!(!token.access_token.expose_secret().ends_with('\n'));
        assert!(token.binding.is_none());
    }

    #[test]
    fn opaque_bearer_gets_far_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "opaque-token-value\n");
        let token = load(&p, None, TokenType::Bearer).unwrap();
        assert_eq!(token.access_token.expose_secret(), "opaque-token-value");
        assert!(token.expires_at > SystemTime::now() + Duration::from_secs(3600 * 24 * 365));
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_not_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("", "is empty"),
            ("   \n\t", "is empty"),
            ("abc\ndef", "more than one line"),
            ("abc\r\ndef", "more than one line"),
            ("abc def", "characters a token cannot contain"),
            ("tökén", "characters a token cannot contain"),
            ("abc\u{7}", "characters a token cannot contain"),
            ("eyJhbGciOiJub25lIn0.!!!.sig", "payload is not valid"),
        ];
        for (contents, expected) in cases {
            let p = file(&dir, contents);
            let err = load(&p, None, TokenType::Bearer).unwrap_err().to_string();
            assert!(err.contains(expected), "{contents:?}: {err}");
            assert!(err.contains(&p.display().to_string()), "{err}");
            if contents.trim().len() > 3 {
                assert!(!err.contains(contents.trim()), "token leaked: {err}");
            }
        }
        let err = load(&dir.path().join("missing"), None, TokenType::Bearer).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let big = "a".repeat(MAX_TOKEN_FILE_BYTES as usize + 1);
        let err = load(&file(&dir, &big), None, TokenType::Bearer).unwrap_err();
        assert!(matches!(err, StaticTokenError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn expired_jwt_is_refused_with_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, &jwt(serde_json::json!({ "exp": 1_000_000_000u64 })));
        let err = load(&p, None, TokenType::Bearer).unwrap_err().to_string();
        assert!(
            err.contains("expired at Sun, 09 Sep 2001 01:46:40 GMT"),
            "{err}"
        );
        assert!(err.contains(&p.display().to_string()), "{err}");
    }

    #[test]
    fn pop_requires_matching_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let cert = binding();
        let exp = now_secs() + 3600;

        let good = file(
            &dir,
            &jwt(serde_json::json!({ "exp": exp, "cnf": { "x5t#S256": cert.x5t_s256() } })),
        );
        let token = load(&good, Some(cert.clone()), TokenType::MtlsPop).unwrap();
        assert_eq!(token.binding.as_ref(), Some(&cert));

        let err = load(&good, None, TokenType::MtlsPop).unwrap_err();
        assert!(
            matches!(err, StaticTokenError::PopWithoutCertificate { .. }),
            "{err}"
        );

        let other = file(
            &dir,
            &jwt(serde_json::json!({ "exp": exp, "cnf": { "x5t#S256": "AAAA" } })),
        );
        let secret = std::fs::read_to_string(&other).unwrap();
        let err = load(&other, Some(cert.clone()), TokenType::MtlsPop)
            .unwrap_err()
            .to_string();
        assert!(err.contains("x5t#S256=AAAA"), "{err}");
        assert!(err.contains(cert.x5t_s256()), "{err}");
        assert!(!err.contains(&secret), "{err}");

        let no_cnf = file(&dir, &jwt(serde_json::json!({ "exp": exp })));
        let err = load(&no_cnf, Some(cert.clone()), TokenType::MtlsPop).unwrap_err();
        assert!(
            matches!(err, StaticTokenError::PopWithoutCnf { .. }),
            "{err}"
        );

        let opaque = file(&dir, "opaque");
        let err = load(&opaque, Some(cert), TokenType::MtlsPop).unwrap_err();
        assert!(matches!(err, StaticTokenError::PopNotJwt { .. }), "{err}");
    }

    #[test]
    fn bearer_may_carry_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "opaque");
        let cert = binding();
        let token = load(&p, Some(cert.clone()), TokenType::Bearer).unwrap();
        assert_eq!(token.binding, Some(cert));
    }
}
