//! `popgate dev` without `--once`, the real binary: prints the table and `curl -x` examples (plain
//! `http://`, and `https://` through interception with the CA it made) that work against the
//! running proxy, keeps serving, and exits 0 on Ctrl-C (SIGINT).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::kit::dev::{RUN_BOUND, repo_root};

/// Kills the child (by its own pid) if the test ends early.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn serves_the_printed_curl_examples_until_ctrl_c() {
    let config = popgate::config::load(&repo_root().join("routes.yaml")).unwrap();
    let routes = config.routes.len();
    // Host routes also get an https:// example, through the CA `popgate dev` made for the run.
    let https = config.routes.iter().filter(|r| r.host.is_some()).count();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_popgate"))
            .current_dir(repo_root())
            .args(["dev", "--listen", "127.0.0.1:0"])
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("IDENTITY_HEADER")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut examples = Vec::new();
    let deadline = std::time::Instant::now() + RUN_BOUND;
    // The examples block is the last output before serving; it ends with the last route's line.
    while examples.len() < routes + https {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no curl examples; output:\n{}", seen.join("\n")));
        if let Some(cmd) = line.trim().strip_prefix("curl ") {
            examples.push(cmd.split("    #").next().unwrap().trim().to_string());
        }
        seen.push(line);
    }
    let all_ok = format!("{routes} of {routes} routes OK");
    assert!(seen.contains(&all_ok), "{seen:#?}");
    let intercepted = examples
        .iter()
        .filter(|e| e.starts_with("--cacert "))
        .count();
    assert_eq!(intercepted, https, "{examples:#?}");

    // Every printed example answers 200 from the resource through the running proxy.
    for example in &examples {
        let out = Command::new("curl")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(example.split_whitespace())
            .output()
            .expect("curl is installed");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "curl {example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let sent = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let stopping = lines.recv_timeout(left).expect("a line after SIGINT");
    assert_eq!(stopping, "popgate dev: stopping");
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "popgate dev did not exit after SIGINT"
        );
        // Process exit has no in-process signal to await; poll gently.
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status}");
}
