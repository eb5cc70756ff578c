//! The process's allocator: jemalloc, with its background thread returning freed memory, and
//! start-up's freed memory returned at once.
//!
//! glibc's malloc keeps what a burst freed in its per-thread arenas: after an attack of stalled
//! bodies (tests/memory_baseline.rs) popgate's RSS stayed ~60 MiB above its cold figure for
//! good, since the fragmented arenas cannot be trimmed and `malloc_trim` needs `unsafe`.
//! jemalloc returns dirty pages to the kernel on a decay schedule (`dirty_decay_ms`: 1 s, compiled
//! in by `.cargo/config.toml`; jemalloc's own default is 10 s), but only while some thread calls
//! into it; popgate's worker threads go quiet when the attack ends, so its background thread does
//! the purging instead.
//!
//! Start-up is a burst of its own: it frees much while it still allocates (the parsed file,
//! each eager route's first request and answer), and at the configured decay those pages stay
//! resident for a second or more on top of what start-up still holds; its background thread is
//! woken early only when an arena gains more than 1,024 dirty pages (4 MiB). So `popgate run`
//! starts with the decay at 0 (a freed page goes back at once) and sets the configured decay
//! again once the first acquisitions have settled, handing back at that moment whatever is still
//! held; a reload ends the same way. 1,000 eager routes' start-up peak: 27.4 MiB against 28.4
//! (benches/README.md), and they were serving in 1.43-1.53 s against 1.37-1.61 s before. The
//! cost is system calls while the decay is 0: a full closed loop at that decay made ~2,500
//! `madvise` calls a second (5% more system calls); start-up ends it within `INITIAL_ROUND_WAIT`
//! (30 s) even when a token endpoint does not answer, so only requests served that early pay it.

use tikv_jemalloc_ctl::{Access as _, AsName as _};

/// jemalloc's keys (`AsName::name` asserts the terminating NUL, which each literal has).
const CONFIGURED_DECAY: &[u8] = b"opt.dirty_decay_ms\0";
/// The decay new arenas start with (jemalloc creates arenas lazily, as threads first allocate).
const NEW_ARENAS_DECAY: &[u8] = b"arenas.dirty_decay_ms\0";
/// One arena's decay; the second component of its MIB is the arena's index.
const ARENA_DECAY: &[u8] = b"arena.0.dirty_decay_ms\0";
/// Decay 0: a page is returned to the kernel as soon as it is freed.
const AT_ONCE: isize = 0;

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

/// From now until [`return_freed_memory_now`], every freed page goes back to the kernel at once.
/// Called before the config is loaded. Nothing changes when the configured decay is not a
/// positive time: `-1` (never purge) and `0` are an operator's explicit choice
/// (`_RJEM_MALLOC_CONF`). A failure is reported on stderr (logging is not set up yet) and leaves
/// the configured decay in place.
pub(crate) fn return_freed_memory_at_once() {
    if configured_decay().is_some_and(|ms| ms > 0)
        && let Err(e) = set_decay(AT_ONCE)
    {
        eprintln!(
            "popgate: jemalloc's decay could not be set for start-up ({e}); start-up's freed memory is returned on the configured schedule"
        );
    }
}

/// Returns every freed page jemalloc still holds to the kernel, and (after
/// [`return_freed_memory_at_once`]) puts the configured decay back. Called when a burst of
/// popgate's own work has ended: the first acquisitions of start-up, a reload.
pub(crate) fn return_freed_memory_now() {
    let Some(configured) = configured_decay().filter(|ms| *ms > 0) else {
        return;
    };
    // Setting an arena's decay purges what its new schedule allows at once: all of it at 0.
    if let Err(e) = set_decay(AT_ONCE).and_then(|()| set_decay(configured)) {
        tracing::warn!(error = %e, "jemalloc's freed memory could not be returned at once");
    }
}

/// The decay jemalloc was configured with (compiled in, or `_RJEM_MALLOC_CONF`), in ms.
fn configured_decay() -> Option<isize> {
    CONFIGURED_DECAY.name().read().ok()
}

/// Sets `ms` as the decay of every arena there is and of those still to come.
fn set_decay(ms: isize) -> tikv_jemalloc_ctl::Result<()> {
    NEW_ARENAS_DECAY.name().write(ms)?;
    let arenas = tikv_jemalloc_ctl::arenas::narenas::read()?;
    let mut arena = ARENA_DECAY.name().mib::<[usize; 3]>()?;
    for index in 0..arenas {
        arena[1] = index as usize;
        // An arena no thread has used yet does not exist (EFAULT); it will start with the
        // decay set above.
        let _ = arena.write(ms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Anonymous resident memory of this process, KiB (`/proc/self/status`).
    fn anon_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Resident, then freed, `CHUNKS` × `CHUNK` (3 MiB: under the 4 MiB that wakes jemalloc's
    /// background thread early, as start-up's garbage is per arena). Returns the anonymous RSS
    /// (KiB) while held and right after the free.
    fn hold_and_free() -> (usize, usize) {
        // 64 KiB: above jemalloc's thread-cache limit (32 KiB), so a free goes to the arena.
        const CHUNK: usize = 64 * 1024;
        const CHUNKS: usize = 48;
        let chunks: Vec<Vec<u8>> = (0..CHUNKS).map(|i| vec![i as u8 | 1; CHUNK]).collect();
        let held = anon_kib();
        drop(chunks);
        (held, anon_kib())
    }

    /// One test for both, in this order: the decay is the whole process's, so a second test
    /// running beside it would see its pages go back at once.
    #[test]
    fn freed_pages_go_back_at_once_during_start_up_and_when_asked() {
        const MIN_RETURNED_KIB: usize = 2 * 1024;
        let configured = configured_decay().unwrap();
        assert_eq!(configured, 1000);

        // Start-up: at once, without being asked.
        return_freed_memory_at_once();
        let (held, freed) = hold_and_free();
        assert!(
            held.saturating_sub(freed) >= MIN_RETURNED_KIB,
            "at decay 0 freeing 3 MiB returned only {} KiB (held {held}, after {freed})",
            held.saturating_sub(freed)
        );
        return_freed_memory_now();
        let restored: isize = NEW_ARENAS_DECAY.name().read().unwrap();
        assert_eq!(
            restored, configured,
            "the configured decay is back for new arenas"
        );

        // The configured decay keeps freed pages for now; asking returns them.
        let (held, freed) = hold_and_free();
        assert!(
            held.saturating_sub(freed) < MIN_RETURNED_KIB,
            "the configured decay returned {} KiB at once: this test could not tell",
            held.saturating_sub(freed)
        );
        return_freed_memory_now();
        let returned = anon_kib();
        assert!(
            freed.saturating_sub(returned) >= MIN_RETURNED_KIB,
            "asking returned only {} KiB of 3 MiB freed (after the free {freed}, after asking {returned})",
            freed.saturating_sub(returned)
        );
    }
}
