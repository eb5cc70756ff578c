//! The Bearer token answer of IMDS v1 and App Service (protocol.md §4): every field a string,
//! `expires_on` absolute or relative seconds or ISO-8601, `expires_in` as a fallback.

use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::identity::ests_error::EstsError;
use crate::identity::expiry::{self, parse_expires_on};
use crate::identity::response_json::{
    ResponseError, kind, parse_object, quote, take_optional_string, take_optional_u64,
};
use crate::identity::token::{Token, TokenType};
use crate::identity::token_response::{MAX_EXPIRES_IN, take_access_token};

/// A managed identity's Bearer token and what the response said about it.
#[derive(Debug)]
pub struct ManagedIdentityToken {
    /// The Bearer token.
    pub token: Token,
    /// `resource`, when present.
    pub resource: Option<String>,
    /// `client_id` of the identity that answered, when present.
    pub client_id: Option<String>,
}

/// Parses an IMDS v1 / App Service token response. `what` names the source in errors
/// (`IMDS v1 token response`, `App Service token response`). A token already expired at `now`
/// is refused: injecting an expired token is worse than failing.
pub(crate) fn parse_managed_identity_token(
    what: &'static str,
    status: StatusCode,
    body: &[u8],
    now: SystemTime,
) -> Result<ManagedIdentityToken, ResponseError> {
    if status != StatusCode::OK {
        return Err(ResponseError::rejected(
            what,
            EstsError::parse(status, body),
        ));
    }
    let mut map = parse_object(what, body)?;
    // Taken first, so that on any later error the secret is zeroized when dropped.
    let access_token = take_access_token(what, &mut map, TokenType::Bearer)?;
    if let Some(token_type) = take_optional_string(what, &mut map, "token_type")?
        && !TokenType::Bearer.matches_response(&token_type)
    {
        return Err(ResponseError::field(
            what,
            "token_type",
            format!("is {} but a Bearer token was requested", quote(&token_type)),
        ));
    }
    let expires_at = match map.remove("expires_on") {
        None | Some(serde_json::Value::Null) => {
            match take_optional_u64(what, &mut map, "expires_in")? {
                Some(0) => {
                    return Err(ResponseError::field(
                        what,
                        "expires_in",
                        "must be greater than zero",
                    ));
                }
                Some(secs) => now.checked_add(Duration::from_secs(secs)).ok_or_else(|| {
                    ResponseError::field(what, "expires_in", "overflows the clock")
                })?,
                None => {
                    return Err(ResponseError::field(
                        what,
                        "expires_on",
                        "is missing (and so is expires_in)",
                    ));
                }
            }
        }
        Some(serde_json::Value::String(s)) => parse_expires_on(&s, now)
            .map_err(|e| ResponseError::field(what, "expires_on", e.to_string()))?,
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(secs) => expiry::from_seconds(secs, now)
                .map_err(|e| ResponseError::field(what, "expires_on", e.to_string()))?,
            None => {
                return Err(ResponseError::field(
                    what,
                    "expires_on",
                    "must be a whole number of seconds",
                ));
            }
        },
        Some(other) => {
            return Err(ResponseError::field(
                what,
                "expires_on",
                format!("must be a string or a number, found {}", kind(&other)),
            ));
        }
    };
    let lifetime = match expires_at.duration_since(now) {
        Ok(lifetime) if !lifetime.is_zero() => lifetime,
        _ => {
            return Err(ResponseError::field(
                what,
                "expires_on",
                "is not in the future: the token is already expired",
            ));
        }
    };
    if lifetime > MAX_EXPIRES_IN {
        return Err(ResponseError::field(
            what,
            "expires_on",
            format!(
                "is {} s away, beyond the {} s limit",
                lifetime.as_secs(),
                MAX_EXPIRES_IN.as_secs()
            ),
        ));
    }
    // As MSAL (and token_response.rs): a `refresh_in` of 0 or not before the end of the
    // lifetime is dropped, not an error; the default refresh-ahead rule applies.
    let refresh_in = take_optional_u64(what, &mut map, "refresh_in")?
        .map(Duration::from_secs)
        .filter(|r| !r.is_zero() && *r < lifetime);
    let resource = take_optional_string(what, &mut map, "resource")?;
    let client_id = take_optional_string(what, &mut map, "client_id")?;
    Ok(ManagedIdentityToken {
        token: Token {
            access_token,
            token_type: TokenType::Bearer,
            expires_at,
            refresh_in,
            binding: None,
        },
        resource,
        client_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHAT: &str = "IMDS v1 token response";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn parse(body: &str, now: u64) -> Result<ManagedIdentityToken, ResponseError> {
        parse_managed_identity_token(WHAT, StatusCode::OK, body.as_bytes(), at(now))
    }

    #[test]
    fn expiry_sources_in_order() {
        let t = parse(
            r#"{"access_token":"a","expires_on":"1800003600","expires_in":"1"}"#,
            1_800_000_000,
        )
        .unwrap();
        assert_eq!(t.token.expires_at, at(1_800_003_600));
        let t = parse(
            r#"{"access_token":"a","expires_on":1800003600}"#,
            1_800_000_000,
        )
        .unwrap();
        assert_eq!(t.token.expires_at, at(1_800_003_600));
        let t = parse(
            r#"{"access_token":"a","expires_on":"2027-01-15T09:00:00Z"}"#,
            1_800_000_000,
        )
        .unwrap();
        assert_eq!(t.token.expires_at, at(1_800_003_600));
        let t = parse(
            r#"{"access_token":"a","expires_in":"3599","refresh_in":"1800","token_type":"Bearer"}"#,
            100,
        )
        .unwrap();
        assert_eq!(t.token.expires_at, at(3_699));
        assert_eq!(t.token.refresh_in, Some(Duration::from_secs(1800)));
    }

    #[test]
    fn bad_fields_are_named_and_never_quote_the_token() {
        let cases = [
            (r#"{"expires_in":"1"}"#, "`access_token` is missing"),
            (
                r#"{"access_token":"SECRET"}"#,
                "`expires_on` is missing (and so is expires_in)",
            ),
            (
                r#"{"access_token":"SECRET","expires_on":"soon"}"#,
                "`expires_on` is neither",
            ),
            (
                r#"{"access_token":"SECRET","expires_on":true}"#,
                "`expires_on` must be a string or a number",
            ),
            (
                r#"{"access_token":"SECRET","expires_on":"1000000000"}"#,
                "`expires_on` is not in the future",
            ),
            (
                r#"{"access_token":"SECRET","expires_in":"0"}"#,
                "`expires_in` must be greater than zero",
            ),
            (
                r#"{"access_token":"SECRET","expires_in":"x"}"#,
                "`expires_in` must be a whole number",
            ),
            (
                r#"{"access_token":"SECRET","expires_in":"60","refresh_in":"x"}"#,
                "`refresh_in` must be a whole",
            ),
            (
                r#"{"access_token":"SECRET","expires_in":"60","token_type":"mtls_pop"}"#,
                "`token_type` is \"mtls_pop\"",
            ),
            (
                r#"{"access_token":"SECRET","expires_in":"60","resource":1}"#,
                "`resource` must be a string",
            ),
            (
                r#"{"access_token":"SECRET","expires_in":"99999999999"}"#,
                "beyond the",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body, 1_800_000_000).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains(expected), "{body}: {shown}");
            assert!(!shown.contains("SECRET"), "{body}: {shown}");
        }
    }
}
