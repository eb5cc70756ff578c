//! The Kubernetes example stays true to the product: every manifest under `examples/kubernetes/`
//! parses and is complete, the DaemonSet probes and mounts what popgate's config really uses, and
//! the routes.yaml inside the ConfigMap loads with popgate's own config loader.

use std::collections::BTreeSet;

use popgate::config::limits::DEFAULT_DRAIN_DELAY;
use popgate::dataplane::server::DEFAULT_DRAIN_TIMEOUT;
use serde_json::Value;

use crate::kit::examples::manifests::{
    Doc, OVERLAYS, all_docs, deploy_dir, file_docs, find, kubernetes_dir, only, parse_documents,
    strings, yaml_files,
};
use crate::kit::examples::pods::{
    all_containers, config_arg, container, keys, mounted_sources, pod_spec, resolve_port,
};
use crate::kit::examples::routes::{
    CONFIG_PATH, cert_key_pairs, configmap_routes_text, line_of, load, load_configmap_routes,
    rewrite, self_signed_pair,
};

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
        if !matches!(d.kind(), "Namespace" | "PriorityClass") {
            let ns = d
                .namespace()
                .unwrap_or_else(|| panic!("{at}: no metadata.namespace"));
            assert!(
                namespaces.contains(ns),
                "{at}: namespace {ns:?} is not defined here"
            );
        }
    }
    // The render holds both namespaces: the multi-document split really happened.
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
fn every_kustomization_lists_every_file_beside_it_and_nothing_else() {
    // examples/kubernetes, deploy/base and each overlay: a manifest left out of its
    // kustomization would silently not be applied.
    let mut dirs = vec![
        kubernetes_dir(),
        deploy_dir().join("base"),
        deploy_dir().join("cluster"),
    ];
    dirs.extend(OVERLAYS.map(|o| deploy_dir().join("overlays").join(o)));
    for dir in dirs {
        let docs = file_docs(&dir);
        let k = only(&docs, "Kustomization");
        assert_eq!(k.file, "kustomization.yaml");
        // `bases` name the directories built on (outside this one).
        assert!(
            strings(&k.value["resources"])
                .iter()
                .all(|r| !r.starts_with(".."))
        );
        let mut listed: BTreeSet<String> = strings(&k.value["resources"])
            .into_iter()
            .map(String::from)
            .collect();
        for generator in k.value["configMapGenerator"]
            .as_array()
            .into_iter()
            .flatten()
        {
            listed.extend(strings(&generator["files"]).into_iter().map(String::from));
        }
        let on_disk: BTreeSet<String> = yaml_files(&dir)
            .into_iter()
            .filter(|f| f != "kustomization.yaml")
            .collect();
        assert_eq!(listed, on_disk, "{}: kustomization vs files", dir.display());
    }
    // The example is the packaged DaemonSet, not a copy of it.
    let docs = file_docs(&kubernetes_dir());
    let k = only(&docs, "Kustomization");
    assert!(
        strings(&k.value["bases"]).contains(&"../../deploy/overlays/daemonset"),
        "examples/kubernetes must build on deploy/overlays/daemonset"
    );
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
fn daemonset_grace_period_outlasts_the_drain_delay_and_timeout() {
    let docs = all_docs();
    let grace = pod_spec(only(&docs, "DaemonSet"))["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let cfg = load_configmap_routes();
    let needed = cfg.drain.delay + cfg.timeouts.drain;
    assert!(
        grace > needed.as_secs(),
        "grace {grace}s must exceed drain.delay + timeouts.drain = {needed:?}"
    );
    // The defaults fit Kubernetes' default 30 s grace period too.
    assert!(DEFAULT_DRAIN_DELAY + DEFAULT_DRAIN_TIMEOUT < std::time::Duration::from_secs(30));
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
