//! The process's allocator: jemalloc, with its background thread returning freed memory.
//!
//! glibc's malloc keeps what a burst freed in its per-thread arenas: after an attack of stalled
//! bodies (tests/memory_baseline.rs) popgate's RSS stayed ~60 MiB above its cold figure for
//! good, since the fragmented arenas cannot be trimmed and `malloc_trim` needs `unsafe`.
//! jemalloc returns dirty pages to the kernel on a decay schedule (`dirty_decay_ms`: 1 s, compiled
//! in by `.cargo/config.toml`; jemalloc's own default is 10 s), but only while some thread calls
//! into it; popgate's worker threads go quiet when the attack ends, so its background thread does
//! the purging instead.

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

#[cfg(test)]
mod tests {
    /// The decay `.cargo/config.toml` compiles in: start-up's and a burst's freed pages go back
    /// within about a second (benches/README.md, memory levers), not jemalloc's default 10 s.
    #[test]
    fn the_short_dirty_decay_is_compiled_in() {
        let conf = tikv_jemalloc_ctl::config::malloc_conf::read().unwrap_or_default();
        // tikv-jemalloc-ctl 0.7 keeps the C string's terminator.
        assert!(
            conf.trim_end_matches('\0')
                .split(',')
                .any(|o| o == "dirty_decay_ms:1000"),
            "jemalloc's compiled-in options are {conf:?}; build from the repository so that .cargo/config.toml applies"
        );
    }
}
