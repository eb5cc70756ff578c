//! Token endpoint answers: `parse_token_response` (Bearer and mTLS PoP, with a real binding
//! certificate) and `EstsError::parse` on arbitrary status + body. Never a panic.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use popgate::certs::binding::BindingCert;
use popgate::identity::ests_error::EstsError;
use popgate::identity::token::TokenType;
use popgate::identity::token_response::parse_token_response;

/// A self-signed binding certificate, made once: PoP parsing needs the presented certificate.
fn binding() -> &'static BindingCert {
    static CERT: OnceLock<BindingCert> = OnceLock::new();
    CERT.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["fuzz.local".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        BindingCert::from_der(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("binding cert")
    })
}

/// Statuses worth telling apart; the selector byte picks one.
const STATUSES: [u16; 8] = [200, 200, 200, 400, 401, 429, 500, 503];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = StatusCode::from_u16(STATUSES[usize::from(selector & 7)]).expect("status");
    // A fixed clock keeps runs reproducible; the second clock is near the u64 edge.
    let now = if selector & 0x40 == 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    } else {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 64)
    };
    let (requested, cert) = if selector & 0x80 == 0 {
        (TokenType::Bearer, None)
    } else {
        (TokenType::MtlsPop, Some(binding().clone()))
    };
    let _ = parse_token_response(status, body, requested, now, cert);
    let _ = EstsError::parse(status, body);
});
