//! The JSON Schema of routes.yaml (`docs/routes.schema.json`, `popgate schema`): the shipped
//! file is what the loader's types generate, every shipped config validates against it and
//! loads, schema and loader refuse the same malformed files, every key docs/config.md documents
//! is in it, and the shipped YAML files point editors at it.

use std::collections::BTreeSet;
use std::path::Path;

use popgate::config::json_schema::{SCHEMA_PATH, routes_schema, routes_schema_text};
use serde_json::Value;

use crate::kit::repo_root;

/// The configs shipped in the repository (the deploy/ overlays render deploy/base/routes.yaml
/// unchanged; tests/examples checks the rendered text too).
const SHIPPED: &[&str] = &["routes.yaml", "deploy/base/routes.yaml"];

/// The comment that makes editors (yaml-language-server: VS Code, Neovim, ...) use the schema.
const MODELINE: &str = "# yaml-language-server: $schema=";

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&routes_schema()).expect("the generated schema is a valid schema")
}

/// The schema's complaints about `yaml` (parsed as YAML), one line each.
fn schema_errors(yaml: &str) -> Vec<String> {
    let instance: Value = serde_saphyr::from_str(yaml).expect("YAML");
    validator()
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_shipped_schema_is_what_the_config_types_generate() {
    let path = repo_root().join(SCHEMA_PATH);
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == routes_schema_text(),
        "{SCHEMA_PATH} is stale or missing: regenerate it with\n  cargo run -- schema > {SCHEMA_PATH}"
    );
    // And `popgate schema` prints exactly that.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popgate"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), shipped);
}

#[test]
fn every_shipped_config_validates_against_the_schema_and_loads() {
    for file in SHIPPED {
        let path = repo_root().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let errors = schema_errors(&text);
        assert!(
            errors.is_empty(),
            "{file} against the schema:\n{}",
            errors.join("\n")
        );
        // The loader takes its shape too (semantic errors such as missing certificate files
        // are not the schema's business, so only the root example, whose files exist, must
        // load whole).
        if *file == "routes.yaml" {
            popgate::config::load_with_env(&path, &|_| None)
                .unwrap_or_else(|e| panic!("{file} does not load:\n{e}"));
        }
    }
}

/// A small config both the loader and the schema accept.
const VALID: &str = "version: 1
listeners:
  - address: 127.0.0.1:0
drain: { delay: 2s }
identities:
  sami: { kind: managed_identity }
routes:
  - name: arm
    match: { host: management.azure.com }
    resource: https://management.azure.com
    flow: vanilla
    identity: sami
    token_type: bearer
";

fn loader_accepts(yaml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, yaml).unwrap();
    popgate::config::load_with_env(&path, &|_| None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn schema_and_loader_agree_on_shape_errors() {
    assert_eq!(loader_accepts(VALID), Ok(()));
    assert_eq!(schema_errors(VALID), Vec::<String>::new());
    for (what, bad) in [
        (
            "an unknown top-level key",
            VALID.replace("drain:", "drian:"),
        ),
        (
            "an unknown key in drain",
            VALID.replace("delay: 2s", "delay: 2s, wait: 1s"),
        ),
        (
            "an unknown route key",
            VALID.replace("    flow: vanilla", "    flow: vanilla\n    flows: fic"),
        ),
        (
            "an unknown identity kind",
            VALID.replace("managed_identity", "managed"),
        ),
        (
            "an unknown flow",
            VALID.replace("flow: vanilla", "flow: plain"),
        ),
        (
            "an unknown token type",
            VALID.replace("token_type: bearer", "token_type: pop"),
        ),
        (
            "listeners not a list",
            VALID.replace("  - address: 127.0.0.1:0", "  address: 127.0.0.1:0"),
        ),
        (
            "no routes",
            VALID[..VALID.find("routes:").unwrap()].to_string(),
        ),
        (
            "a version that is not a number",
            VALID.replace("version: 1", "version: one"),
        ),
        (
            "match not a mapping",
            VALID.replace(
                "match: { host: management.azure.com }",
                "match: management.azure.com",
            ),
        ),
    ] {
        assert!(loader_accepts(&bad).is_err(), "the loader accepts {what}");
        assert!(
            !schema_errors(&bad).is_empty(),
            "the schema accepts {what}:\n{bad}"
        );
    }
}

/// Every property name anywhere in the schema.
fn property_names(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            m.values().for_each(|c| property_names(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| property_names(c, out)),
        _ => {}
    }
}

/// The keys in the first column of every docs/config.md table whose header starts `| key |`.
fn documented_keys(markdown: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_key_table = false;
    for line in markdown.lines() {
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        if line.starts_with("| key |") {
            in_key_table = true;
            continue;
        }
        if !in_key_table {
            continue;
        }
        let first = line.trim_start_matches('|').split('|').next().unwrap_or("");
        for name in first.split('`').skip(1).step_by(2) {
            keys.insert(name.to_string());
        }
    }
    keys
}

#[test]
fn every_key_documented_in_config_md_is_in_the_schema() {
    let docs = std::fs::read_to_string(repo_root().join("docs/config.md")).unwrap();
    let documented = documented_keys(&docs);
    assert!(documented.len() > 40, "found only {documented:?}");
    let mut known = BTreeSet::new();
    property_names(&routes_schema(), &mut known);
    let missing: Vec<&String> = documented
        .iter()
        .filter(|key| key.split('.').any(|part| !known.contains(part)))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not in the schema: {missing:?}"
    );
    // The check can fail: a made-up key is not in the schema.
    assert!(!known.contains("drain_delay"));
    assert!(known.contains("delay") && known.contains("match"));
}

#[test]
fn the_shipped_yaml_files_point_editors_at_the_schema() {
    for file in SHIPPED {
        let path = repo_root().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let target = text
            .lines()
            .find_map(|l| l.strip_prefix(MODELINE))
            .unwrap_or_else(|| panic!("{file} has no `{MODELINE}…` line"));
        let resolved = path.parent().unwrap_or(Path::new(".")).join(target);
        assert_eq!(
            std::fs::canonicalize(&resolved).ok(),
            std::fs::canonicalize(repo_root().join(SCHEMA_PATH)).ok(),
            "{file}: {target} is not {SCHEMA_PATH}"
        );
    }
}
