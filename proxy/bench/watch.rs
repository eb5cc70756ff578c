//! What happens while the load runs: once a second, the live progress line (on a terminal) and
//! the token refreshes and certificate rotations popgate made, kept as marks for the report.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::metrics_source::Source;
use super::popgate_side::{PUBLISHED, Snapshot};
use super::record::Recorder;
use super::summary::Mark;

/// How often the progress line and the marks are refreshed: a person reads a line a second, and
/// a token refresh is placed on the plot to the second.
const TICK: Duration = Duration::from_secs(1);

/// Marks between two readings of popgate's metrics.
fn marks_between(then: &Snapshot, now: &Snapshot, t_s: f64) -> Vec<Mark> {
    let mut out = Vec::new();
    for (key, n) in &now.acquisitions {
        let before = then.acquisitions.get(key).copied().unwrap_or(0);
        if *n > before && key.ends_with(PUBLISHED) {
            let step = key.trim_end_matches(PUBLISHED);
            out.push(Mark {
                t_s,
                kind: if step == "refresh" {
                    "token refresh"
                } else {
                    "token acquired"
                },
                detail: format!("{} {step}", n - before),
            });
        }
    }
    for (route, not_after) in &now.binding_not_after {
        if then
            .binding_not_after
            .get(route)
            .is_some_and(|v| v != not_after)
        {
            out.push(Mark {
                t_s,
                kind: "certificate rotation",
                detail: route.clone(),
            });
        }
    }
    out
}

fn progress_line(names: &[String], recs: &[Arc<Recorder>], elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut line = format!("{:>4.0} s", elapsed.as_secs_f64());
    for (name, rec) in names.iter().zip(recs) {
        let (n, errors, p99_us) = rec.progress();
        line.push_str(&format!(
            " | {name}: {:.0}/s, {errors} err, p99 {:.1} ms",
            n as f64 / secs,
            p99_us as f64 / 1000.0
        ));
    }
    line
}

/// Runs until `stop` turns true: returns the marks seen since `t0`, read from `source` (none
/// without one).
pub(crate) async fn run(
    names: Vec<String>,
    recs: Vec<Arc<Recorder>>,
    t0: Instant,
    measure_start: Instant,
    source: Option<Source>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Mark> {
    let terminal = std::io::stderr().is_terminal();
    let mut marks = Vec::new();
    let mut last = match source {
        Some(s) => s.take().await,
        None => None,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if let Some(source) = source
            && let Some(now) = source.take().await
        {
            if let Some(then) = &last {
                let t_s = t0.elapsed().as_secs_f64().floor();
                marks.extend(marks_between(then, &now, t_s));
            }
            last = Some(now);
        }
        if terminal {
            let elapsed = Instant::now().saturating_duration_since(measure_start);
            let line = progress_line(&names, &recs, elapsed);
            // The line is redrawn in place; a closed stderr only loses the progress display.
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K{line}");
        }
    }
    if terminal {
        let _ = writeln!(std::io::stderr().lock());
    }
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_and_rotations_become_marks() {
        let mut then = Snapshot::default();
        then.acquisitions.insert("get/published".into(), 2);
        then.binding_not_after.insert("graph".into(), 100);
        let mut now = then.clone();
        now.acquisitions.insert("refresh/published".into(), 1);
        now.acquisitions.insert("refresh/failed".into(), 1);
        now.binding_not_after.insert("graph".into(), 200);
        let marks = marks_between(&then, &now, 3.0);
        let kinds: Vec<&str> = marks.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, ["token refresh", "certificate rotation"]);
        assert!(marks_between(&now, &now, 4.0).is_empty());
    }
}
