//! Strict parsing of the token request body: `application/x-www-form-urlencoded` only, every key
//! at most once. Values are held zeroizing: `client_assertion` is a credential.

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::errors::EstsError;

/// The only media type the token endpoint takes.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// A parsed token request form.
pub struct TokenForm {
    fields: HashMap<String, Zeroizing<String>>,
}

impl std::fmt::Debug for TokenForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.fields.keys().collect();
        keys.sort();
        f.debug_struct("TokenForm")
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

impl TokenForm {
    /// Checks the `Content-Type` (parameters such as `charset` allowed) and parses `body`.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, EstsError> {
        let media_type = content_type
            .and_then(|ct| ct.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        if !media_type.eq_ignore_ascii_case(FORM_CONTENT_TYPE) {
            let shown = if media_type.is_empty() {
                "none"
            } else {
                media_type
            };
            return Err(EstsError::bad_request(format!(
                "The token request must be sent as Content-Type {FORM_CONTENT_TYPE}; this one was sent as {shown}."
            )));
        }
        let mut fields = HashMap::new();
        for (key, value) in form_urlencoded::parse(body) {
            if key.is_empty() {
                return Err(EstsError::bad_request(
                    "The request body contains a parameter with an empty name.",
                ));
            }
            let key = key.into_owned();
            if fields.contains_key(&key) {
                return Err(EstsError::bad_request(format!(
                    "The request body contains the parameter '{key}' more than once."
                )));
            }
            fields.insert(key, Zeroizing::new(value.into_owned()));
        }
        Ok(Self { fields })
    }

    /// The value of `name`; an empty value counts as absent, as ESTS treats it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name`, or AADSTS900144 naming it.
    pub fn require(&self, name: &str) -> Result<&str, EstsError> {
        self.get(name)
            .ok_or_else(|| EstsError::missing_parameter(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        let ok = TokenForm::parse(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"client_id=a&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&empty=",
        )
        .unwrap();
        assert_eq!(ok.get("client_id"), Some("a"));
        assert_eq!(
            ok.get("scope"),
            Some("https://graph.microsoft.com/.default")
        );
        assert_eq!(ok.get("empty"), None);
        assert_eq!(ok.require("grant_type").unwrap_err().code, 900144);

        let dup = TokenForm::parse(Some(FORM_CONTENT_TYPE), b"a=1&a=2").unwrap_err();
        assert!(dup.description.contains("'a' more than once"));
        let json = TokenForm::parse(Some("application/json"), b"{}").unwrap_err();
        assert!(json.description.contains("application/json"));
        assert!(TokenForm::parse(None, b"a=1").is_err());
        assert!(TokenForm::parse(Some(FORM_CONTENT_TYPE), b"=1").is_err());
    }
}
