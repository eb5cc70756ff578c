//! The Dockerfile as a list of instructions split into build stages.

use crate::kit::repo_root;

/// The repository's Dockerfile.
pub fn dockerfile() -> String {
    let path = repo_root().join("Dockerfile");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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
