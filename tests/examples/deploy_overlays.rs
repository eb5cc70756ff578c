//! The packaged install, `deploy/`: both overlays render with `kubectl kustomize`, every rendered
//! object is well formed for its kind (apiVersion, names, namespaces) and every reference in it
//! resolves inside the render; the routes.yaml each renders loads with popgate's own loader and
//! validates against docs/routes.schema.json; the
//! drain fits the grace period; and each overlay is what it claims (a per-node DaemonSet; a
//! gateway Deployment behind a Service with a PodDisruptionBudget and an autoscaler).
//!
//! The objects are checked against the Kubernetes OpenAPI schemas by `.ci/run` (the pinned
//! `kubernetes-validate`, which is not a cargo dependency); the checks below are the fields and
//! references the manifests rely on, per kind.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::kit::examples::manifests::{Doc, OVERLAYS, find, only, overlay_docs, strings};
use crate::kit::examples::pods::{
    all_containers, container, keys, mounted_sources, pod_spec, resolve_port,
};
use crate::kit::examples::routes::{load, rewrite_text, routes_text_in, self_signed_pair};
use popgate::config::Config;

/// Every kind the overlays may render, its apiVersion, and whether it is namespaced.
const KINDS: &[(&str, &str, bool)] = &[
    ("Namespace", "v1", false),
    ("ServiceAccount", "v1", true),
    ("ConfigMap", "v1", true),
    ("Secret", "v1", true),
    ("Service", "v1", true),
    ("PriorityClass", "scheduling.k8s.io/v1", false),
    ("NetworkPolicy", "networking.k8s.io/v1", true),
    ("DaemonSet", "apps/v1", true),
    ("Deployment", "apps/v1", true),
    ("PodDisruptionBudget", "policy/v1", true),
    ("HorizontalPodAutoscaler", "autoscaling/v2", true),
];

/// The workload kind of each overlay.
fn workload_kind(overlay: &str) -> &'static str {
    match overlay {
        "daemonset" => "DaemonSet",
        "gateway" => "Deployment",
        other => panic!("unknown overlay {other}"),
    }
}

/// A DNS-1123 subdomain, as Kubernetes requires of object names.
fn dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// The overlay's routes.yaml, loaded with generated certificates in place of the Secret's.
fn loaded_routes(docs: &[Doc], overlay: &str) -> Config {
    let text = routes_text_in(docs, workload_kind(overlay));
    let r = rewrite_text(text, |_, _| self_signed_pair());
    load(&r.routes).unwrap_or_else(|e| panic!("{overlay}: the rendered routes.yaml:\n{e}"))
}

/// Whether `selector` (matchLabels) selects pods labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn both_overlays_render_well_formed_objects_whose_references_resolve() {
    for overlay in OVERLAYS {
        let docs = overlay_docs(overlay);
        let namespaces: BTreeSet<&str> = docs
            .iter()
            .filter(|d| d.kind() == "Namespace")
            .map(Doc::name)
            .collect();
        for d in &docs {
            let at = format!("{overlay}: {} {:?}", d.kind(), d.name());
            let (_, api, namespaced) = KINDS
                .iter()
                .find(|(k, _, _)| *k == d.kind())
                .unwrap_or_else(|| panic!("{at}: a kind this test does not know"));
            assert_eq!(d.value["apiVersion"], *api, "{at}: apiVersion");
            assert!(dns_name(d.name()), "{at}: name");
            match (namespaced, d.namespace()) {
                (true, Some(ns)) => assert!(namespaces.contains(ns), "{at}: namespace {ns}"),
                (true, None) => panic!("{at}: no namespace"),
                (false, ns) => assert!(ns.is_none(), "{at}: cluster-scoped with a namespace"),
            }
            for (k, v) in d.value["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
            {
                let v = v
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: label {k} not a string"));
                assert!(v.len() <= 63, "{at}: label {k} longer than 63");
            }
        }
        let w = only(&docs, workload_kind(overlay));
        let labels = &w.value["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&w.value["spec"]["selector"]["matchLabels"], labels),
            "{overlay}: the selector does not select the pod template"
        );
        let pod = pod_spec(w);
        find(
            &docs,
            "ServiceAccount",
            pod["serviceAccountName"].as_str().unwrap(),
        );
        find(
            &docs,
            "PriorityClass",
            pod["priorityClassName"]
                .as_str()
                .expect("priorityClassName"),
        );
        for c in all_containers(w) {
            for (kind, name, _) in mounted_sources(w, c) {
                find(&docs, kind, name);
            }
            // By digest (a placeholder until the user sets theirs), never a moving tag.
            let image = c["image"].as_str().unwrap();
            let digest = image.split_once("@sha256:").map(|(_, d)| d).unwrap_or("");
            assert!(
                digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                "{overlay}: image {image} is not pinned by digest"
            );
        }
        for v in pod["volumes"].as_array().unwrap() {
            if let Some(name) = v["configMap"]["name"].as_str() {
                let have = keys(find(&docs, "ConfigMap", name));
                for item in v["configMap"]["items"].as_array().into_iter().flatten() {
                    assert!(
                        have.contains(item["key"].as_str().unwrap()),
                        "{overlay}: {name}"
                    );
                }
            }
        }
        let np = find(&docs, "NetworkPolicy", "popgate");
        assert!(
            selects(&np.value["spec"]["podSelector"]["matchLabels"], labels),
            "{overlay}: the NetworkPolicy does not select popgate's pods"
        );
    }
}

#[test]
fn each_rendered_routes_yaml_loads_and_the_pods_probe_scrape_and_drain_by_it() {
    for overlay in OVERLAYS {
        let docs = overlay_docs(overlay);
        let cfg = loaded_routes(&docs, overlay);
        // The rendered routes.yaml also validates against the shipped JSON Schema.
        let rendered: Value =
            serde_saphyr::from_str(&routes_text_in(&docs, workload_kind(overlay))).unwrap();
        let schema = popgate::config::json_schema::routes_schema();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&rendered)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{overlay}: rendered routes.yaml vs schema: {errors:?}"
        );
        let names: Vec<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["graph", "vault", "storage"], "{overlay}");
        let w = only(&docs, workload_kind(overlay));
        let popgate = container(w, "containers", "popgate");
        let admin = u64::from(cfg.admin.expect("an admin listener").port());
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = &popgate[probe]["httpGet"];
            assert_eq!(get["path"], path, "{overlay}: {probe}");
            assert_eq!(
                resolve_port(popgate, &get["port"]),
                admin,
                "{overlay}: {probe}"
            );
        }
        let notes = &w.value["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(notes["prometheus.io/scrape"], "true", "{overlay}");
        assert_eq!(notes["prometheus.io/port"], admin.to_string(), "{overlay}");
        assert_eq!(notes["prometheus.io/path"], "/metrics", "{overlay}");
        // SIGTERM: readiness drops at once, the listeners serve for drain.delay, then in-flight
        // requests get timeouts.drain; the kubelet's SIGKILL must come after both.
        let grace = pod_spec(w)["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        let needed = cfg.drain.delay + cfg.timeouts.drain;
        assert!(
            grace > needed.as_secs(),
            "{overlay}: grace {grace}s must exceed drain.delay + timeouts.drain = {needed:?}"
        );
        assert!(!cfg.drain.delay.is_zero(), "{overlay}: no drain delay");
        // The image has no shell: a preStop must not need one.
        for c in all_containers(w) {
            let command = strings(&c["lifecycle"]["preStop"]["exec"]["command"]);
            assert!(
                !command
                    .first()
                    .is_some_and(|p| ["sh", "/bin/sh", "bash", "sleep"]
                        .iter()
                        .any(|s| p.ends_with(s))),
                "{overlay}: preStop {command:?} needs a shell or sleep the image lacks"
            );
        }
    }
}

#[test]
fn the_daemonset_overlay_runs_on_every_node_with_a_host_port() {
    let docs = overlay_docs("daemonset");
    let ds = only(&docs, "DaemonSet");
    let cfg = loaded_routes(&docs, "daemonset");
    let tolerations = pod_spec(ds)["tolerations"].as_array().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "a node agent tolerates every taint: {tolerations:?}"
    );
    let popgate = container(ds, "containers", "popgate");
    let port = u64::from(cfg.listeners[0].address.port());
    let proxy = popgate["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"].as_u64() == Some(port))
        .expect("the proxy port");
    assert_eq!(proxy["hostPort"].as_u64(), Some(port));
    let ns = find(&docs, "Namespace", "popgate");
    assert_eq!(
        ns.value["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged",
        "a hostPort needs the privileged Pod Security level"
    );
    assert!(docs.iter().all(|d| d.kind() != "Service"));
}

#[test]
fn the_gateway_overlay_is_a_replicated_deployment_behind_a_service_with_pdb_and_hpa() {
    let docs = overlay_docs("gateway");
    let dep = only(&docs, "Deployment");
    let cfg = loaded_routes(&docs, "gateway");
    let labels = &dep.value["spec"]["template"]["metadata"]["labels"];
    let replicas = dep.value["spec"]["replicas"].as_u64().expect("replicas");
    assert!(
        replicas >= 2,
        "a gateway needs several replicas, has {replicas}"
    );
    let popgate = container(dep, "containers", "popgate");
    for c in all_containers(dep) {
        assert!(
            c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|p| p.get("hostPort").is_none())
        );
    }
    assert_ne!(pod_spec(dep)["hostNetwork"], true);
    assert!(
        !pod_spec(dep)["topologySpreadConstraints"]
            .as_array()
            .unwrap()
            .is_empty(),
        "replicas spread over nodes"
    );

    // The Service reaches the proxy listener of the selected pods.
    let svc = only(&docs, "Service");
    assert!(
        selects(&svc.value["spec"]["selector"], labels),
        "Service selector"
    );
    let ports = svc.value["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "only the proxy port is load-balanced");
    let listener = u64::from(cfg.listeners[0].address.port());
    assert_eq!(resolve_port(popgate, &ports[0]["targetPort"]), listener);
    assert_eq!(ports[0]["port"].as_u64(), Some(listener));

    // The budget lets one replica go at a time, never all.
    let pdb = only(&docs, "PodDisruptionBudget");
    assert!(
        selects(&pdb.value["spec"]["selector"]["matchLabels"], labels),
        "PDB selector"
    );
    let unavailable = pdb.value["spec"]["maxUnavailable"]
        .as_u64()
        .expect("maxUnavailable");
    assert!(
        unavailable >= 1 && unavailable < replicas,
        "maxUnavailable {unavailable}"
    );

    // The autoscaler scales this Deployment on CPU, which needs a CPU request.
    let hpa = only(&docs, "HorizontalPodAutoscaler");
    let target = &hpa.value["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    assert_eq!(target["apiVersion"], "apps/v1");
    assert_eq!(target["name"], dep.name());
    let min = hpa.value["spec"]["minReplicas"].as_u64().unwrap();
    let max = hpa.value["spec"]["maxReplicas"].as_u64().unwrap();
    assert!(
        min >= 2 && min <= replicas && replicas <= max,
        "{min}..{max}, {replicas}"
    );
    let metric = &hpa.value["spec"]["metrics"][0]["resource"];
    assert_eq!(metric["name"], "cpu");
    assert!(
        !popgate["resources"]["requests"]["cpu"].is_null(),
        "HPA on CPU needs a request"
    );

    // Without a hostPort the namespace can enforce the restricted level.
    let ns = find(&docs, "Namespace", "popgate");
    assert_eq!(
        ns.value["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

#[test]
fn the_checks_above_catch_a_broken_render() {
    // The reference checks are not vacuous: a selector that does not match, and an image by
    // tag, are caught by the same predicates.
    let labels = serde_json::json!({"app.kubernetes.io/name": "popgate"});
    assert!(!selects(&serde_json::json!({"app": "other"}), &labels));
    assert!(!selects(&serde_json::json!({}), &labels));
    assert!(selects(
        &serde_json::json!({"app.kubernetes.io/name": "popgate"}),
        &labels
    ));
    assert!(!dns_name("Popgate"));
    assert!(!dns_name("-popgate"));
    assert!(dns_name("popgate-routes-2f8hh2dt99"));
}
