//! `popgate_build_info{version, commit, rustc} 1`: which build is running, for dashboards and
//! alerts that compare versions across a fleet. The commit and the compiler are captured by
//! `build.rs`; a build without git (a source tarball, a Docker context without `.git`) says
//! `unknown`, unless `POPGATE_GIT_COMMIT` was set for the build.

use prometheus::{IntGaugeVec, Opts, Registry};

/// The crate version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit popgate was built from, or `unknown` (set by `build.rs`).
pub const COMMIT: &str = env!("POPGATE_GIT_COMMIT");
/// `rustc --version` of the compiler that built popgate, or `unknown` (set by `build.rs`).
pub const RUSTC: &str = env!("POPGATE_RUSTC_VERSION");

/// Registers the family with its one series set to 1.
pub(super) fn register(r: &Registry) -> prometheus::Result<()> {
    let info = IntGaugeVec::new(
        Opts::new(
            "popgate_build_info",
            "1, labelled with the running build's version, git commit and rustc version.",
        ),
        &["version", "commit", "rustc"],
    )?;
    info.with_label_values(&[VERSION, COMMIT, RUSTC]).set(1);
    r.register(Box::new(info))
}
