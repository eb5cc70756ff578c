//! Arbitrary bytes as a routes.yaml: `popgate::config::load_with_env` must return a config or an
//! error, never panic (YAML parsing, schema, semantic validation, env overrides).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// One temp directory per process; every input overwrites the same file in it.
fn config_path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir for the fuzzed config");
        let path = dir.path().join("routes.yaml");
        (dir, path)
    })
    .1
}

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
    let path = config_path();
    std::fs::write(path, data).expect("write the fuzzed config");
    let _ = popgate::config::load_with_env(path, &env);
});
