//! The routes.yaml inside the example ConfigMap, rewritten so popgate's own loader can read it
//! outside a cluster.

use std::path::{Path, PathBuf};

use popgate::config::{self, Config, ConfigErrors};
use serde_json::Value;

use super::manifests::{Doc, all_docs, find, only};
use super::pods::{container, mounted_sources};

/// Where the DaemonSet's containers read routes.yaml (the Dockerfile's default too).
pub const CONFIG_PATH: &str = "/etc/popgate/routes.yaml";

/// The example's routes.yaml text, from the ConfigMap the DaemonSet mounts at [`CONFIG_PATH`].
pub fn configmap_routes_text() -> String {
    routes_text_in(&all_docs(), "DaemonSet")
}

/// The routes.yaml text of the ConfigMap that the only `workload` (`DaemonSet`, `Deployment`)
/// of `docs` mounts at [`CONFIG_PATH`].
pub fn routes_text_in(docs: &[Doc], workload: &str) -> String {
    let ds = only(docs, workload);
    let popgate = container(ds, "containers", "popgate");
    let (dir, file) = CONFIG_PATH.rsplit_once('/').unwrap();
    let (_, name, _) = mounted_sources(ds, popgate)
        .into_iter()
        .find(|(kind, _, mount)| *kind == "ConfigMap" && *mount == dir)
        .unwrap_or_else(|| panic!("no ConfigMap mounted at {dir}"));
    find(docs, "ConfigMap", name).value["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {name} has no {file}"))
        .to_string()
}

/// Every `(cert_file, key_file)` pair in a parsed routes.yaml, wherever it appears. Any other
/// `*_file(s)` key is refused, so a new kind of file in the example makes this test say so
/// instead of passing without it.
pub fn cert_key_pairs(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let known = matches!(k.as_str(), "cert_file" | "key_file");
                assert!(
                    known || !(k.ends_with("_file") || k.ends_with("_files")),
                    "routes.yaml names a `{k}`; teach this test to provide it"
                );
                cert_key_pairs(child, out);
            }
            if let (Some(c), Some(k)) = (m.get("cert_file"), m.get("key_file")) {
                out.push((c.as_str().unwrap().into(), k.as_str().unwrap().into()));
            }
        }
        Value::Array(a) => a.iter().for_each(|c| cert_key_pairs(c, out)),
        _ => {}
    }
}

/// A fresh self-signed certificate and its matching key, as PEM.
pub fn self_signed_pair() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["popgate-example.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The example routes.yaml rewritten into a temp dir: each certificate/key path `/a/b` becomes
/// `{tmp}/a/b`, holding what `fill(cert_path, key_path)` returns.
pub struct RewrittenConfig {
    /// The temp dir; the files live as long as this.
    pub dir: tempfile::TempDir,
    /// The rewritten routes.yaml.
    pub routes: PathBuf,
    /// The `(cert_file, key_file)` paths as the ConfigMap names them.
    pub pairs: Vec<(String, String)>,
}

/// Writes the example routes.yaml into a temp dir with its certificate/key files provided by
/// `fill`.
pub fn rewrite(fill: impl Fn(&str, &str) -> (String, String)) -> RewrittenConfig {
    rewrite_text(configmap_routes_text(), fill)
}

/// [`rewrite`] for any routes.yaml `text` naming certificate files by absolute path.
pub fn rewrite_text(
    mut text: String,
    fill: impl Fn(&str, &str) -> (String, String),
) -> RewrittenConfig {
    let parsed: Value = serde_saphyr::from_str(&text).expect("the ConfigMap's routes.yaml is YAML");
    let mut pairs = Vec::new();
    cert_key_pairs(&parsed, &mut pairs);
    // Two identities may share one certificate; rewriting a path twice would nest the temp dir.
    pairs.sort();
    pairs.dedup();
    let dir = tempfile::tempdir().unwrap();
    for (cert, key) in &pairs {
        let (cert_pem, key_pem) = fill(cert, key);
        for (path, pem) in [(cert, cert_pem), (key, key_pem)] {
            assert!(
                path.starts_with('/'),
                "{path}: mounted files are named by absolute path"
            );
            let local = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(local.parent().unwrap()).unwrap();
            std::fs::write(&local, pem).unwrap();
            if path == key {
                // As the DaemonSet mounts it (`defaultMode: 0440`): popgate refuses a key any
                // user may read.
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o440)).unwrap();
            }
            text = text.replace(path.as_str(), local.to_str().unwrap());
        }
    }
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, text).unwrap();
    RewrittenConfig { dir, routes, pairs }
}

/// popgate's own loader, with an empty environment so that the machine's AZURE_* variables
/// cannot change the result.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    config::load_with_env(path, &|_| None)
}

/// The example routes.yaml, loaded with generated certificates; panics with every error.
pub fn load_configmap_routes() -> Config {
    let r = rewrite(|_, _| self_signed_pair());
    load(&r.routes).unwrap_or_else(|e| panic!("the ConfigMap's routes.yaml does not load:\n{e}"))
}

/// The 1-based line of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not found"))
        + 1
}
