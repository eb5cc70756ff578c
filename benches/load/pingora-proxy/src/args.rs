//! Command-line parsing. Hand-written (no clap) so the bench crate stays small; every mistake is
//! reported as a message for `error: ...` and exit 2, never a panic.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Upper bound on `--threads`: the harness machine has 2 cores, and a typo such as `--threads 1000`
/// would otherwise spawn a thousand runtimes before anything is measured.
const MAX_THREADS: usize = 256;

pub const USAGE: &str = "usage: pingora-bench-proxy --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT \
--sni NAME --ca ca.pem --cert client.pem --key client.key --authorization-file FILE [--threads N]";

/// What the command line asked for; files are only named here and read by `creds`.
#[derive(Debug)]
pub struct Args {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub sni: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub authorization_file: PathBuf,
    pub threads: usize,
}

/// Parses `--flag value` pairs (also `--flag=value`). Returns the message to print after `error: `.
pub fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut listen = None;
    let mut upstream = None;
    let mut sni = None;
    let mut ca = None;
    let mut cert = None;
    let mut key = None;
    let mut authorization_file = None;
    let mut threads = None;

    while let Some(arg) = argv.next() {
        if arg == "-h" || arg == "--help" {
            return Err(USAGE.to_string());
        }
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), value.to_string()),
            _ => {
                let value = argv
                    .next()
                    .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
                (arg, value)
            }
        };
        let slot = match flag.as_str() {
            "--listen" => &mut listen,
            "--upstream" => &mut upstream,
            "--sni" => &mut sni,
            "--ca" => &mut ca,
            "--cert" => &mut cert,
            "--key" => &mut key,
            "--authorization-file" => &mut authorization_file,
            "--threads" => &mut threads,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        };
        if slot.replace(value).is_some() {
            return Err(format!("{flag} given twice"));
        }
    }

    let need =
        |v: Option<String>, name: &str| v.ok_or_else(|| format!("{name} is required\n{USAGE}"));
    let listen = loopback_addr(&need(listen, "--listen")?, "--listen")?;
    let upstream = loopback_addr(&need(upstream, "--upstream")?, "--upstream")?;
    let sni = need(sni, "--sni")?;
    if sni.is_empty() {
        // pingora turns certificate verification off for an empty SNI; the peer must verify.
        return Err("--sni must not be empty".to_string());
    }
    let threads = match threads {
        None => 1,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => n,
            _ => return Err(format!("--threads must be 1..={MAX_THREADS}, got {t:?}")),
        },
    };
    Ok(Args {
        listen,
        upstream,
        sni,
        ca: need(ca, "--ca")?.into(),
        cert: need(cert, "--cert")?.into(),
        key: need(key, "--key")?.into(),
        authorization_file: need(authorization_file, "--authorization-file")?.into(),
        threads,
    })
}

/// The bench only ever talks to this machine: refuse anything but a loopback IP:PORT.
fn loopback_addr(value: &str, flag: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = value
        .parse()
        .map_err(|_| format!("{flag} must be IP:PORT, got {value:?}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{flag} must be a loopback address, got {addr}"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Args, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    const GOOD: &[&str] = &[
        "--listen",
        "127.0.0.1:1",
        "--upstream=127.0.0.1:2",
        "--sni",
        "a",
        "--ca",
        "c",
        "--cert",
        "c",
        "--key",
        "k",
        "--authorization-file",
        "f",
    ];

    #[test]
    fn good_defaults_to_one_thread() {
        assert_eq!(run(GOOD).map(|a| a.threads), Ok(1));
    }

    #[test]
    fn refuses_bad_input() {
        let mut more = GOOD.to_vec();
        more.extend(["--threads", "0"]);
        assert!(run(&more).is_err());
        assert!(run(&GOOD[..GOOD.len() - 1]).is_err());
        let mut remote = GOOD.to_vec();
        remote[1] = "10.0.0.1:1";
        assert!(run(&remote).is_err());
        let mut dup = GOOD.to_vec();
        dup.extend(["--sni", "b"]);
        assert!(run(&dup).is_err());
        assert!(run(&["--bogus", "x"]).is_err());
    }
}
