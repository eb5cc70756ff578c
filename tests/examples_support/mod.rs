//! Reading the deployment examples: every Kubernetes manifest under `examples/kubernetes/` as JSON
//! values, and the Dockerfile as a list of instructions split into build stages.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `examples/kubernetes/` in this checkout.
pub fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes")
}

/// The repository root (where the Dockerfile lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One YAML document of one manifest file.
pub struct Doc {
    /// The file name, e.g. `daemonset.yaml`.
    pub file: String,
    /// The document.
    pub value: Value,
}

impl Doc {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }
}

/// The names of every `*.yaml` / `*.yml` file in `examples/kubernetes/`, sorted.
pub fn manifest_files() -> Vec<String> {
    let dir = kubernetes_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    names
}

/// Parses `text` as a stream of YAML documents; empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Every document of every manifest file; panics naming the file that does not parse.
pub fn all_docs() -> Vec<Doc> {
    let mut out = Vec::new();
    for file in manifest_files() {
        let path = kubernetes_dir().join(&file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let docs = parse_documents(&text).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
        assert!(!docs.is_empty(), "{file}: no YAML document");
        out.extend(docs.into_iter().map(|value| Doc {
            file: file.clone(),
            value,
        }));
    }
    out
}

/// The only object of `kind` named `name`; panics if there is none or more than one.
pub fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == kind && d.name() == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} {name:?}");
    found[0]
}

/// The only object of `kind`; panics if there is none or more than one.
pub fn only<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs.iter().filter(|d| d.kind() == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

/// The strings of a JSON array (empty if `v` is not an array of strings).
pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// One Dockerfile instruction: the keyword (upper case) and the rest of the line, with line
/// continuations joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

/// Splits a Dockerfile into its build stages (each starting at a `FROM`), dropping comments,
/// blank lines and the global `ARG`s before the first `FROM`. Parser directives
/// (`# syntax=…`) are comments here.
pub fn dockerfile_stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut logical: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        // Comment lines inside a continued instruction are skipped, as Docker does.
        if !pending.is_empty() && trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                logical.push(std::mem::take(&mut pending));
            }
        }
    }
    if !pending.is_empty() {
        logical.push(pending);
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for l in logical {
        let (keyword, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let ins = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if ins.keyword == "FROM" {
            stages.push(vec![ins]);
        } else if let Some(stage) = stages.last_mut() {
            stage.push(ins);
        }
    }
    stages
}

/// The user the final stage runs as, or why it may be root: no `USER` in the final stage (the
/// base image's default is then unchecked), or `USER root` / `USER 0` (with or without a group).
pub fn final_stage_user(text: &str) -> Result<String, String> {
    let stages = dockerfile_stages(text);
    let last = stages.last().ok_or("no FROM instruction")?;
    let user = last
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .ok_or("the final stage has no USER instruction")?;
    let name = user.args.split(':').next().unwrap_or("").trim();
    if name.is_empty() || name == "root" || name.trim_start_matches('0').is_empty() {
        return Err(format!("the final stage runs as `{}`", user.args));
    }
    Ok(user.args.clone())
}

/// The JSON-array (exec) form of an instruction's arguments, e.g. `["run", "--config", "x"]`.
pub fn exec_form(args: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(args).map_err(|e| format!("`{args}` is not an exec-form JSON array: {e}"))
}
