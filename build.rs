//! Captures what `popgate_build_info` reports: the git commit and the rustc version. Neither is
//! required: without git (a source tarball, a Docker build context without `.git`) or without a
//! usable `rustc --version`, the value is `unknown`. `POPGATE_GIT_COMMIT` overrides the commit
//! (e.g. `docker build --build-arg`, passed on as an environment variable).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=POPGATE_GIT_COMMIT");
    let commit = match std::env::var("POPGATE_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => clean(&c),
        _ => git_commit().unwrap_or_else(|| "unknown".into()),
    };
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = output(Command::new(rustc).arg("--version")).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=POPGATE_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=POPGATE_RUSTC_VERSION={rustc}");
}

/// `git rev-parse HEAD` of the source tree, and a rebuild when HEAD or its branch moves.
fn git_commit() -> Option<String> {
    let commit = output(Command::new("git").args(["rev-parse", "HEAD"]))?;
    // Rebuild when the checkout moves: HEAD itself, and the branch file it points at (loose or
    // packed). Only paths that exist are watched: a missing one would rerun this on every build.
    for path in ["HEAD", "packed-refs"] {
        watch_git_path(path);
    }
    if let Some(branch) = output(Command::new("git").args(["symbolic-ref", "-q", "HEAD"])) {
        watch_git_path(&branch);
    }
    Some(commit)
}

fn watch_git_path(path: &str) {
    if let Some(p) = output(Command::new("git").args(["rev-parse", "--git-path", path]))
        && std::path::Path::new(&p).exists()
    {
        println!("cargo:rerun-if-changed={p}");
    }
}

/// A command's trimmed stdout when it succeeded and printed one clean line.
fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = clean(&text);
    (!text.is_empty()).then_some(text)
}

/// The first line, without characters that cannot be a label value or an env value.
fn clean(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect()
}
