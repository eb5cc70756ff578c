//! `examples/mi-sources.yaml`, one route per managed-identity source: it loads wherever the
//! host's variables are set (and says which one is missing where not), and `popgate dev` (the
//! real binary) runs every route on any machine, each source's token acquired from the local
//! authority's strict emulation of that source (Arc's challenge file, Service Fabric's pinned
//! certificate, …) and presented to the resource end to end.

use std::path::PathBuf;

use crate::kit::dev::{listening_addr, rows, run_dev_once_free_port};
use crate::kit::process::stdout_of_success;
use crate::kit::repo_root;
use popgate::config::{Identity, MiSourceKind};

fn example() -> PathBuf {
    repo_root().join("examples/mi-sources.yaml")
}

/// Each identity of the example and the source it names.
const SOURCES: [(&str, MiSourceKind); 6] = [
    ("mi-imds", MiSourceKind::Imds),
    ("mi-app-service", MiSourceKind::AppService),
    ("mi-arc", MiSourceKind::AzureArc),
    ("mi-service-fabric", MiSourceKind::ServiceFabric),
    ("mi-cloud-shell", MiSourceKind::CloudShell),
    ("mi-ml", MiSourceKind::MachineLearning),
];

#[test]
fn the_example_loads_where_each_sources_variables_are_set() {
    let vars = [
        ("IDENTITY_ENDPOINT", "https://127.0.0.1:40343/token"),
        ("IDENTITY_HEADER", "h"),
        (
            "IDENTITY_SERVER_THUMBPRINT",
            "0123456789ABCDEF0123456789ABCDEF01234567",
        ),
        ("IMDS_ENDPOINT", "http://127.0.0.1:40342"),
        ("MSI_ENDPOINT", "http://127.0.0.1:50342/oauth2/token"),
        ("MSI_SECRET", "s"),
        (
            "DEFAULT_IDENTITY_CLIENT_ID",
            "6325cd32-9911-41f3-819c-416cdf9104e7",
        ),
    ];
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let cfg = popgate::config::load_with_env(&example(), &env).unwrap_or_else(|e| panic!("{e}"));
    for (name, kind) in SOURCES {
        match cfg.identity(name) {
            Some(Identity::ManagedIdentity(mi)) => {
                assert_eq!(mi.source.kind(), kind, "{name}");
                assert!(!mi.source_detected, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(cfg.routes.len(), SOURCES.len(), "a route per source");

    // Without them (`popgate check` on a plain machine), each source but IMDS names the variable
    // it misses, at the identity's `source:`.
    let errors = popgate::config::load_with_env(&example(), &|_| None)
        .unwrap_err()
        .to_string();
    for var in ["IDENTITY_ENDPOINT", "MSI_ENDPOINT"] {
        assert!(errors.contains(&format!("{var} is not set")), "{errors}");
    }
    assert!(errors.contains("mi-sources.yaml:24:"), "{errors}");

    // `popgate dev`'s own loading points them elsewhere: it loads on any machine.
    popgate::dev::mi_sources::load(&example()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn popgate_dev_runs_every_source_end_to_end() {
    let out = run_dev_once_free_port(&example());
    let stdout = stdout_of_success(&out);
    assert!(listening_addr(&stdout).is_some(), "{stdout}");
    let rows = rows(&stdout);
    assert_eq!(rows.len(), SOURCES.len(), "{stdout}");
    for row in &rows {
        assert_eq!(row.result, "OK", "{row:?}\n{stdout}");
        assert_eq!(row.status, "200", "{row:?}");
    }
    for (route, identity, binding) in [
        ("arm-imds-pop", "SAMI", "yes"),
        ("arm-app-service", "SAMI via app_service", "n/a (bearer)"),
        ("arm-arc", "SAMI via azure_arc", "n/a (bearer)"),
        (
            "arm-service-fabric",
            "SAMI via service_fabric",
            "n/a (bearer)",
        ),
        ("arm-cloud-shell", "SAMI via cloud_shell", "n/a (bearer)"),
        ("arm-ml", "SAMI via machine_learning", "n/a (bearer)"),
    ] {
        let row = rows
            .iter()
            .find(|r| r.route == route)
            .unwrap_or_else(|| panic!("no row {route}:\n{stdout}"));
        assert_eq!(
            (row.identity.as_str(), row.binding.as_str()),
            (identity, binding),
            "{row:?}"
        );
    }
    assert!(stdout.contains("6 of 6 routes OK"), "{stdout}");
}
