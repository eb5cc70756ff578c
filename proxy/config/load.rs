//! Reading routes.yaml and parsing it with serde-saphyr under explicit limits, mapping its
//! errors to `FILE:LINE:COL: message`.

use std::borrow::Cow;
use std::path::Path;

use serde_saphyr::{Budget, MessageFormatter as _, Options};

use super::error::{ConfigError, ConfigErrors};
use super::model::Config;
use super::schema::RawConfig;
use super::validate;
use crate::certs::bounded_read::{BoundedReadError, read_bounded};
use crate::identity::mi_source::MiSourceKind;

/// Largest config file popgate reads: a routes.yaml with thousands of routes is well under this;
/// anything bigger is a mistake (wrong path) or an attack on the parser.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Deepest YAML nesting accepted: the schema is at most 5 levels deep; 32 leaves room for
/// flow-style oddities and keeps the recursive parser's stack small.
pub const MAX_YAML_DEPTH: usize = 32;
/// Most aliases (`*name`) in one file: configs may share a block or two by anchor, never hundreds.
pub const MAX_YAML_ALIASES: usize = 256;
/// Most anchors (`&name`) in one file, same reasoning as [`MAX_YAML_ALIASES`].
pub const MAX_YAML_ANCHORS: usize = 256;
/// Most parser events replayed through aliases in total: bounds "billion laughs" expansion to
/// a size a real config never approaches.
pub const MAX_YAML_ALIAS_REPLAYED_EVENTS: usize = 10_000;
/// Most YAML nodes in a file: ~30 nodes per route, so this allows thousands of routes.
pub const MAX_YAML_NODES: usize = 200_000;
/// Most parser events in a file (about two per node).
pub const MAX_YAML_EVENTS: usize = 400_000;
/// Total scalar text: equal to the file size cap, so aliases cannot multiply it.
pub const MAX_YAML_SCALAR_BYTES: usize = 1024 * 1024;

/// How a loader looks up environment variables (the process environment in production; a
/// fixed map in tests, since changing the process environment races with other tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Loads and validates `path`, reading overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// How a loader looks up the variables of the managed-identity source a `source:` key names,
/// apart from the environment (`popgate dev` points each source at the local authority).
pub type SourceEnvLookup<'a> = &'a dyn Fn(MiSourceKind, &str) -> Option<String>;

/// Loads and validates `path` with an explicit environment.
pub fn load_with_env(path: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigErrors> {
    let text = read_config(path)?;
    let raw = parse_str(path, &text)?;
    validate::validate(path, raw, env, None)
}

/// [`load_with_env`], but a managed identity whose `source:` names its source reads that
/// source's variables from `source_env` (detection still reads `env`).
pub fn load_with_source_env(
    path: &Path,
    env: EnvLookup<'_>,
    source_env: SourceEnvLookup<'_>,
) -> Result<Config, ConfigErrors> {
    let text = read_config(path)?;
    let raw = parse_str(path, &text)?;
    validate::validate(path, raw, env, Some(source_env))
}

/// Reads the file, bounded by [`MAX_CONFIG_BYTES`], as UTF-8.
fn read_config(path: &Path) -> Result<String, ConfigError> {
    let mut bytes = read_bounded(path, MAX_CONFIG_BYTES).map_err(|e| {
        let message = match e {
            BoundedReadError::Io(e) => format!("cannot read config file: {e}"),
            BoundedReadError::TooLarge { .. } => {
                format!("config file is larger than {MAX_CONFIG_BYTES} bytes")
            }
        };
        ConfigError::whole_file(path, message)
    })?;
    String::from_utf8(std::mem::take(&mut *bytes))
        .map_err(|e| ConfigError::whole_file(path, format!("config file is not UTF-8: {e}")))
}

/// The parser options: serde-saphyr defaults with popgate's explicit limits.
fn parser_options() -> Options {
    let mut budget = Budget::default();
    budget.max_reader_input_bytes = Some(MAX_CONFIG_BYTES as usize);
    budget.max_depth = MAX_YAML_DEPTH;
    budget.max_aliases = MAX_YAML_ALIASES;
    budget.max_anchors = MAX_YAML_ANCHORS;
    budget.max_nodes = MAX_YAML_NODES;
    budget.max_events = MAX_YAML_EVENTS;
    budget.max_total_scalar_bytes = MAX_YAML_SCALAR_BYTES;
    budget.max_documents = 1;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = MAX_YAML_ALIAS_REPLAYED_EVENTS;
    // Messages are rendered as FILE:LINE:COL, not with source snippets.
    options.with_snippet = false;
    options
}

/// Parses config text into the raw schema; `file` is only used in the error.
pub fn parse_str(file: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    serde_saphyr::from_str_with_options(text, parser_options()).map_err(|e| parse_error(file, &e))
}

/// Maps a serde-saphyr error to `FILE:LINE:COL: message` without snippets or location suffixes.
fn parse_error(file: &Path, err: &serde_saphyr::Error) -> ConfigError {
    let mut inner = err;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = inner
    {
        inner = error;
    }
    let location = err.location().unwrap_or(serde_saphyr::Location::UNKNOWN);
    let message = match inner {
        serde_saphyr::Error::Budget { breach, .. } => budget_message(breach),
        other => sanitize(serde_saphyr::UserMessageFormatter.format_message(other)),
    };
    ConfigError::at(file, location, message)
}

/// Names the popgate limit a document broke, rather than the parser's internal counter.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let limit = match breach {
        B::Aliases { .. } => format!("more than {MAX_YAML_ALIASES} aliases"),
        B::Anchors { .. } => format!("more than {MAX_YAML_ANCHORS} anchors"),
        B::Depth { .. } => format!("nesting deeper than {MAX_YAML_DEPTH} levels"),
        B::Nodes { .. } => format!("more than {MAX_YAML_NODES} nodes"),
        B::Events { .. } => format!("more than {MAX_YAML_EVENTS} parser events"),
        B::ScalarBytes { .. } => format!("more than {MAX_YAML_SCALAR_BYTES} bytes of scalars"),
        B::Documents { .. } => "more than one YAML document".to_owned(),
        other => sanitize(Cow::Owned(format!("{other:?}"))),
    };
    format!("YAML document exceeds popgate's parser limits: {limit}")
}

/// Parser messages may quote file content: keep them on one line and free of control characters.
fn sanitize(message: Cow<'_, str>) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
