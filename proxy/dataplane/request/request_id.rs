//! `x-request-id`: the caller's when it is well formed, else a new one; sent upstream with the
//! request, returned to the caller with the answer, and in the access log and the request's span.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller id kept: room for any UUID, ULID or trace-style id, short enough that an
/// id cannot bloat every log line and upstream request. A longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id: the caller's single well-formed `x-request-id`, else a new UUID, which
/// then replaces whatever the caller sent. `headers` holds it afterwards either way.
pub(super) fn assign(headers: &mut HeaderMap) -> HeaderValue {
    let mut given = headers.get_all(&REQUEST_ID).iter();
    if let (Some(id), None) = (given.next(), given.next())
        && well_formed(id.as_bytes())
    {
        return id.clone();
    }
    let id = new_id();
    headers.insert(REQUEST_ID, id.clone());
    id
}

/// 1 to [`MAX_REQUEST_ID_LEN`] characters from `A-Z a-z 0-9 - _ . : / + =` (UUIDs, ULIDs,
/// base64 ids, `service:123`), so it is safe in a log line and a header.
fn well_formed(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

fn new_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is 36 ASCII hex digits and hyphens: always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(REQUEST_ID, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keeps_a_well_formed_id_and_replaces_anything_else() {
        let mut h = with(&["req-42:abc/DEF+="]);
        assert_eq!(assign(&mut h), "req-42:abc/DEF+=");
        assert_eq!(h.get_all(&REQUEST_ID).iter().count(), 1);
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in [
            vec!["has space"],
            vec![""],
            vec!["semi;colon"],
            vec![long.as_str()],
            vec!["one", "two"],
        ] {
            let mut h = with(&bad);
            let id = assign(&mut h);
            assert_eq!(id.len(), 36, "{bad:?}");
            let all: Vec<_> = h.get_all(&REQUEST_ID).iter().collect();
            assert_eq!(all, vec![&id], "{bad:?}");
        }
        let mut none = HeaderMap::new();
        let id = assign(&mut none);
        assert_eq!(none[&REQUEST_ID], id);
        assert_ne!(assign(&mut HeaderMap::new()), id);
    }
}
