//! For targets whose API takes a path: one temp directory per fuzz process, and one file in it
//! that every input overwrites. Included by `#[path]`; not a target of its own.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The process's input file, named `name` (the first call's name; a target passes one name).
pub fn path(name: &str) -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir for the fuzzed file");
        let path = dir.path().join(name);
        (dir, path)
    })
    .1
}
