//! `popgate bench` refuses bad input with one clear line and exit 2 before it starts anything, and
//! Ctrl-C (SIGINT) ends a run early with the figures so far.

use std::io::{BufRead as _, BufReader};
use std::time::Duration;

use crate::kit::bench::*;

/// Exit 2, nothing on stdout, and stderr names `what`.
fn refused(args: &[&str], what: &[&str]) {
    let out = bench(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for w in what {
        assert!(stderr.contains(w), "{args:?}: `{w}` not in {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_input_is_named_and_exits_2() {
    refused(
        &["--dev", "--route", "nope"],
        &["--route nope", "no route named `nope`", "graph"],
    );
    refused(&["--dev", "--route", "graph", "--rate", "0"], &["--rate 0"]);
    refused(
        &[
            "--dev",
            "--route",
            "graph",
            "--body",
            "/nonexistent/body.json",
        ],
        &["--body /nonexistent/body.json", "cannot read"],
    );
    refused(
        &["--dev", "--route", "graph=items"],
        &["`items` is not a path"],
    );
    refused(
        &["--dev", "--route", "graph", "--duration", "11m"],
        &["at most 600 s"],
    );
    refused(
        &["--dev", "--route", "graph", "--header", "nocolon"],
        &["--header"],
    );
    refused(
        &["--dev", "--route", "graph", "--proxy", "http://127.0.0.1:1"],
        &["--proxy"],
    );
    refused(
        &[
            "--route",
            "graph",
            "--rate",
            "5",
            "--proxy",
            "https://127.0.0.1:1",
        ],
        &["--proxy", "plain http"],
    );
    // Not --dev: graph's upstream is graph.microsoft.com, so a real rate needs consent.
    refused(
        &["--route", "graph", "--rate", "50"],
        &["non-loopback", "--max-rate"],
    );
    refused(&["--route", "graph"], &["closed loop", "--max-rate"]);
}

#[test]
fn ctrl_c_stops_the_run_and_still_prints_the_figures() {
    let mut child = bench_command(&[
        "--dev",
        "--route",
        "graph",
        "--concurrency",
        "1",
        "--duration",
        "60s",
        "--json",
        "--log-level",
        "info",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("popgate starts");
    // Wait for the load to start (set-up takes seconds in a debug build on a busy machine), then
    // let some requests through.
    let stderr = child.stderr.take().expect("stderr piped");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("bench load starting") {
                let _ = started_tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    started_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the load started");
    std::thread::sleep(Duration::from_secs(1));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let stopped = std::time::Instant::now();
    let out = child.wait_with_output().expect("popgate exits");
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "stopped promptly"
    );
    let log = reader.join().expect("stderr read");
    assert!(!log.contains("eyJ"), "a JWT in the log:\n{log}");
    let json = json_of(&out);
    assert_eq!(json["interrupted"], true, "{json}");
    let r = route(&json, "graph");
    assert!(n(&r["requests"]) > 0, "{r}");
    assert_eq!(n(&r["ok"]), n(&r["requests"]), "{r}");
    assert!(f(&json["elapsed_s"]) < 60.0, "{json}");
}
