//! The deployment examples stay true to the product: every manifest under `examples/kubernetes/`
//! parses and is complete, the DaemonSet probes and mounts what popgate's config really uses, the
//! routes.yaml inside the ConfigMap loads with popgate's own config loader, and the Dockerfile
//! builds with `--locked` and runs as a non-root user.

mod examples_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use popgate::config::{self, Config, ConfigErrors};
use popgate::dataplane::server::DEFAULT_DRAIN_TIMEOUT;
use serde_json::Value;

use examples_support::{
    Doc, all_docs, dockerfile_stages, exec_form, final_stage_user, find, kubernetes_dir,
    manifest_files, only, parse_documents, repo_root, strings,
};

/// Where the DaemonSet's containers read routes.yaml (the Dockerfile's default too).
const CONFIG_PATH: &str = "/etc/popgate/routes.yaml";

// ---- manifests in general ----

#[test]
fn every_manifest_document_parses_and_names_its_kind() {
    let docs = all_docs();
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d.kind() == "Namespace")
        .map(Doc::name)
        .collect();
    for d in &docs {
        let at = format!("{} ({} {:?})", d.file, d.kind(), d.name());
        assert!(d.value.is_object(), "{at}: not a mapping");
        assert!(
            d.value["apiVersion"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{at}: no apiVersion"
        );
        assert!(!d.kind().is_empty(), "{at}: no kind");
        assert!(!d.name().is_empty(), "{at}: no metadata.name");
        if !matches!(d.kind(), "Namespace" | "Kustomization") {
            let ns = d
                .namespace()
                .unwrap_or_else(|| panic!("{at}: no metadata.namespace"));
            assert!(
                namespaces.contains(ns),
                "{at}: namespace {ns:?} is not defined here"
            );
        }
    }
    // namespace.yaml holds two documents: the multi-document split really happened.
    assert!(
        namespaces.contains("popgate") && namespaces.contains("legacy"),
        "{namespaces:?}"
    );
}

#[test]
fn multi_document_parsing_splits_and_rejects() {
    let docs = parse_documents("a: 1\n---\nb: 2\n---\n").unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["b"], 2);
    assert!(
        parse_documents("a: [1, 2\n").is_err(),
        "an unclosed flow sequence must not parse"
    );
}

#[test]
fn kustomization_lists_every_manifest_and_nothing_else() {
    let docs = all_docs();
    let k = only(&docs, "Kustomization");
    assert_eq!(k.file, "kustomization.yaml");
    let listed: BTreeSet<&str> = strings(&k.value["resources"]).into_iter().collect();
    let on_disk: BTreeSet<String> = manifest_files()
        .into_iter()
        .filter(|f| f != "kustomization.yaml")
        .collect();
    let on_disk: BTreeSet<&str> = on_disk.iter().map(String::as_str).collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml resources vs files in examples/kubernetes/"
    );
    // The image the kustomization rewrites is the one the DaemonSet uses.
    let images: Vec<&str> = k.value["images"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default();
    for c in all_containers(only(&docs, "DaemonSet")) {
        let image = c["image"].as_str().unwrap();
        let name = image.split(':').next().unwrap();
        assert!(
            images.contains(&name),
            "image {image} is not in kustomization images {images:?}"
        );
    }
}

// ---- the DaemonSet ----

fn pod_spec(d: &Doc) -> &Value {
    &d.value["spec"]["template"]["spec"]
}

fn containers<'a>(d: &'a Doc, field: &str) -> Vec<&'a Value> {
    pod_spec(d)[field]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn all_containers(d: &Doc) -> Vec<&Value> {
    let mut all = containers(d, "initContainers");
    all.extend(containers(d, "containers"));
    all
}

fn container<'a>(d: &'a Doc, field: &str, name: &str) -> &'a Value {
    containers(d, field)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{}: no {field} entry named {name:?}", d.file))
}

/// A probe's or rule's port: a number, or the name of one of the container's ports.
fn resolve_port(c: &Value, port: &Value) -> u64 {
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
fn config_arg(c: &Value) -> &str {
    let args = strings(&c["args"]);
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("a --config argument");
    args.get(at + 1).expect("a value after --config")
}

#[test]
fn daemonset_probes_hit_the_admin_listener() {
    let docs = all_docs();
    let ds = only(&docs, "DaemonSet");
    let popgate = container(ds, "containers", "popgate");
    let cfg = load_configmap_routes();
    let admin = cfg
        .admin
        .expect("the example config has an admin listener")
        .port() as u64;
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &popgate[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} path");
        assert_eq!(resolve_port(popgate, &get["port"]), admin, "{probe} port");
    }
    // The admin port is for the kubelet and Prometheus: never published on the node.
    for p in popgate["ports"].as_array().unwrap() {
        if p["containerPort"].as_u64() == Some(admin) {
            assert!(
                p.get("hostPort").is_none(),
                "admin port must not be a hostPort"
            );
        }
    }
}

#[test]
fn daemonset_publishes_the_proxy_listener_on_the_node() {
    let docs = all_docs();
    let ds = only(&docs, "DaemonSet");
    let popgate = container(ds, "containers", "popgate");
    let cfg = load_configmap_routes();
    assert_eq!(cfg.listeners.len(), 1);
    let listener = cfg.listeners[0].address;
    // A hostPort reaches the pod's IP, so the listener must not be bound to loopback.
    assert!(
        listener.ip().is_unspecified(),
        "listener {listener} is unreachable through a hostPort"
    );
    let proxy = popgate["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"].as_u64() == Some(listener.port() as u64))
        .expect("a container port for the proxy listener");
    assert_eq!(proxy["hostPort"].as_u64(), Some(listener.port() as u64));
    assert_ne!(
        pod_spec(ds)["hostNetwork"],
        true,
        "hostNetwork would bypass the NetworkPolicy"
    );
    // Two pods cannot hold one hostPort: a surge would never schedule.
    assert_eq!(
        ds.value["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"],
        0
    );
}

#[test]
fn daemonset_has_resources_and_locked_down_security_context() {
    let docs = all_docs();
    let ds = only(&docs, "DaemonSet");
    let pod = &pod_spec(ds)["securityContext"];
    for c in all_containers(ds) {
        let name = c["name"].as_str().unwrap();
        for kind in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    !c["resources"][kind][res].is_null(),
                    "{name}: no resources.{kind}.{res}"
                );
            }
        }
        let sc = &c["securityContext"];
        let either = |key: &str| {
            if sc[key].is_null() {
                &pod[key]
            } else {
                &sc[key]
            }
        };
        assert_eq!(either("runAsNonRoot"), true, "{name}: runAsNonRoot");
        assert!(
            either("runAsUser").as_u64().is_some_and(|u| u != 0),
            "{name}: runAsUser"
        );
        assert_eq!(
            either("seccompProfile")["type"],
            "RuntimeDefault",
            "{name}: seccomp"
        );
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{name}: readOnlyRootFilesystem"
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{name}: allowPrivilegeEscalation"
        );
        assert_ne!(sc["privileged"], true, "{name}: privileged");
        assert_eq!(
            strings(&sc["capabilities"]["drop"]),
            ["ALL"],
            "{name}: capabilities.drop"
        );
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{name}: adds capabilities"
        );
    }
    assert_eq!(pod_spec(ds)["automountServiceAccountToken"], false);
}

#[test]
fn daemonset_grace_period_outlasts_the_drain() {
    let docs = all_docs();
    let grace = pod_spec(only(&docs, "DaemonSet"))["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > DEFAULT_DRAIN_TIMEOUT.as_secs(),
        "grace {grace}s must exceed popgate's drain timeout {DEFAULT_DRAIN_TIMEOUT:?}"
    );
}

#[test]
fn init_container_checks_the_config_the_proxy_runs() {
    let docs = all_docs();
    let ds = only(&docs, "DaemonSet");
    let check = container(ds, "initContainers", "check");
    let popgate = container(ds, "containers", "popgate");
    assert_eq!(strings(&check["args"])[0], "check");
    assert_eq!(strings(&popgate["args"])[0], "run");
    assert_eq!(config_arg(check), CONFIG_PATH);
    assert_eq!(config_arg(popgate), CONFIG_PATH);
    assert_eq!(
        check["image"], popgate["image"],
        "check must run the same binary"
    );
    assert_eq!(
        check["volumeMounts"], popgate["volumeMounts"],
        "check must see the same files as the proxy"
    );
}

/// (secret or configMap name, items or data keys) of every volume, with its mount path in
/// `container`.
fn mounted_sources<'a>(ds: &'a Doc, c: &'a Value) -> Vec<(&'a str, &'a str, &'a str)> {
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
fn keys(d: &Doc) -> BTreeSet<&str> {
    let mut k = BTreeSet::new();
    for field in ["data", "stringData"] {
        if let Some(m) = d.value[field].as_object() {
            k.extend(m.keys().map(String::as_str));
        }
    }
    k
}

#[test]
fn every_mounted_configmap_and_secret_is_defined_here() {
    let docs = all_docs();
    let ds = only(&docs, "DaemonSet");
    for c in all_containers(ds) {
        for (kind, name, _) in mounted_sources(ds, c) {
            let src = find(&docs, kind, name);
            assert_eq!(src.namespace(), ds.namespace(), "{kind} {name} namespace");
        }
    }
    for v in pod_spec(ds)["volumes"].as_array().unwrap() {
        let (kind, name) = match (
            v["configMap"]["name"].as_str(),
            v["secret"]["secretName"].as_str(),
        ) {
            (Some(n), _) => ("ConfigMap", n),
            (_, Some(n)) => ("Secret", n),
            _ => continue,
        };
        let have = keys(find(&docs, kind, name));
        for item in v["configMap"]["items"].as_array().into_iter().flatten() {
            let key = item["key"].as_str().unwrap();
            assert!(have.contains(key), "{kind} {name} has no key {key:?}");
        }
    }
    let sa = pod_spec(ds)["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    find(&docs, "ServiceAccount", sa);
}

// ---- the routes.yaml inside the ConfigMap ----

/// The ConfigMap's routes.yaml text, checking the DaemonSet reads it from [`CONFIG_PATH`].
fn configmap_routes_text() -> String {
    let docs = all_docs();
    let ds = only(&docs, "DaemonSet");
    let popgate = container(ds, "containers", "popgate");
    let (dir, file) = CONFIG_PATH.rsplit_once('/').unwrap();
    let (_, name, _) = mounted_sources(ds, popgate)
        .into_iter()
        .find(|(kind, _, mount)| *kind == "ConfigMap" && *mount == dir)
        .unwrap_or_else(|| panic!("no ConfigMap mounted at {dir}"));
    find(&docs, "ConfigMap", name).value["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {name} has no {file}"))
        .to_string()
}

/// Every `(cert_file, key_file)` pair in a parsed routes.yaml, wherever it appears. Any other
/// `*_file(s)` key is refused, so a new kind of file in the example makes this test say so
/// instead of passing without it.
fn cert_key_pairs(v: &Value, out: &mut Vec<(String, String)>) {
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

fn self_signed_pair() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["popgate-example.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The example routes.yaml rewritten into a temp dir: each certificate/key path `/a/b` becomes
/// `{tmp}/a/b`, holding what `fill(cert_path, key_path)` returns.
struct RewrittenConfig {
    dir: tempfile::TempDir,
    routes: PathBuf,
    pairs: Vec<(String, String)>,
}

fn rewrite(fill: impl Fn(&str, &str) -> (String, String)) -> RewrittenConfig {
    let mut text = configmap_routes_text();
    let parsed: Value = serde_saphyr::from_str(&text).expect("the ConfigMap's routes.yaml is YAML");
    let mut pairs = Vec::new();
    cert_key_pairs(&parsed, &mut pairs);
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
            text = text.replace(path.as_str(), local.to_str().unwrap());
        }
    }
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, text).unwrap();
    RewrittenConfig { dir, routes, pairs }
}

/// popgate's own loader, with an empty environment so that the machine's AZURE_* variables
/// cannot change the result.
fn load(path: &Path) -> Result<Config, ConfigErrors> {
    config::load_with_env(path, &|_| None)
}

fn load_configmap_routes() -> Config {
    let r = rewrite(|_, _| self_signed_pair());
    load(&r.routes).unwrap_or_else(|e| panic!("the ConfigMap's routes.yaml does not load:\n{e}"))
}

#[test]
fn configmap_routes_load_with_popgates_config_loader() {
    let r = rewrite(|_, _| self_signed_pair());
    let cfg = load(&r.routes).unwrap_or_else(|e| panic!("the ConfigMap's routes.yaml:\n{e}"));
    assert!(
        !r.pairs.is_empty(),
        "the example should use the Secret's certificate"
    );
    let names: Vec<&str> = cfg.routes.iter().map(|route| route.name.as_str()).collect();
    assert_eq!(names, ["graph", "vault", "storage"]);
    assert!(r.dir.path().exists());
}

#[test]
fn configmap_certificate_paths_are_files_of_the_mounted_secret() {
    let docs = all_docs();
    let ds = only(&docs, "DaemonSet");
    let popgate = container(ds, "containers", "popgate");
    let secrets: Vec<(&str, &str)> = mounted_sources(ds, popgate)
        .into_iter()
        .filter(|(kind, _, _)| *kind == "Secret")
        .map(|(_, name, mount)| (name, mount))
        .collect();
    let parsed: Value = serde_saphyr::from_str(&configmap_routes_text()).unwrap();
    let mut pairs = Vec::new();
    cert_key_pairs(&parsed, &mut pairs);
    for path in pairs.iter().flat_map(|(c, k)| [c, k]) {
        let (dir, file) = path.rsplit_once('/').unwrap();
        let (secret, _) = secrets
            .iter()
            .find(|(_, mount)| *mount == dir)
            .unwrap_or_else(|| panic!("{path}: no Secret is mounted at {dir}"));
        let have = keys(find(&docs, "Secret", secret));
        assert!(
            have.contains(file),
            "{path}: Secret {secret} has no key {file:?}"
        );
    }
}

#[test]
fn the_loader_refuses_the_example_with_a_mismatched_key() {
    // Proves the loading test above can fail: the same example with a key that does not match
    // its certificate is refused, pointing at the key_file line (paths are rewritten in place,
    // so line numbers are the ConfigMap's).
    let r = rewrite(|_, _| (self_signed_pair().0, self_signed_pair().1));
    let errors = load(&r.routes)
        .expect_err("a mismatched key must be refused")
        .to_string();
    let (_, key) = &r.pairs[0];
    let line = line_of(&configmap_routes_text(), &format!("key_file: {key}"));
    assert!(errors.contains(&format!("routes.yaml:{line}:")), "{errors}");
    assert!(
        errors.contains("does not match the certificate"),
        "{errors}"
    );
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not found"))
        + 1
}

#[test]
fn the_placeholder_secret_fails_popgate_check() {
    // What the init container sees until the placeholder Secret is replaced: exit 2, naming the
    // certificate file.
    let docs = all_docs();
    let secret = only(&docs, "Secret");
    let data = &secret.value["stringData"];
    let r = rewrite(|_, _| {
        (
            data["tls.crt"].as_str().unwrap().to_string(),
            data["tls.key"].as_str().unwrap().to_string(),
        )
    });
    let errors = load(&r.routes)
        .expect_err("placeholders must not load")
        .to_string();
    let (cert, _) = &r.pairs[0];
    let line = line_of(&configmap_routes_text(), &format!("cert_file: {cert}"));
    assert!(errors.contains(&format!("routes.yaml:{line}:")), "{errors}");
    assert!(errors.contains("has no CERTIFICATE PEM block"), "{errors}");
}

// ---- NetworkPolicy and the legacy app ----

#[test]
fn networkpolicy_selects_popgate_and_allows_only_what_it_needs() {
    let docs = all_docs();
    let np = find(&docs, "NetworkPolicy", "popgate");
    let ds = only(&docs, "DaemonSet");
    let pod_labels = &ds.value["spec"]["template"]["metadata"]["labels"];
    for (k, v) in np.value["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &pod_labels[k], v,
            "NetworkPolicy selects {k}={v}, the pods do not carry it"
        );
    }
    assert_eq!(
        strings(&np.value["spec"]["policyTypes"]),
        ["Ingress", "Egress"]
    );

    let egress = np.value["spec"]["egress"].as_array().unwrap();
    let allows = |cidr: &str, port: u64, proto: &str| {
        egress.iter().any(|rule| {
            let to_ok = rule["to"]
                .as_array()
                .is_some_and(|to| to.iter().any(|t| t["ipBlock"]["cidr"] == cidr));
            let port_ok = rule["ports"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["port"].as_u64() == Some(port) && p["protocol"] == proto)
            });
            to_ok && port_ok
        })
    };
    assert!(allows("169.254.169.254/32", 80, "TCP"), "IMDS");
    assert!(
        allows("0.0.0.0/0", 443, "TCP"),
        "HTTPS to Entra ID and upstreams"
    );
    let dns = egress.iter().any(|rule| {
        rule["ports"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["port"] == 53 && p["protocol"] == "UDP"))
    });
    assert!(dns, "DNS");
}

#[test]
fn legacy_app_cannot_reach_imds_itself() {
    let docs = all_docs();
    let app = find(&docs, "Deployment", "legacy-app");
    let np = find(&docs, "NetworkPolicy", "legacy-app-no-imds");
    assert_eq!(np.namespace(), app.namespace());
    let labels = &app.value["spec"]["template"]["metadata"]["labels"];
    for (k, v) in np.value["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &labels[k], v,
            "the policy selects {k}={v}; the app's pods lack it"
        );
    }
    assert_eq!(strings(&np.value["spec"]["policyTypes"]), ["Egress"]);
    for rule in np.value["spec"]["egress"].as_array().unwrap() {
        for to in rule["to"]
            .as_array()
            .expect("every egress rule names its peers")
        {
            let except = strings(&to["ipBlock"]["except"]);
            assert!(
                except.contains(&"169.254.169.254/32"),
                "egress peer {to} lets the app reach IMDS"
            );
        }
    }
}

#[test]
fn legacy_app_reaches_its_nodes_popgate_through_http_proxy() {
    let docs = all_docs();
    let app = find(&docs, "Deployment", "legacy-app");
    let np = find(&docs, "NetworkPolicy", "popgate");
    let cfg = load_configmap_routes();
    let port = cfg.listeners[0].address.port();
    let c = &app.value["spec"]["template"]["spec"]["containers"][0];
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("legacy app has no {name}"))
    };
    assert_eq!(
        env("NODE_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    let proxy = format!("http://$(NODE_IP):{port}");
    assert_eq!(env("HTTP_PROXY")["value"], proxy.as_str());
    assert_eq!(env("http_proxy")["value"], proxy.as_str());
    for name in ["NO_PROXY", "no_proxy"] {
        let v = env(name)["value"].as_str().unwrap();
        assert!(v.split(',').any(|d| d == ".svc"), "{name}={v}");
    }
    // The NetworkPolicy's client label is on the app's pods.
    let labels = &app.value["spec"]["template"]["metadata"]["labels"];
    let ingress = &np.value["spec"]["ingress"][0];
    let selector = ingress["from"][0]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "legacy app lacks the client label {k}");
    }
    assert_eq!(ingress["ports"][0]["port"].as_u64(), Some(port as u64));
    // It calls Graph in plain HTTP, and a route in the ConfigMap takes that host.
    let script = strings(&c["args"]).join("\n");
    assert!(
        script.contains("http://graph.microsoft.com/v1.0/"),
        "{script}"
    );
    assert!(
        cfg.routes.iter().any(|r| r.name == "graph"),
        "no route for graph.microsoft.com"
    );
}

// ---- Dockerfile ----

fn dockerfile() -> String {
    let path = repo_root().join("Dockerfile");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn dockerfile_final_stage_is_small_and_non_root() {
    let text = dockerfile();
    let user = final_stage_user(&text).unwrap_or_else(|e| panic!("Dockerfile: {e}"));
    // Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert!(
        user.split(':')
            .all(|p| p.parse::<u32>().is_ok_and(|n| n != 0)),
        "USER {user}"
    );

    let stages = dockerfile_stages(&text);
    assert!(stages.len() >= 2, "a multi-stage build");
    let last = stages.last().unwrap();
    let from = &last[0].args;
    assert!(
        !from.contains("rust:"),
        "the runtime must not be the toolchain image: {from}"
    );
    let get = |kw: &str| {
        last.iter()
            .rev()
            .find(|i| i.keyword == kw)
            .map(|i| i.args.clone())
    };
    assert_eq!(exec_form(&get("ENTRYPOINT").unwrap()).unwrap(), ["popgate"]);
    assert_eq!(
        exec_form(&get("CMD").unwrap()).unwrap(),
        ["run", "--config", CONFIG_PATH]
    );
    assert!(
        last.iter()
            .any(|i| i.keyword == "COPY" && i.args.starts_with("--from=")),
        "the runtime copies the binary from the build stage"
    );
    let cfg = load_configmap_routes();
    let exposed: Vec<u16> = get("EXPOSE")
        .unwrap()
        .split_whitespace()
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert!(
        exposed.contains(&cfg.listeners[0].address.port()),
        "{exposed:?}"
    );
    assert!(exposed.contains(&cfg.admin.unwrap().port()), "{exposed:?}");
}

#[test]
fn dockerfile_builds_release_with_locked_dependencies() {
    let stages = dockerfile_stages(&dockerfile());
    let builds: Vec<&String> = stages
        .iter()
        .flatten()
        .filter(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .map(|i| &i.args)
        .collect();
    assert!(!builds.is_empty(), "no `cargo build` step");
    for b in builds {
        let words: Vec<&str> = b.split_whitespace().collect();
        assert!(
            words.contains(&"--locked"),
            "cargo build without --locked: {b}"
        );
        assert!(
            words.contains(&"--release"),
            "cargo build without --release: {b}"
        );
    }
}

#[test]
fn final_stage_user_check_refuses_root_and_missing_user() {
    let build = "FROM rust:1 AS build\nUSER 1000\nRUN cargo build --locked\n";
    assert!(final_stage_user(&format!("{build}FROM scratch\nUSER root\n")).is_err());
    assert!(final_stage_user(&format!("{build}FROM scratch\nUSER 0:0\n")).is_err());
    // A USER in an earlier stage does not carry over.
    assert!(final_stage_user(&format!("{build}FROM scratch\nCOPY a b\n")).is_err());
    assert!(final_stage_user("# nothing\n").is_err());
    let ok = format!("{build}FROM scratch\nUSER 0\nRUN x \\\n  y\nUSER 65532:65532\n");
    assert_eq!(final_stage_user(&ok).unwrap(), "65532:65532");
}

#[test]
fn dockerignore_keeps_build_output_and_git_out_of_the_context() {
    let path = repo_root().join(".dockerignore");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rules: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target/", ".git"] {
        assert!(rules.contains(&needed), ".dockerignore lacks {needed}");
    }
    // Cargo.lock must reach the build, or --locked fails.
    assert!(!rules.iter().any(|r| r.contains("Cargo.lock")), "{rules:?}");
}

#[test]
fn examples_directory_is_where_the_tests_look() {
    assert!(kubernetes_dir().is_dir());
}
