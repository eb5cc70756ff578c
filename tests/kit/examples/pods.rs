//! Reading the DaemonSet's pod template: containers, ports, volumes and what they mount.

use std::collections::BTreeSet;

use serde_json::Value;

use super::manifests::{Doc, strings};

/// The pod template's spec.
pub fn pod_spec(d: &Doc) -> &Value {
    &d.value["spec"]["template"]["spec"]
}

/// The entries of `field` (`containers` or `initContainers`) of the pod template.
pub fn containers<'a>(d: &'a Doc, field: &str) -> Vec<&'a Value> {
    pod_spec(d)[field]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Init containers, then containers.
pub fn all_containers(d: &Doc) -> Vec<&Value> {
    let mut all = containers(d, "initContainers");
    all.extend(containers(d, "containers"));
    all
}

/// The `field` entry named `name`; panics naming the file if there is none.
pub fn container<'a>(d: &'a Doc, field: &str, name: &str) -> &'a Value {
    containers(d, field)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{}: no {field} entry named {name:?}", d.file))
}

/// A probe's or rule's port: a number, or the name of one of the container's ports.
pub fn resolve_port(c: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port
        .as_str()
        .unwrap_or_else(|| panic!("port {port} is neither number nor name"));
    c["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name:?}"))
}

/// The `--config FILE` argument of a container.
pub fn config_arg(c: &Value) -> &str {
    let args = strings(&c["args"]);
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("a --config argument");
    args.get(at + 1).expect("a value after --config")
}

/// `(kind, name, mount path)` of every ConfigMap or Secret volume container `c` mounts; refuses
/// `subPath` mounts and any other volume kind.
pub fn mounted_sources<'a>(ds: &'a Doc, c: &'a Value) -> Vec<(&'a str, &'a str, &'a str)> {
    let mut out = Vec::new();
    for m in c["volumeMounts"].as_array().unwrap() {
        assert!(
            m["subPath"].is_null(),
            "subPath mounts never see updates: {m}"
        );
        let vol = pod_spec(ds)["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("volumeMount {} has no volume", m["name"]));
        let mount = m["mountPath"].as_str().unwrap();
        if let Some(name) = vol["configMap"]["name"].as_str() {
            out.push(("ConfigMap", name, mount));
        } else if let Some(name) = vol["secret"]["secretName"].as_str() {
            out.push(("Secret", name, mount));
        } else {
            panic!("unexpected volume kind: {vol}");
        }
    }
    out
}

/// The file names an object projects into a volume: its `data` and `stringData` keys.
pub fn keys(d: &Doc) -> BTreeSet<&str> {
    let mut k = BTreeSet::new();
    for field in ["data", "stringData"] {
        if let Some(m) = d.value[field].as_object() {
            k.extend(m.keys().map(String::as_str));
        }
    }
    k
}
