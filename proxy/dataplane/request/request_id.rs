//! `x-request-id`: the caller's when it is well formed, else a new one; sent upstream with the
//! request, returned to the caller with the answer, and in the access log and the request's span.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller id kept: room for any UUID, ULID or trace-style id, short enough that an
/// id cannot bloat every log line and upstream request. A longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id: the caller's single well-formed `x-request-id`, else a new id (a UUID), which
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

thread_local! {
    /// This thread's id source: a random prefix drawn once, and a counter.
    static IDS: std::cell::Cell<(u64, u64)> = std::cell::Cell::new((random_prefix(), 0));
}

/// 64 random bits (from a v4 UUID: the OS's random source), drawn once per thread.
fn random_prefix() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&bytes[..8]);
    u64::from_ne_bytes(prefix)
}

/// A new id: unique, not secret. A UUID (version 8, "custom") made of the thread's random prefix
/// and its counter, so a request costs no call to the OS's random source and no allocation but
/// the header value's. Two threads' prefixes collide with odds of about 2⁻⁶⁰; one thread never
/// repeats an id (its counter would need 2⁶² requests to wrap).
fn new_id() -> HeaderValue {
    let (prefix, count) = IDS.with(|ids| {
        let (prefix, count) = ids.get();
        ids.set((prefix, count.wrapping_add(1)));
        (prefix, count)
    });
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&prefix.to_be_bytes());
    bytes[8..].copy_from_slice(&count.to_be_bytes());
    // RFC 9562: version 8 in the high nibble of byte 6, variant `10` in the top bits of byte 8.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut buf = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::from_bytes(bytes)
        .hyphenated()
        .encode_lower(&mut buf);
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

    #[test]
    fn new_ids_are_distinct_uuids_of_version_8() {
        let ids: Vec<HeaderValue> = (0..1000).map(|_| new_id()).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            let uuid = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(uuid.get_version_num(), 8, "{id:?}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id:?}");
        }
        // Another thread draws its own prefix.
        let other = std::thread::spawn(new_id).join().unwrap();
        assert_ne!(other.as_bytes()[..18], ids[0].as_bytes()[..18]);
    }
}
