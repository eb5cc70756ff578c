//! Strict field extraction from token-endpoint and IMDS JSON bodies, with errors that name the
//! response and the field. Shared by every response parser in this module.

use std::fmt;

use serde_json::{Map, Value};

use crate::identity::ests_error::EstsError;

/// Largest response body any parser accepts. Token and IMDS responses are a few KiB at most (a
/// PoP access token is about 2 KiB); anything far larger is not a credential response.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest excerpt of a non-secret field value quoted back in an error message, so a hostile peer
/// cannot flood logs through our errors.
pub const MAX_QUOTED_VALUE_CHARS: usize = 64;

/// Why a credential response could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// The peer answered with an error status; the body was parsed as an ESTS/IMDS error.
    #[error("{what}: {error}")]
    Rejected {
        /// Which response this was (for example `token endpoint response`).
        what: &'static str,
        /// The parsed error body (boxed: it is large and errors are the rare path).
        error: Box<EstsError>,
    },
    /// The body is larger than [`MAX_RESPONSE_BYTES`].
    #[error("{what}: body is {len} bytes, over the {MAX_RESPONSE_BYTES}-byte limit")]
    TooLarge {
        /// Which response.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// The body is not a JSON object.
    #[error("{what}: body is not a JSON object ({detail})")]
    NotJson {
        /// Which response.
        what: &'static str,
        /// The JSON parser's message (line and column, never the content).
        detail: String,
    },
    /// A field is missing or has a bad value.
    #[error("{what}: field `{field}` {problem}")]
    Field {
        /// Which response.
        what: &'static str,
        /// The JSON field.
        field: &'static str,
        /// What is wrong with it (never quoting a secret).
        problem: String,
    },
    /// Something other than a single field is wrong (for example a header).
    #[error("{what}: {problem}")]
    Invalid {
        /// Which response.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl ResponseError {
    /// The ESTS/IMDS error, when the peer answered with one.
    pub fn ests(&self) -> Option<&EstsError> {
        match self {
            ResponseError::Rejected { error, .. } => Some(error),
            _ => None,
        }
    }

    /// A [`ResponseError::Rejected`].
    pub fn rejected(what: &'static str, error: EstsError) -> Self {
        ResponseError::Rejected {
            what,
            error: Box::new(error),
        }
    }

    pub(crate) fn field(
        what: &'static str,
        field: &'static str,
        problem: impl Into<String>,
    ) -> Self {
        ResponseError::Field {
            what,
            field,
            problem: problem.into(),
        }
    }
}

/// Parses `body` as a JSON object after checking its size.
pub(crate) fn parse_object(
    what: &'static str,
    body: &[u8],
) -> Result<Map<String, Value>, ResponseError> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(ResponseError::TooLarge {
            what,
            len: body.len(),
        });
    }
    // serde_json's error text names a line and column, never the input bytes.
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ResponseError::NotJson {
            what,
            detail: format!("found {}", kind(&other)),
        }),
        Err(e) => Err(ResponseError::NotJson {
            what,
            detail: e.to_string(),
        }),
    }
}

/// The JSON kind of a value, for error messages that must not quote the value itself.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A required, non-empty string field, removed from the map (so secrets are moved, not copied).
pub(crate) fn take_required_string(
    what: &'static str,
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<String, ResponseError> {
    match take_optional_string(what, map, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(ResponseError::field(what, field, "is empty")),
        None => Err(ResponseError::field(what, field, "is missing")),
    }
}

/// An optional string field (`null` counts as absent), removed from the map.
pub(crate) fn take_optional_string(
    what: &'static str,
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ResponseError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ResponseError::field(
            what,
            field,
            format!("must be a string, found {}", kind(&other)),
        )),
    }
}

/// An optional unsigned integer that ESTS and IMDS send either as a JSON number or as a string
/// of ASCII digits (`3599` or `"3599"`). Negative, fractional or other values are errors.
pub(crate) fn take_optional_u64(
    what: &'static str,
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, ResponseError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            ResponseError::field(
                what,
                field,
                format!(
                    "must be a whole number of seconds, found {}",
                    quote(&n.to_string())
                ),
            )
        }),
        Some(Value::String(s)) => parse_digits(&s).map(Some).ok_or_else(|| {
            ResponseError::field(
                what,
                field,
                format!("must be a whole number of seconds, found {}", quote(&s)),
            )
        }),
        Some(other) => Err(ResponseError::field(
            what,
            field,
            format!(
                "must be a number or a numeric string, found {}",
                kind(&other)
            ),
        )),
    }
}

/// Parses a string made only of ASCII digits (no sign, no spaces) that fits in a `u64`.
pub(crate) fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A value quoted for an error message: truncated and with control characters replaced, so it
/// cannot break a log line. Only for values that are not secrets.
pub(crate) fn quote(value: &str) -> Quoted<'_> {
    Quoted(value)
}

/// See [`quote`].
pub(crate) struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        write_sanitized(f, self.0, MAX_QUOTED_VALUE_CHARS)?;
        f.write_str("\"")
    }
}

/// Writes at most `max_chars` characters of `text`, control characters replaced by a space and
/// `…` appended when truncated.
pub(crate) fn write_sanitized(
    f: &mut impl fmt::Write,
    text: &str,
    max_chars: usize,
) -> fmt::Result {
    let mut chars = text.chars();
    for c in chars.by_ref().take(max_chars) {
        f.write_char(if c.is_control() { ' ' } else { c })?;
    }
    if chars.next().is_some() {
        f.write_str("…")?;
    }
    Ok(())
}

/// [`write_sanitized`] into a new `String`.
pub(crate) fn sanitized(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_sanitized(&mut out, text, max_chars);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_may_be_json_numbers_or_digit_strings() {
        let mut map = parse_object(
            "t",
            br#"{"a":3599,"b":"3599","c":"-1","d":1.5,"e":"","f":true," g":1}"#,
        )
        .unwrap();
        assert_eq!(take_optional_u64("t", &mut map, "a").unwrap(), Some(3599));
        assert_eq!(take_optional_u64("t", &mut map, "b").unwrap(), Some(3599));
        for field in ["c", "d", "e", "f"] {
            let err = take_optional_u64("t", &mut map, field)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{field}`")), "{err}");
        }
        assert_eq!(take_optional_u64("t", &mut map, "missing").unwrap(), None);
    }

    #[test]
    fn oversized_and_non_object_bodies_are_refused() {
        let big = vec![b' '; MAX_RESPONSE_BYTES + 1];
        assert!(matches!(
            parse_object("t", &big),
            Err(ResponseError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_object("t", b"[1]"),
            Err(ResponseError::NotJson { .. })
        ));
        assert!(matches!(
            parse_object("t", b"Too many requests"),
            Err(ResponseError::NotJson { .. })
        ));
    }

    #[test]
    fn quoting_truncates_and_strips_control_characters() {
        let long = "x".repeat(MAX_QUOTED_VALUE_CHARS + 10);
        let shown = quote(&long).to_string();
        assert!(shown.ends_with("…\""), "{shown}");
        assert_eq!(quote("a\r\nb").to_string(), "\"a  b\"");
    }
}
