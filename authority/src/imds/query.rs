//! Query-string rules shared by every IMDS endpoint: no duplicate or unknown parameters, no empty
//! values, at most one user-assigned identity selector, and resolving the identity it names.

use http::{HeaderMap, StatusCode, Uri};

use super::backend::{ImdsBackend, ManagedIdentity, UamiSelector};

/// A decoded query string (`form_urlencoded` percent-decodes keys and values).
#[derive(Debug)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

/// Why a request's parameters were refused; the text names the parameter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct QueryError(pub String);

impl Query {
    /// Parses `uri`'s query, refusing repeated keys, keys outside `allowed` and empty values.
    pub fn parse(uri: &Uri, allowed: &[&str]) -> Result<Self, QueryError> {
        let raw = uri.query().unwrap_or("");
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            if !allowed.contains(&key.as_ref()) {
                return Err(QueryError(format!(
                    "unknown query parameter '{key}' (expected one of: {})",
                    allowed.join(", ")
                )));
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(QueryError(format!(
                    "query parameter '{key}' is given more than once"
                )));
            }
            if value.is_empty() {
                return Err(QueryError(format!("query parameter '{key}' is empty")));
            }
            pairs.push((key.into_owned(), value.into_owned()));
        }
        Ok(Self { pairs })
    }

    /// The decoded value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The user-assigned identity selector, if any, given the endpoint's names for the three keys.
    pub fn selector(&self, keys: &SelectorKeys<'_>) -> Result<Option<UamiSelector>, QueryError> {
        let found: Vec<UamiSelector> = [
            self.get(keys.client_id)
                .map(|v| UamiSelector::ClientId(v.to_string())),
            self.get(keys.resource_id)
                .map(|v| UamiSelector::ResourceId(v.to_string())),
            self.get(keys.object_id)
                .map(|v| UamiSelector::ObjectId(v.to_string())),
        ]
        .into_iter()
        .flatten()
        .collect();
        if found.len() > 1 {
            return Err(QueryError(format!(
                "only one of '{}', '{}', '{}' may name the user-assigned identity",
                keys.client_id, keys.resource_id, keys.object_id
            )));
        }
        Ok(found.into_iter().next())
    }
}

/// The query keys an endpoint uses for the three ways of naming a user-assigned identity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SelectorKeys<'a> {
    pub client_id: &'a str,
    pub resource_id: &'a str,
    pub object_id: &'a str,
}

/// Resolves the addressed identity: the system-assigned one when no selector is given.
/// The error text is IMDS's ("Identity not found") plus which selector failed.
pub(crate) fn resolve_identity(
    backend: &dyn ImdsBackend,
    selector: Option<&UamiSelector>,
) -> Result<ManagedIdentity, String> {
    match selector {
        None => backend.system_assigned().ok_or_else(|| {
            "Identity not found: this VM has no system-assigned identity; name a user-assigned one"
                .to_string()
        }),
        Some(sel) => backend.user_assigned(sel).ok_or_else(|| {
            let (what, value) = match sel {
                UamiSelector::ClientId(v) => ("client_id", v),
                UamiSelector::ResourceId(v) => ("resource id", v),
                UamiSelector::ObjectId(v) => ("object_id", v),
            };
            format!(
                "Identity not found: no user-assigned identity with {what} '{value}' is attached to this VM"
            )
        }),
    }
}

/// IMDS answers only requests carrying `Metadata: true` (SSRF protection); `None` when it is there.
pub(crate) fn metadata_header_problem(headers: &HeaderMap) -> Option<&'static str> {
    match headers.get("metadata").map(|v| v.to_str()) {
        None => Some("Required metadata header not specified"),
        Some(Ok(v)) if v.eq_ignore_ascii_case("true") => None,
        Some(_) => Some("Required metadata header not specified or not correct"),
    }
}

/// IMDS refuses proxied requests (another SSRF guard); `None` when none is marked as proxied.
pub(crate) fn forwarded_problem(headers: &HeaderMap) -> Option<&'static str> {
    headers.contains_key("x-forwarded-for").then_some(
        "Request was forwarded (X-Forwarded-For header present); IMDS refuses proxied requests",
    )
}

/// 405 for any method but `expected`.
pub(crate) fn method_problem(method: &http::Method, expected: &http::Method) -> Option<StatusCode> {
    (method != expected).then_some(StatusCode::METHOD_NOT_ALLOWED)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: SelectorKeys<'static> = SelectorKeys {
        client_id: "client_id",
        resource_id: "mi_res_id",
        object_id: "object_id",
    };
    const ALLOWED: &[&str] = &["a", "client_id", "mi_res_id", "object_id"];

    fn q(s: &str) -> Result<Query, QueryError> {
        Query::parse(&s.parse::<Uri>().unwrap(), ALLOWED)
    }

    #[test]
    fn decodes_and_refuses() {
        let query = q("/p?a=x%2Fy&mi_res_id=%2Fsubscriptions%2Fs").unwrap();
        assert_eq!(query.get("a"), Some("x/y"));
        assert_eq!(
            query.selector(&KEYS).unwrap(),
            Some(UamiSelector::ResourceId("/subscriptions/s".into()))
        );
        assert!(q("/p?b=1").unwrap_err().0.contains("'b'"));
        assert!(q("/p?a=1&a=2").unwrap_err().0.contains("more than once"));
        assert!(q("/p?a=").unwrap_err().0.contains("empty"));
        let two = q("/p?client_id=1&object_id=2").unwrap();
        assert!(two.selector(&KEYS).is_err());
        assert_eq!(q("/p").unwrap().selector(&KEYS).unwrap(), None);
    }
}
