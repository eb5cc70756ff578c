//! routes.yaml: schema, loading with `FILE:LINE:COL` errors, semantic validation.
//!
//! `load(path)` is the entry point: it reads the file, parses it with serde-saphyr under
//! explicit limits, validates every rule and returns a [`Config`] or every error found.

pub mod canonical_path;
pub mod describe;
pub mod describe_proxy;
pub mod duration;
pub mod json_schema;
pub(crate) mod error;
pub(crate) mod host_pattern;
pub mod limits;
pub mod load;
pub mod model;
pub mod no_proxy;
pub mod outbound_proxy;
pub(crate) mod schema;
pub(crate) mod upstream;
pub(crate) mod upstream_pool;
pub(crate) mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use load::{EnvLookup, SourceEnvLookup, load, load_with_env, load_with_source_env};
pub use model::*;
