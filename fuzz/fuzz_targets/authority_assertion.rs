//! The local authority's parsers of untrusted text: client assertions (`Jws::parse` and the full
//! private_key_jwt check against a registered certificate), access tokens
//! (`SigningKeys::verify`) and IMDSv2 CSRs (`verify_csr`). Never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use popgate_authority::SigningKeys;
use popgate_authority::directory::RegisteredCertificate;
use popgate_authority::imds::csr_verify::{ExpectedCsr, verify_csr};
use popgate_authority::token_endpoint::assertion::{
    Expected, Jws, ReplayCache, verify_private_key_jwt,
};

/// The golden IMDSv2 certificate: its x5t#S256 (`MLZLzUFU…`) is fixed, so seeds can name it and
/// reach the signature and claim checks.
const REGISTERED_DER: &[u8] = include_bytes!("../seeds/authority_assertion/imdsv2-issued-cert.der");

struct State {
    keys: SigningKeys,
    registered: Vec<RegisteredCertificate>,
    replay: ReplayCache,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| State {
        keys: SigningKeys::generate().expect("signing keys"),
        registered: vec![RegisteredCertificate::new(REGISTERED_DER).expect("golden cert")],
        replay: ReplayCache::default(),
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let state = state();
    if let Ok(jws) = Jws::parse(&text) {
        let _ = jws.claim_str("iss");
        let expected = Expected {
            client_id: "00000000-0000-0000-0000-000000000001",
            audience: "https://login.microsoftonline.com/tenant/oauth2/v2.0/token",
            registered: &state.registered,
            now: 1_700_000_000,
        };
        let _ = verify_private_key_jwt(&jws, &expected, &state.replay);
    }
    let _ = state.keys.verify(&text, "https://resource.local");
    let expected = ExpectedCsr {
        tenant_id: "tenant",
        client_id: "client",
        cu_id_json: r#"{"vmId":"vm"}"#,
    };
    let _ = verify_csr(&text, &expected);
});
