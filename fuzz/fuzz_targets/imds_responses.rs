//! IMDS answers: v1 and App Service token responses, IMDSv2 platform metadata (with an arbitrary
//! `Server` header and status) and issuecredential, including turning an issued certificate into
//! a binding. Never a panic.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use popgate::identity::csr::BindingKey;
use popgate::identity::{app_service, imds_v1, imds_v2};

const STATUSES: [u16; 8] = [200, 200, 200, 404, 400, 410, 429, 500];

/// An RSA-2048 binding key, generated once (it takes a while).
fn key() -> &'static BindingKey {
    static KEY: OnceLock<BindingKey> = OnceLock::new();
    KEY.get_or_init(|| BindingKey::generate().expect("binding key"))
}

fuzz_target!(|data: &[u8]| {
    // Layout: selector byte, header-length byte, that many bytes of `Server`, then the body.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&server_len, rest)) = rest.split_first() else {
        return;
    };
    let split = usize::from(server_len).min(rest.len());
    let (server, body) = rest.split_at(split);
    let status = StatusCode::from_u16(STATUSES[usize::from(selector & 7)]).expect("status");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);

    let _ = imds_v1::parse_token_response(status, body, now);
    let _ = app_service::parse_token_response(status, body, now);

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(server) {
        headers.insert(http::header::SERVER, value);
    }
    let _ = imds_v2::parse_platform_metadata(status, &headers, body);
    if let Ok(issued) = imds_v2::parse_issued_credential(status, body) {
        let _ = issued.token_endpoint();
        let _ = issued.token_request("https://resource.local/.default");
        let _ = issued.binding_cert(key());
    }
});
