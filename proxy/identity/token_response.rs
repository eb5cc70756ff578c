//! Parsing the token endpoint's answer (ESTS, §1/§3/§5 of protocol.md) into a [`Token`].

use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::certs::binding::BindingCert;
use crate::identity::ests_error::EstsError;
use crate::identity::response_json::{
    ResponseError, parse_object, quote, take_optional_string, take_optional_u64,
    take_required_string,
};
use crate::identity::token::{AccessToken, Token, TokenType};

const WHAT: &str = "token endpoint response";

/// Longest token lifetime accepted. Entra ID tokens live about an hour (managed identity tokens up
/// to about a day); a lifetime beyond this is a malformed response, not a token to cache for weeks.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(30 * 24 * 3600);

/// A successful token response, with every field checked.
#[derive(Debug)]
pub struct TokenResponse {
    /// `access_token`.
    pub access_token: AccessToken,
    /// `token_type`, equal to the requested type.
    pub token_type: TokenType,
    /// `expires_in`.
    pub expires_in: Duration,
    /// `ext_expires_in`: how long ESTS would honour the token during an outage (informational).
    pub ext_expires_in: Option<Duration>,
    /// `refresh_in`: when ESTS wants to be asked again.
    pub refresh_in: Option<Duration>,
}

impl TokenResponse {
    /// Parses a 200 body. `requested` is the token type that was asked for: the response's
    /// `token_type` must equal it case-insensitively (a PoP request answered with a Bearer token is
    /// an error, never a silent downgrade).
    pub fn parse(body: &[u8], requested: TokenType) -> Result<Self, ResponseError> {
        let mut map = parse_object(WHAT, body)?;
        // Taken first, so that on any later error the secret is zeroized when dropped.
        let access_token = take_access_token(WHAT, &mut map, requested)?;
        let token_type = take_required_string(WHAT, &mut map, "token_type")?;
        if !requested.matches_response(&token_type) {
            return Err(ResponseError::field(
                WHAT,
                "token_type",
                format!(
                    "is {} but {} was requested",
                    quote(&token_type),
                    quote(requested.as_str())
                ),
            ));
        }
        let expires_in = lifetime(&mut map, "expires_in")?
            .ok_or_else(|| ResponseError::field(WHAT, "expires_in", "is missing"))?;
        // As MSAL: `ext_expires_in` is informational (popgate never serves a token past
        // `expires_in`), so any whole number is taken, 0 and more than 30 days included.
        let ext_expires_in =
            take_optional_u64(WHAT, &mut map, "ext_expires_in")?.map(Duration::from_secs);
        // As MSAL, a `refresh_in` of 0 or not before `expires_in` does not fail a good token; it
        // names no useful refresh time, so it is dropped and the default refresh-ahead rule
        // (half-life, or shortly before the token stops being usable) applies.
        let refresh_in = take_optional_u64(WHAT, &mut map, "refresh_in")?
            .map(Duration::from_secs)
            .filter(|r| !r.is_zero() && *r < expires_in);
        Ok(Self {
            access_token,
            token_type: requested,
            expires_in,
            ext_expires_in,
            refresh_in,
        })
    }

    /// The token, expiring `expires_in` after `now` (the time the request was sent, so clock time
    /// spent on the wire counts against the token, not for it).
    pub fn into_token(
        self,
        now: SystemTime,
        binding: Option<BindingCert>,
    ) -> Result<Token, ResponseError> {
        let expires_at = now
            .checked_add(self.expires_in)
            .ok_or_else(|| ResponseError::field(WHAT, "expires_in", "overflows the clock"))?;
        Ok(Token {
            access_token: self.access_token,
            token_type: self.token_type,
            expires_at,
            refresh_in: self.refresh_in,
            binding,
        })
    }
}

/// Parses a token endpoint answer: a 200 becomes a [`Token`]; any other status becomes
/// [`ResponseError::Rejected`] carrying the parsed [`EstsError`].
///
/// A PoP token must come with the certificate it is bound to; the caller passes the certificate
/// it presented on this request.
pub fn parse_token_response(
    status: StatusCode,
    body: &[u8],
    requested: TokenType,
    now: SystemTime,
    binding: Option<BindingCert>,
) -> Result<Token, ResponseError> {
    if status != StatusCode::OK {
        return Err(ResponseError::rejected(
            WHAT,
            EstsError::parse(status, body),
        ));
    }
    if requested == TokenType::MtlsPop && binding.is_none() {
        return Err(ResponseError::Invalid {
            what: WHAT,
            problem: "an mtls_pop token needs the binding certificate it was requested with".into(),
        });
    }
    TokenResponse::parse(body, requested)?.into_token(now, binding)
}

fn lifetime(
    map: &mut serde_json::Map<String, serde_json::Value>,
    field: &'static str,
) -> Result<Option<Duration>, ResponseError> {
    match take_optional_u64(WHAT, map, field)? {
        None => Ok(None),
        Some(0) => Err(ResponseError::field(
            WHAT,
            field,
            "must be greater than zero",
        )),
        Some(secs) if Duration::from_secs(secs) > MAX_EXPIRES_IN => Err(ResponseError::field(
            WHAT,
            field,
            format!(
                "({secs} s) is longer than the {} s limit",
                MAX_EXPIRES_IN.as_secs()
            ),
        )),
        Some(secs) => Ok(Some(Duration::from_secs(secs))),
    }
}

/// Moves `access_token` out of the map into an [`AccessToken`] after checking it can be sent in
/// an `Authorization` header. Errors never quote the value.
pub(crate) fn take_access_token(
    what: &'static str,
    map: &mut serde_json::Map<String, serde_json::Value>,
    token_type: TokenType,
) -> Result<AccessToken, ResponseError> {
    // `take_optional_string` moves the String out of the JSON value: no copy of the secret is made.
    let token = match take_optional_string(what, map, "access_token") {
        Ok(Some(token)) => AccessToken::new(token_type, token),
        Ok(None) => return Err(ResponseError::field(what, "access_token", "is missing")),
        Err(e) => return Err(e),
    };
    let secret = token.expose_secret();
    if secret.is_empty() {
        return Err(ResponseError::field(what, "access_token", "is empty"));
    }
    // Visible ASCII only: the token goes into an HTTP header value verbatim.
    if let Some(pos) = secret.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(ResponseError::field(
            what,
            "access_token",
            format!("has a character not allowed in an HTTP header at byte {pos}"),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn parse(body: &str, requested: TokenType) -> Result<TokenResponse, ResponseError> {
        TokenResponse::parse(body.as_bytes(), requested)
    }

    #[test]
    fn numbers_may_be_strings_and_expiry_counts_from_now() {
        let r = parse(
            r#"{"token_type":"Bearer","access_token":"tok","expires_in":"3599","ext_expires_in":7199,"refresh_in":"1800"}"#,
            TokenType::Bearer,
        )
        .unwrap();
        assert_eq!(r.expires_in, Duration::from_secs(3599));
        assert_eq!(r.ext_expires_in, Some(Duration::from_secs(7199)));
        assert_eq!(r.refresh_in, Some(Duration::from_secs(1800)));
        let token = r.into_token(at(1_000_000), None).unwrap();
        assert_eq!(token.expires_at, at(1_003_599));
        assert_eq!(token.token_type, TokenType::Bearer);
        assert_eq!(token.access_token.expose_secret(), "tok");
    }

    #[test]
    fn odd_ext_expires_in_and_refresh_in_are_taken_as_msal_takes_them() {
        // ext_expires_in 0 or beyond 30 days: informational, accepted.
        for ext in ["0", "\"0\"", "31536000"] {
            let r = parse(
                &format!(
                    r#"{{"token_type":"Bearer","access_token":"t","expires_in":3599,"ext_expires_in":{ext}}}"#
                ),
                TokenType::Bearer,
            )
            .unwrap();
            assert_eq!(r.expires_in, Duration::from_secs(3599), "{ext}");
        }
        // refresh_in 0, equal to or beyond expires_in: the token is good, refresh_in dropped.
        for refresh in ["0", "3599", "\"7200\""] {
            let r = parse(
                &format!(
                    r#"{{"token_type":"Bearer","access_token":"t","expires_in":3599,"refresh_in":{refresh}}}"#
                ),
                TokenType::Bearer,
            )
            .unwrap();
            assert_eq!(r.refresh_in, None, "{refresh}");
        }
        let r = parse(
            r#"{"token_type":"Bearer","access_token":"t","expires_in":3599,"refresh_in":3598}"#,
            TokenType::Bearer,
        )
        .unwrap();
        assert_eq!(r.refresh_in, Some(Duration::from_secs(3598)));
    }

    #[test]
    fn never_downgrades_pop_to_bearer() {
        let err = parse(
            r#"{"token_type":"Bearer","access_token":"tok","expires_in":3599}"#,
            TokenType::MtlsPop,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`token_type`") && err.contains("mtls_pop"),
            "{err}"
        );
        assert!(
            parse(
                r#"{"token_type":"MTLS_POP","access_token":"t","expires_in":1}"#,
                TokenType::MtlsPop
            )
            .is_ok()
        );
    }

    #[test]
    fn each_bad_field_is_named_and_the_token_never_echoed() {
        let cases = [
            (
                r#"{"access_token":"SECRET","expires_in":1}"#,
                "`token_type` is missing",
            ),
            (
                r#"{"token_type":"bearer","expires_in":1}"#,
                "`access_token` is missing",
            ),
            (
                r#"{"token_type":"bearer","access_token":"","expires_in":1}"#,
                "`access_token` is empty",
            ),
            (
                r#"{"token_type":"bearer","access_token":42,"expires_in":1}"#,
                "`access_token` must be a string",
            ),
            (
                r#"{"token_type":"bearer","access_token":"SE CRET","expires_in":1}"#,
                "`access_token` has a character",
            ),
            (
                r#"{"token_type":"bearer","access_token":"SECRET"}"#,
                "`expires_in` is missing",
            ),
            (
                r#"{"token_type":"bearer","access_token":"SECRET","expires_in":0}"#,
                "`expires_in` must be greater",
            ),
            (
                r#"{"token_type":"bearer","access_token":"SECRET","expires_in":"soon"}"#,
                "`expires_in` must be a whole",
            ),
            (
                r#"{"token_type":"bearer","access_token":"SECRET","expires_in":-5}"#,
                "`expires_in` must be a whole",
            ),
            (
                r#"{"token_type":"bearer","access_token":"SECRET","expires_in":99999999999}"#,
                "`expires_in` (99999999999 s) is longer",
            ),
            (
                r#"{"token_type":"bearer","access_token":"SECRET","expires_in":60,"refresh_in":"x"}"#,
                "`refresh_in` must be a whole",
            ),
            (
                r#"{"token_type":"bearer","access_token":"SECRET","expires_in":60,"ext_expires_in":[]}"#,
                "`ext_expires_in` must be a number",
            ),
            (r#"["SECRET"]"#, "not a JSON object"),
            (r#"{"access_token":"SECRET""#, "not a JSON object"),
        ];
        for (body, expected) in cases {
            let err = parse(body, TokenType::Bearer).unwrap_err();
            let shown = format!("{err} / {err:?}");
            assert!(shown.contains(expected), "{body}: {shown}");
            assert!(!shown.contains("SECRET"), "{body}: {shown}");
        }
    }

    #[test]
    fn error_statuses_become_ests_errors() {
        let err = parse_token_response(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_scope","error_description":"AADSTS70011: bad scope","correlation_id":"cid"}"#,
            TokenType::Bearer,
            at(0),
            None,
        )
        .unwrap_err();
        let ests = err.ests().unwrap();
        assert_eq!(ests.aadsts, Some(70011));
        let shown = err.to_string();
        assert!(
            shown.contains("invalid_scope AADSTS70011") && shown.contains("cid"),
            "{shown}"
        );
    }

    #[test]
    fn a_pop_token_needs_its_binding() {
        let err = parse_token_response(
            StatusCode::OK,
            br#"{"token_type":"mtls_pop","access_token":"t","expires_in":1}"#,
            TokenType::MtlsPop,
            at(0),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("binding certificate"));
    }
}
