//! The process's open-file limit. Every caller connection, upstream connection and listening
//! socket is a file descriptor, and many distributions start services with a soft limit of 1,024
//! (below the default `max_connections` of one listener plus its upstream sockets), while the
//! hard limit is far higher. Raising the soft limit to the hard one is what nginx's
//! `worker_rlimit_nofile` and Envoy's packaging do; it needs no privilege.

use rlimit::Resource;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the limit in force. Returns it
/// (`None` when it cannot be read). A failure is logged and popgate goes on with the old limit.
pub fn raise_open_files_limit() -> Option<u64> {
    let (soft, hard) = match rlimit::getrlimit(Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit (RLIMIT_NOFILE)");
            return None;
        }
    };
    if soft >= hard {
        tracing::info!(soft, hard, "open-files limit (RLIMIT_NOFILE)");
        return Some(soft);
    }
    // `increase_nofile_limit` caps the request at what the kernel accepts (an infinite hard limit
    // is capped at `nr_open`).
    match rlimit::increase_nofile_limit(hard) {
        Ok(raised) => {
            tracing::info!(
                soft = raised,
                hard,
                was = soft,
                "open-files limit (RLIMIT_NOFILE) raised"
            );
            Some(raised)
        }
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit (RLIMIT_NOFILE); keeping it");
            Some(soft)
        }
    }
}
