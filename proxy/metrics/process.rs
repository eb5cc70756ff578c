//! The standard `process_*` metrics (the names and meanings of Prometheus' client libraries),
//! read from `/proc` at scrape time: CPU seconds, resident and virtual memory, open and maximum
//! file descriptors, start time and threads. The prometheus crate's own process collector is not
//! used: it needs the crate's `process` feature and the `procfs` crate, for six numbers read from
//! three small files. Where `/proc` is missing (not Linux) the families are left out.

use prometheus::{Gauge, Registry};

/// Clock ticks per second in `/proc/*/stat` CPU and start times: the kernel's `USER_HZ`, which
/// is 100 on every architecture Linux reports to user space with (x86, arm, arm64, ...), fixed as
/// part of the ABI whatever the kernel's internal `HZ`.
const USER_HZ: f64 = 100.0;

/// What this scrape read (each part `None` when its file could not be read).
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    threads: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl Process {
    fn read() -> Self {
        let mut p = Process::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| boot_time(&s));
            (p.cpu_seconds, p.start_time_seconds) = from_stat(&stat, boot);
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            p.resident_bytes = status_kib(&status, "VmRSS:").map(|k| k * 1024.0);
            p.virtual_bytes = status_kib(&status, "VmSize:").map(|k| k * 1024.0);
            p.threads = status_kib(&status, "Threads:");
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        p.max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft as f64);
        p
    }
}

/// CPU seconds (user + system) and the start time (Unix seconds, given the boot time) from
/// `/proc/self/stat`. The command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn from_stat(stat: &str, boot_time: Option<f64>) -> (Option<f64>, Option<f64>) {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return (None, None);
    };
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15, starttime 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let cpu = match (field(14), field(15)) {
        (Some(u), Some(s)) => Some((u + s) / USER_HZ),
        _ => None,
    };
    let start = match (field(22), boot_time) {
        (Some(ticks), Some(boot)) => Some(boot + ticks / USER_HZ),
        _ => None,
    };
    (cpu, start)
}

/// `btime` (boot time, Unix seconds) from `/proc/stat`.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The number after `key` in `/proc/self/status` (`VmRSS:  1234 kB` → 1234).
fn status_kib(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn gauge(r: &Registry, name: &str, help: &str, value: Option<f64>) -> prometheus::Result<()> {
    let Some(value) = value else { return Ok(()) };
    let g = Gauge::new(name, help)?;
    g.set(value);
    r.register(Box::new(g))
}

/// Registers this scrape's `process_*` values into `r` (a registry made for one scrape).
pub(crate) fn register(r: &Registry) -> prometheus::Result<()> {
    let p = Process::read();
    if let Some(cpu) = p.cpu_seconds {
        // A counter in the exposition, as client libraries expose it; the value is in seconds
        // with tick resolution, so it is set through a float counter.
        let c = prometheus::Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )?;
        c.inc_by(cpu);
        r.register(Box::new(c))?;
    }
    gauge(
        r,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        p.resident_bytes,
    )?;
    gauge(
        r,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        p.virtual_bytes,
    )?;
    gauge(
        r,
        "process_open_fds",
        "Number of open file descriptors.",
        p.open_fds,
    )?;
    gauge(
        r,
        "process_max_fds",
        "Maximum number of open file descriptors (the soft limit).",
        p.max_fds,
    )?;
    gauge(
        r,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    )?;
    gauge(
        r,
        "process_threads",
        "Number of OS threads in the process.",
        p.threads,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    #[test]
    fn parses_stat_with_a_command_name_holding_parentheses_and_spaces() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 1000 100 18446744073709551615";
        let (cpu, start) = from_stat(stat, Some(1_000.0));
        assert_eq!(cpu, Some(3.0));
        assert_eq!(start, Some(1_000.0 + 123.45));
        assert_eq!(from_stat("garbage", Some(1.0)), (None, None));
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
        assert_eq!(
            status_kib("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048.0)
        );
        assert_eq!(status_kib("Name:\tx\n", "VmRSS:"), None);
    }

    #[test]
    fn reads_this_process() {
        let p = Process::read();
        assert!(p.resident_bytes.unwrap() > 0.0);
        assert!(p.virtual_bytes.unwrap() >= p.resident_bytes.unwrap());
        assert!(p.open_fds.unwrap() >= 3.0);
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        let start = p.start_time_seconds.unwrap();
        assert!(
            start <= now() + 1.0 && start > now() - 24.0 * 3600.0,
            "{start}"
        );
    }
}
