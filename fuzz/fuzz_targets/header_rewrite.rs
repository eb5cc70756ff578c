//! Arbitrary header maps through the dataplane's header rewriting and the `WWW-Authenticate`
//! reader. Beyond "no panic" it checks the rewrite's promises: exactly our Authorization goes
//! upstream, and no hop-by-hop header survives either direction.
#![no_main]

use http::header::{AUTHORIZATION, CONNECTION, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use libfuzzer_sys::fuzz_target;
use popgate::dataplane::headers::{rewrite_request, rewrite_response};
use popgate::dataplane::www_authenticate::refuses_token;

const VERSIONS: [Version; 4] = [
    Version::HTTP_10,
    Version::HTTP_11,
    Version::HTTP_2,
    Version::HTTP_3,
];

/// Input: a version selector byte, then `name:value` lines.
fn headers(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    map
}

fn assert_no_hop_by_hop(map: &HeaderMap) {
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        assert!(!map.contains_key(&name), "{name} survived the rewrite");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = VERSIONS[usize::from(selector & 3)];
    let original = headers(rest);
    let _ = refuses_token(&original);

    let ours = HeaderValue::from_static("mtls_pop fuzz.token.value");
    let mut request = original.clone();
    rewrite_request(&mut request, version, &ours);
    let auth: Vec<_> = request.get_all(AUTHORIZATION).iter().collect();
    assert_eq!(
        auth,
        vec![&ours],
        "exactly popgate's Authorization goes upstream"
    );
    assert!(!request.contains_key(HOST), "Host is rebuilt from the URI");
    assert_no_hop_by_hop(&request);

    let mut response = original;
    rewrite_response(&mut response, version);
    assert_no_hop_by_hop(&response);
    let _ = refuses_token(&response);
});
