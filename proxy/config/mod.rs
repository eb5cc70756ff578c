//! routes.yaml: schema, loading with file:line:col errors, semantic validation.
