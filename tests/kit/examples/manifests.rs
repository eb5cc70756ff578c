//! The Kubernetes manifests as JSON values: `examples/kubernetes/` and the `deploy/` overlays,
//! rendered with `kubectl kustomize` (what `kubectl apply -k` would send), and the files on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use crate::kit::repo_root;

/// `examples/kubernetes/` in this checkout.
pub fn kubernetes_dir() -> PathBuf {
    repo_root().join("examples/kubernetes")
}

/// `deploy/` in this checkout.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// The overlays under `deploy/overlays/`, by name.
pub const OVERLAYS: [&str; 2] = ["daemonset", "gateway"];

/// One rendered object (or one YAML document of a file).
pub struct Doc {
    /// Where it came from: the kustomization directory rendered, or the file name.
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

/// The names of every `*.yaml` / `*.yml` file in `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    names
}

/// The names of every `*.yaml` / `*.yml` file in `examples/kubernetes/`, sorted.
pub fn manifest_files() -> Vec<String> {
    yaml_files(&kubernetes_dir())
}

/// `kubectl kustomize DIR`'s output. kubectl is required (CI installs Debian's
/// `kubernetes-client`): without it these tests fail, never pass by skipping. Cached per
/// directory.
pub fn kustomize(dir: &Path) -> String {
    static RENDERED: OnceLock<Mutex<BTreeMap<PathBuf, String>>> = OnceLock::new();
    let cache = RENDERED.get_or_init(Default::default);
    if let Some(text) = cache.lock().unwrap().get(dir) {
        return text.clone();
    }
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `kubectl kustomize {}`: {e}. The manifest tests need kubectl \
                 (Debian: apt-get install kubernetes-client; see README.md)",
                dir.display()
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    cache.lock().unwrap().insert(dir.to_owned(), text.clone());
    text
}

/// Every object `kubectl kustomize DIR` renders.
pub fn render(dir: &Path) -> Vec<Doc> {
    let text = kustomize(dir);
    let label = dir
        .strip_prefix(repo_root())
        .unwrap_or(dir)
        .display()
        .to_string();
    let docs = parse_documents(&text).unwrap_or_else(|e| panic!("{label}: render not YAML: {e}"));
    assert!(!docs.is_empty(), "{label}: renders nothing");
    docs.into_iter()
        .map(|value| Doc {
            file: label.clone(),
            value,
        })
        .collect()
}

/// Every document of every YAML file in `dir` (kustomizations included), unrendered.
pub fn file_docs(dir: &Path) -> Vec<Doc> {
    let mut out = Vec::new();
    for file in yaml_files(dir) {
        let path = dir.join(&file);
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

/// Parses `text` as a stream of YAML documents; empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Every object the example (`examples/kubernetes/`: the daemonset overlay plus the demo app)
/// renders to.
pub fn all_docs() -> Vec<Doc> {
    render(&kubernetes_dir())
}

/// Every object `deploy/overlays/{overlay}` renders to.
pub fn overlay_docs(overlay: &str) -> Vec<Doc> {
    render(&deploy_dir().join("overlays").join(overlay))
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
