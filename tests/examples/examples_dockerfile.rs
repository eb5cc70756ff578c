//! The Dockerfile builds popgate with `--locked` in a build stage and runs it from a small
//! runtime stage as a non-root user, with the entrypoint, command and ports the examples use, and
//! a HEALTHCHECK that runs the copied binary's `probe` against the examples' admin `/readyz`.

use crate::kit::examples::dockerfile::{
    dockerfile, dockerfile_stages, exec_form, final_stage_user,
};
use crate::kit::examples::routes::{CONFIG_PATH, load_configmap_routes};
use crate::kit::repo_root;

#[test]
fn dockerfile_final_stage_is_small_and_non_root() {
    let text = dockerfile();
    let user = final_stage_user(&text).unwrap_or_else(|e| panic!("Dockerfile: {e}"));
    // Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert!(
        user.split(':')
            .all(|p| p.parse::<u32>().is_ok_and(|n| n != 0)),
        "USER {user}"
    );

    let stages = dockerfile_stages(&text);
    assert!(stages.len() >= 2, "a multi-stage build");
    let last = stages.last().unwrap();
    let from = &last[0].args;
    assert!(
        !from.contains("rust:"),
        "the runtime must not be the toolchain image: {from}"
    );
    let get = |kw: &str| {
        last.iter()
            .rev()
            .find(|i| i.keyword == kw)
            .map(|i| i.args.clone())
    };
    assert_eq!(exec_form(&get("ENTRYPOINT").unwrap()).unwrap(), ["popgate"]);
    assert_eq!(
        exec_form(&get("CMD").unwrap()).unwrap(),
        ["run", "--config", CONFIG_PATH]
    );
    assert!(
        last.iter()
            .any(|i| i.keyword == "COPY" && i.args.starts_with("--from=")),
        "the runtime copies the binary from the build stage"
    );
    let cfg = load_configmap_routes();
    let exposed: Vec<u16> = get("EXPOSE")
        .unwrap()
        .split_whitespace()
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert!(
        exposed.contains(&cfg.listeners[0].address.port()),
        "{exposed:?}"
    );
    assert!(exposed.contains(&cfg.admin.unwrap().port()), "{exposed:?}");
}

#[test]
fn dockerfile_builds_the_production_profile_without_the_local_authority() {
    let stages = dockerfile_stages(&dockerfile());
    let builds: Vec<&String> = stages
        .iter()
        .flatten()
        .filter(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .map(|i| &i.args)
        .collect();
    assert!(!builds.is_empty(), "no `cargo build` step");
    for b in builds {
        let words: Vec<&str> = b.split_whitespace().collect();
        assert!(
            words.contains(&"--locked"),
            "cargo build without --locked: {b}"
        );
        // The production profile: release optimisations, no debug info (Cargo.toml's
        // `[profile.dist]`), and no `dev` feature, so the emulator is not in the image.
        assert!(
            words.windows(2).any(|w| w == ["--profile", "dist"]),
            "cargo build without --profile dist: {b}"
        );
        assert!(
            words.contains(&"--no-default-features"),
            "cargo build with the local authority (no --no-default-features): {b}"
        );
    }
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let dist = manifest
        .split("[profile.dist]")
        .nth(1)
        .expect("Cargo.toml has no [profile.dist]");
    let dist = dist.split("\n[").next().unwrap_or(dist);
    assert!(dist.contains("inherits = \"release\""), "{dist}");
    assert!(dist.contains("strip = \"debuginfo\""), "{dist}");
}

#[test]
fn final_stage_user_check_refuses_root_and_missing_user() {
    let build = "FROM rust:1 AS build\nUSER 1000\nRUN cargo build --locked\n";
    assert!(final_stage_user(&format!("{build}FROM scratch\nUSER root\n")).is_err());
    assert!(final_stage_user(&format!("{build}FROM scratch\nUSER 0:0\n")).is_err());
    // A USER in an earlier stage does not carry over.
    assert!(final_stage_user(&format!("{build}FROM scratch\nCOPY a b\n")).is_err());
    assert!(final_stage_user("# nothing\n").is_err());
    let ok = format!("{build}FROM scratch\nUSER 0\nRUN x \\\n  y\nUSER 65532:65532\n");
    assert_eq!(final_stage_user(&ok).unwrap(), "65532:65532");
}

#[test]
fn dockerignore_keeps_build_output_and_git_out_of_the_context() {
    let path = repo_root().join(".dockerignore");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rules: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target/", ".git"] {
        assert!(rules.contains(&needed), ".dockerignore lacks {needed}");
    }
    // Cargo.lock must reach the build, or --locked fails.
    assert!(!rules.iter().any(|r| r.contains("Cargo.lock")), "{rules:?}");
}

#[test]
fn dockerfile_healthcheck_probes_the_admin_readyz_with_the_copied_binary() {
    let stages = dockerfile_stages(&dockerfile());
    let last = stages.last().unwrap();
    let check = last
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("the runtime stage has a HEALTHCHECK");
    let (options, cmd) = check
        .args
        .split_once("CMD ")
        .expect("HEALTHCHECK CMD, not NONE");
    let argv = exec_form(cmd.trim()).expect("exec form: there is no shell in the image");
    let copied = last
        .iter()
        .find(|i| i.keyword == "COPY" && i.args.starts_with("--from="))
        .unwrap()
        .args
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    assert_eq!(argv[0], copied, "the binary the runtime stage copies");
    let admin = load_configmap_routes().admin.unwrap();
    assert_eq!(
        argv[1..],
        [
            "probe".to_string(),
            "--url".into(),
            format!("http://127.0.0.1:{}/readyz", admin.port())
        ]
    );
    // Docker's timeout must outlast the probe's own (2 s).
    let timeout = options
        .split_whitespace()
        .find_map(|o| o.strip_prefix("--timeout="))
        .expect("--timeout");
    let secs: u64 = timeout.trim_end_matches('s').parse().unwrap();
    assert!(secs > 2, "HEALTHCHECK --timeout={timeout}");
    // The arguments are valid usage of the real binary: against a closed port it says
    // "unhealthy" (1), not "bad usage" (2).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut args: Vec<String> = argv[1..].to_vec();
    args[2] = format!("http://127.0.0.1:{port}/readyz");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popgate"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
