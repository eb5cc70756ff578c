//! The JSON summary the resource answers with: what it saw and what it decided.

use http::HeaderMap;
use http::request::Parts;
use serde_json::{Map, Value, json};

use super::authorize::Authorized;
use super::body::Digested;

/// Builds the echo for an authorized request. `authorization` is never included.
pub fn echo(
    parts: &Parts,
    audience: &str,
    authorized: &Authorized,
    presented_x5t: Option<&str>,
    body: &Digested,
) -> Value {
    json!({
        "authorized": true,
        "scheme": authorized.scheme.as_str(),
        "audience": audience,
        "appid": authorized.claims.appid,
        "oid": authorized.claims.oid,
        "cnf_x5t": authorized.claims.cnf.as_ref().map(|c| c.x5t_s256.clone()),
        "presented_x5t": presented_x5t,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "http_version": format!("{:?}", parts.version),
        "request_body_bytes": body.bytes,
        "request_body_sha256": body.sha256,
        "headers": headers_json(&parts.headers),
        "peer": parts.extensions.get::<super::Peer>().map(|p| p.0.to_string()),
    })
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        if name == http::header::AUTHORIZATION {
            continue;
        }
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(name.as_str().to_string(), Value::String(joined));
    }
    Value::Object(out)
}

/// JSON text with every non-ASCII character `\u`-escaped, so it can travel in a header value.
pub fn ascii_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_json_round_trips() {
        let v = json!({"h": "caf\u{e9} \u{1f600}"});
        let text = ascii_json(&v);
        assert!(text.is_ascii());
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }
}
