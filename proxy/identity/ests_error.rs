//! The error body Entra ID's token endpoint (ESTS) and IMDS return, parsed tolerantly: whatever the
//! body is (JSON in ESTS shape, other JSON, plain text, nothing), the result is an [`EstsError`]
//! that names the `error`, the AADSTS code and the correlation id.

use std::fmt;

use http::StatusCode;
use serde_json::Value;

use crate::identity::response_json::{MAX_RESPONSE_BYTES, sanitized};

/// Longest `error_description` (or plain-text body) kept. ESTS descriptions run to a few hundred
/// characters; keeping more only floods logs and the 503 body with text a peer controls.
pub const MAX_ERROR_DESCRIPTION_CHARS: usize = 512;

/// Longest identifier (`error`, ids, suberror) kept, for the same reason.
pub const MAX_ERROR_FIELD_CHARS: usize = 128;

/// Longest `claims` challenge kept; it is JSON that a caller may need verbatim, so it gets more room.
pub const MAX_CLAIMS_CHARS: usize = 2048;

/// The hint added to IMDS's "Attestation Token is missing" refusal.
pub const ATTESTATION_HINT: &str = "this IMDS requires a key attestation token (Windows Credential \
Guard / MAA), which popgate's software key cannot provide; use an attestation-token hook, IMDS v1 \
Bearer, or a certificate app";

/// A parsed ESTS / IMDS error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstsError {
    /// The HTTP status the error came with.
    pub http_status: StatusCode,
    /// The OAuth `error` (`invalid_client`, …); `http_<status>` when the body had none.
    pub error: String,
    /// `error_codes[]`, in order.
    pub codes: Vec<u32>,
    /// The AADSTS code: the `AADSTSnnnn:` prefix of the description, else `codes[0]`.
    pub aadsts: Option<u32>,
    /// `error_description`, or the plain-text body, truncated to [`MAX_ERROR_DESCRIPTION_CHARS`].
    pub description: String,
    /// `correlation_id`: the id Microsoft support asks for.
    pub correlation_id: Option<String>,
    /// `trace_id`.
    pub trace_id: Option<String>,
    /// `suberror` (for example `bad_token`).
    pub suberror: Option<String>,
    /// `timestamp`, as ESTS wrote it.
    pub timestamp: Option<String>,
    /// A claims challenge, when ESTS asks for one.
    pub claims: Option<String>,
}

impl EstsError {
    /// Parses an error body. Never fails: a body that is not ESTS JSON becomes an error named
    /// `http_<status>` whose description is the (truncated) body text.
    pub fn parse(http_status: StatusCode, body: &[u8]) -> Self {
        let json = if body.len() <= MAX_RESPONSE_BYTES {
            serde_json::from_slice::<Value>(body).ok()
        } else {
            None
        };
        match json {
            Some(Value::Object(map)) => Self::from_json(http_status, &map),
            _ => Self::from_text(http_status, body),
        }
    }

    fn from_text(http_status: StatusCode, body: &[u8]) -> Self {
        let head = &body[..body.len().min(MAX_ERROR_DESCRIPTION_CHARS * 4)];
        let text = String::from_utf8_lossy(head);
        Self {
            http_status,
            error: status_error(http_status),
            codes: Vec::new(),
            aadsts: None,
            description: sanitized(text.trim(), MAX_ERROR_DESCRIPTION_CHARS),
            correlation_id: None,
            trace_id: None,
            suberror: None,
            timestamp: None,
            claims: None,
        }
    }

    fn from_json(http_status: StatusCode, map: &serde_json::Map<String, Value>) -> Self {
        let text = |field: &str, max: usize| -> Option<String> {
            match map.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(sanitized(s.trim(), max)),
                _ => None,
            }
        };
        let codes: Vec<u32> = match map.get("error_codes") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let description = text("error_description", MAX_ERROR_DESCRIPTION_CHARS)
            .or_else(|| text("message", MAX_ERROR_DESCRIPTION_CHARS))
            .unwrap_or_default();
        let aadsts = aadsts_prefix(&description).or_else(|| codes.first().copied());
        Self {
            http_status,
            error: text("error", MAX_ERROR_FIELD_CHARS)
                .unwrap_or_else(|| status_error(http_status)),
            codes,
            aadsts,
            description,
            correlation_id: text("correlation_id", MAX_ERROR_FIELD_CHARS),
            trace_id: text("trace_id", MAX_ERROR_FIELD_CHARS),
            suberror: text("suberror", MAX_ERROR_FIELD_CHARS),
            timestamp: text("timestamp", MAX_ERROR_FIELD_CHARS),
            claims: text("claims", MAX_CLAIMS_CHARS),
        }
    }

    /// `invalid_client`: for an IMDSv2 identity this means the binding certificate is no longer
    /// accepted, so the caller drops it, mints a new one and retries once.
    pub fn is_invalid_client(&self) -> bool {
        self.error.eq_ignore_ascii_case("invalid_client")
    }

    /// IMDS refused `issuecredential` because no attestation token was sent.
    pub fn is_attestation_missing(&self) -> bool {
        self.error.eq_ignore_ascii_case("invalid_request")
            && self
                .description
                .to_ascii_lowercase()
                .contains("attestation token is missing")
    }

    /// Advice for the operator, when the error is one popgate knows how to explain.
    pub fn hint(&self) -> Option<&'static str> {
        self.is_attestation_missing().then_some(ATTESTATION_HINT)
    }
}

impl fmt::Display for EstsError {
    /// `invalid_client AADSTS7000218 (HTTP 400, correlation id 3d48…): description [hint: …]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)?;
        if let Some(code) = self.aadsts {
            write!(f, " AADSTS{code}")?;
        }
        write!(f, " (HTTP {}", self.http_status.as_u16())?;
        if let Some(id) = &self.correlation_id {
            write!(f, ", correlation id {id}")?;
        }
        f.write_str(")")?;
        if !self.description.is_empty() {
            write!(f, ": {}", self.description)?;
        }
        if let Some(hint) = self.hint() {
            write!(f, " [hint: {hint}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for EstsError {}

fn status_error(status: StatusCode) -> String {
    format!("http_{}", status.as_u16())
}

/// The number in a description that starts `AADSTSnnnn:`.
fn aadsts_prefix(description: &str) -> Option<u32> {
    let rest = description.strip_prefix("AADSTS")?;
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if digits_end == 0 || !rest[digits_end..].starts_with(':') {
        return None;
    }
    rest[..digits_end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aadsts_comes_from_the_description_prefix_first() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS700027: bad","error_codes":[1,2],"correlation_id":"c1","trace_id":"t1","suberror":"s","claims":"{}","timestamp":"ts"}"#;
        let e = EstsError::parse(StatusCode::UNAUTHORIZED, body);
        assert_eq!(e.aadsts, Some(700027));
        assert_eq!(e.codes, vec![1, 2]);
        assert_eq!(e.suberror.as_deref(), Some("s"));
        assert_eq!(e.claims.as_deref(), Some("{}"));
        assert!(e.is_invalid_client());
        assert_eq!(
            e.to_string(),
            "invalid_client AADSTS700027 (HTTP 401, correlation id c1): AADSTS700027: bad"
        );
    }

    #[test]
    fn aadsts_falls_back_to_the_first_code() {
        let e = EstsError::parse(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"error":"Server overload","error_description":"429: Too many","error_codes":[90010]}"#,
        );
        assert_eq!(e.aadsts, Some(90010));
        assert!(!e.is_invalid_client());
    }

    #[test]
    fn plain_text_and_empty_bodies_still_make_an_error() {
        let e = EstsError::parse(StatusCode::TOO_MANY_REQUESTS, b"Too many requests error");
        assert_eq!(e.error, "http_429");
        assert_eq!(e.description, "Too many requests error");
        assert_eq!(
            e.to_string(),
            "http_429 (HTTP 429): Too many requests error"
        );
        let e = EstsError::parse(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(e.to_string(), "http_502 (HTTP 502)");
        let e = EstsError::parse(StatusCode::BAD_REQUEST, b"[1,2]");
        assert_eq!(e.error, "http_400");
    }

    #[test]
    fn huge_bodies_are_truncated() {
        let body = format!(
            r#"{{"error":"x","error_description":"{}"}}"#,
            "a".repeat(10_000)
        );
        let e = EstsError::parse(StatusCode::BAD_REQUEST, body.as_bytes());
        assert!(e.description.chars().count() <= MAX_ERROR_DESCRIPTION_CHARS + 1);
        let text = vec![b'z'; 1_000_000];
        let e = EstsError::parse(StatusCode::BAD_REQUEST, &text);
        assert!(e.description.chars().count() <= MAX_ERROR_DESCRIPTION_CHARS + 1);
        assert!(e.to_string().len() < 2 * MAX_ERROR_DESCRIPTION_CHARS);
    }

    #[test]
    fn newlines_in_descriptions_cannot_forge_log_lines() {
        let e = EstsError::parse(
            StatusCode::BAD_REQUEST,
            br#"{"error":"x","error_description":"AADSTS1: a\r\nlevel=INFO forged"}"#,
        );
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn attestation_missing_gets_a_hint() {
        let e = EstsError::parse(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_request","error_description":"Attestation Token is missing / empty in the issue credential request"}"#,
        );
        assert!(e.is_attestation_missing());
        let shown = e.to_string();
        assert!(
            shown.contains("Attestation Token is missing / empty"),
            "{shown}"
        );
        assert!(shown.contains("[hint: "), "{shown}");
    }

    #[test]
    fn prefix_parsing_is_strict() {
        assert_eq!(aadsts_prefix("AADSTS50011: x"), Some(50011));
        assert_eq!(aadsts_prefix("AADSTS: x"), None);
        assert_eq!(aadsts_prefix("AADSTS123 x"), None);
        assert_eq!(aadsts_prefix("xAADSTS1: x"), None);
    }
}
