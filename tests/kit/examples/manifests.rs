//! Every Kubernetes manifest under `examples/kubernetes/` as JSON values.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::kit::repo_root;

/// `examples/kubernetes/` in this checkout.
pub fn kubernetes_dir() -> PathBuf {
    repo_root().join("examples/kubernetes")
}

/// One YAML document of one manifest file.
pub struct Doc {
    /// The file name, e.g. `daemonset.yaml`.
    pub file: String,
    /// The document.
    pub value: Value,
}

impl Doc {
    /// `kind`, or empty.
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    /// `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    /// `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }
}

/// The names of every `*.yaml` / `*.yml` file in `examples/kubernetes/`, sorted.
pub fn manifest_files() -> Vec<String> {
    let dir = kubernetes_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    names
}

/// Parses `text` as a stream of YAML documents; empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Every document of every manifest file; panics naming the file that does not parse.
pub fn all_docs() -> Vec<Doc> {
    let mut out = Vec::new();
    for file in manifest_files() {
        let path = kubernetes_dir().join(&file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let docs = parse_documents(&text).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
        assert!(!docs.is_empty(), "{file}: no YAML document");
        out.extend(docs.into_iter().map(|value| Doc {
            file: file.clone(),
            value,
        }));
    }
    out
}

/// The only object of `kind` named `name`; panics if there is none or more than one.
pub fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == kind && d.name() == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} {name:?}");
    found[0]
}

/// The only object of `kind`; panics if there is none or more than one.
pub fn only<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs.iter().filter(|d| d.kind() == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

/// The strings of a JSON array (empty if `v` is not an array of strings).
pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}
