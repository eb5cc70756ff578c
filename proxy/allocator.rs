//! The process's allocator: jemalloc, with its background thread returning freed memory.
//!
//! glibc's malloc keeps what a burst freed in its per-thread arenas: after an attack of stalled
//! bodies (tests/memory_baseline.rs) popgate's RSS stayed ~60 MiB above its cold figure for
//! good, since the fragmented arenas cannot be trimmed and `malloc_trim` needs `unsafe`.
//! jemalloc returns dirty pages to the kernel on a decay schedule (`dirty_decay_ms`, 10 s by
//! default), but only while some thread calls into it; popgate's worker threads go quiet when
//! the attack ends, so its background thread does the purging instead.

/// Starts jemalloc's background purging thread. A failure (e.g. a platform without it) only
/// means freed memory is returned on the next allocations instead of in the background; it is
/// reported on stderr, as logging is not set up yet.
pub(crate) fn return_freed_memory_in_the_background() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!(
            "popgate: jemalloc's background thread did not start ({e}); freed memory is returned to the kernel only as popgate allocates"
        );
    }
}
