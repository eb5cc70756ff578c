//! The table `popgate dev` prints: one aligned row per route, then the `curl` examples.

use std::fmt::Write as _;

use super::probe::ProbeResult;

/// Column headers, in order.
pub(crate) const HEADERS: [&str; 8] = [
    "ROUTE",
    "FLOW",
    "IDENTITY KIND",
    "TOKEN TYPE",
    "STATUS",
    "BINDING VERIFIED",
    "LATENCY MS",
    "RESULT",
];

fn cells(r: &ProbeResult) -> [String; 8] {
    [
        r.route.clone(),
        r.flow.to_string(),
        r.identity.clone(),
        r.token_type.to_string(),
        r.status.map_or_else(|| "-".into(), |s| s.to_string()),
        r.binding.clone(),
        r.latency.as_millis().to_string(),
        match &r.problem {
            None => "OK".into(),
            Some(cause) => format!("FAIL: {cause}"),
        },
    ]
}

/// The table: a header line and one line per result, columns padded to their widest cell (the
/// last column is not padded).
pub(crate) fn render(results: &[ProbeResult]) -> String {
    let rows: Vec<[String; 8]> = results.iter().map(cells).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADERS.map(str::to_string);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One `curl` command per route, through `listener`.
pub(crate) fn curl_examples(results: &[ProbeResult], listener: &str) -> String {
    let mut out = String::new();
    for r in results {
        let _ = writeln!(
            out,
            "  {}    # {}",
            r.target.curl_command(listener),
            r.route
        );
    }
    out
}

/// One `curl` command per host route as an `https://` app sends it, through the intercepting
/// `listener` with the CA in `ca`.
pub(crate) fn https_curl_examples(
    results: &[ProbeResult],
    listener: &str,
    ca: &std::path::Path,
) -> String {
    let mut out = String::new();
    for r in results {
        if let Some(command) = r.target.https_curl_command(listener, ca) {
            let _ = writeln!(out, "  {command}    # {} (https, intercepted)", r.route);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::targets::ProbeTarget;
    use std::time::Duration;

    #[test]
    fn columns_align_and_failures_say_why() {
        let ok = ProbeResult {
            route: "graph".into(),
            flow: "vanilla",
            identity: "certificate app".into(),
            token_type: "mtls_pop",
            status: Some(200),
            binding: "yes".into(),
            latency: Duration::from_millis(12),
            problem: None,
            target: ProbeTarget {
                host: Some("graph.microsoft.com".into()),
                path: "/popgate-dev".into(),
            },
        };
        let bad = ProbeResult {
            route: "a-much-longer-route".into(),
            status: Some(503),
            problem: Some("no_token: AADSTS700016".into()),
            ..ok.clone()
        };
        let text = render(&[ok, bad]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |line: &str, needle: &str| line.find(needle).unwrap();
        assert_eq!(col(lines[0], "FLOW"), col(lines[1], "vanilla"));
        assert_eq!(col(lines[1], "vanilla"), col(lines[2], "vanilla"));
        assert!(lines[1].ends_with("OK"));
        assert!(lines[2].ends_with("FAIL: no_token: AADSTS700016"));
    }
}
