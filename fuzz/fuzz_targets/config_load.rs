//! Arbitrary bytes as a routes.yaml: `popgate::config::load_with_env` must return a config or an
//! error, never panic (YAML parsing, schema, semantic validation, env overrides).
#![no_main]

#[path = "input_file.rs"]
mod input_file;

use libfuzzer_sys::fuzz_target;

/// A fixed environment: touching the process environment would make runs irreproducible.
fn env(name: &str) -> Option<String> {
    match name {
        "IDENTITY_ENDPOINT" => Some("http://127.0.0.1:1/msi/token".into()),
        "IDENTITY_HEADER" => Some("fuzz-secret".into()),
        "AZURE_POD_IDENTITY_AUTHORITY_HOST" => Some("http://127.0.0.1:2".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let path = input_file::path("routes.yaml");
    std::fs::write(path, data).expect("write the fuzzed config");
    let _ = popgate::config::load_with_env(path, &env);
});
