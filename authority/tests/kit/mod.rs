//! The authority's test kit: every test binary under `authority/tests/` declares it
//! (`#[path = "../kit/mod.rs"] mod kit;`). `token` drives the token endpoint, resource and admin
//! API over mTLS; `imds` drives the IMDS listener and builds CSRs. Only loopback addresses are used.
#![allow(dead_code, unused_imports)] // Each test binary uses a different subset.

use std::time::{SystemTime, UNIX_EPOCH};

pub mod imds;
pub mod token;

/// The test tenant.
pub const TENANT: &str = "751a212b-4003-416e-b600-e1f48e40db9f";

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A golden vector from the repository's tests/vectors (see its README for where each came from).
pub fn vector(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The keys of a JSON object, sorted.
pub fn sorted_keys(v: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .expect("a JSON object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}
