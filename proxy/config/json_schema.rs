//! The JSON Schema of routes.yaml, derived from the raw config types the loader deserializes
//! (`schema.rs`): the same keys, nesting, types, enum values and refusal of unknown keys, with
//! each key's doc comment as its description. Shipped as `docs/routes.schema.json` (a test fails
//! when that file is stale) and printed by `popgate schema`. Semantics the types do not carry
//! (which keys each identity kind takes, duration syntax, ranges) stay with validation.

use super::schema::RawConfig;

/// Where the schema is shipped, relative to the repository root.
pub const SCHEMA_PATH: &str = "docs/routes.schema.json";

/// The schema as a JSON value.
pub fn routes_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawConfig);
    schema.insert("title".into(), "popgate routes.yaml".into());
    schema.insert(
        "description".into(),
        "popgate's config file (docs/config.md). Generated from the loader's types by \
         `popgate schema`; validation checks more than this schema can say."
            .into(),
    );
    schema.to_value()
}

/// The schema as pretty-printed JSON with a final newline, as shipped.
pub fn routes_schema_text() -> String {
    // Serializing a `serde_json::Value` cannot fail (its keys are strings).
    let mut text = serde_json::to_string_pretty(&routes_schema()).unwrap_or_default();
    text.push('\n');
    text
}
