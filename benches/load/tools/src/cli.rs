//! Error exit shared by both binaries: the harness reads stdout as data, so a bad input is one
//! `error: ...` line on stderr and exit status 2 (the same status clap uses for usage errors).

use std::fmt::Display;

/// Exit status for bad input or a failed start, matching clap's usage-error status.
pub const EXIT_USAGE: i32 = 2;

/// Prints `error: <msg>` to stderr and exits with [`EXIT_USAGE`].
pub fn fail(msg: impl Display) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(EXIT_USAGE)
}

/// Refuses (exit 2) any address that is not loopback: the harness only runs on loopback.
pub fn require_loopback(addrs: &[std::net::SocketAddr]) {
    for addr in addrs {
        if !addr.ip().is_loopback() {
            fail(format!(
                "{addr} is not a loopback address: the harness only runs on loopback"
            ));
        }
    }
}

/// Builds the tokio runtime: one worker means a current-thread runtime, so the tool runs on the
/// main thread alone and costs the shared core nothing extra.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Raises RLIMIT_NOFILE to the hard limit, and refuses a run that could not open its connections.
pub fn raise_fd_limit(needed: u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if limit != 0 && limit < needed {
        fail(format!(
            "{needed} file descriptors needed but the hard limit is {limit}: raise it (ulimit -Hn) first"
        ));
    }
}
