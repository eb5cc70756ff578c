//! What an idle (parked) keep-alive HTTP/1 caller connection keeps on the heap (issue 13: at most
//! 2 KiB of RSS each): popgate in-process, [`CALLERS`] real loopback callers each served one
//! request and left open past the parking grace, and every live allocation counted by size.
//!
//! The counting allocator wraps the system allocator and keeps, per requested size, how many
//! allocations are live; the difference between before and after the callers, divided by their
//! number, is what one parked connection keeps. Bytes are also rounded up to jemalloc's size
//! classes (popgate's allocator in production), which is what the connection costs there. The
//! callers are blocking `std` sockets, so the test's own side allocates nothing per connection.
//!
//! Alone in its own test binary: a global allocator is per process, and any other test running
//! beside it would move the counts. Debug-build sizes are larger than release ones (futures keep
//! more in debug), so the bound is for this build; benches/load/memory.py measures release RSS.
//! Run with `--nocapture` to see the table of what stays per connection (sizes that a quarter
//! of the callers or more keep), and see [`TRACE_SIZE`] to find where a size comes from.

#[path = "kit/mod.rs"]
mod kit;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Duration;

use kit::dataplane::parked;
use kit::raw::{GRAPH, hardened, rig};

/// Idle callers held: enough that per-connection allocations stand out from the few the
/// process makes meanwhile, well under the default file-descriptor limit (two per caller, both
/// ends in this process).
const CALLERS: usize = 400;
/// Longer than the parking grace (250 ms), so every caller is parked when the heap is counted.
const SETTLE: Duration = Duration::from_millis(1_500);
/// Bound on each socket read or write of a caller.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most live bytes (rounded to jemalloc's size classes) one parked connection may keep in a
/// debug build. Measured 2026-12-06 (debug, 400 callers): 1,481 B (the task 384 B, its served
/// future 432 B, the socket's registration 256 B, `Connection` 120, `Activity` 104, the framing
/// guard's verdict 48, and 90 B of the runtime's and the open set's growth spread over the
/// callers); 2,362 B before the connection's shared parts were taken out of it. The bound
/// leaves ~300 B for growth the allocator or runtime may add, and fails on a regression of one
/// size class in the two large allocations.
const MAX_BYTES_PER_PARKED: usize = 1_792;

/// Sizes counted one by one; larger allocations are only summed.
const TRACKED: usize = 4_096;

/// Live allocations per requested size (index `TRACKED`: every larger one), and for the larger
/// ones their bytes. `[size][1]`: allocations aligned to more than 16 bytes (Tokio's
/// cache-line-aligned tasks and IO registrations), which jemalloc rounds differently.
static LIVE: [[AtomicIsize; 2]; TRACKED + 1] =
    [const { [const { AtomicIsize::new(0) }; 2] }; TRACKED + 1];
static LARGE_BYTES: AtomicIsize = AtomicIsize::new(0);

struct Counting;

/// Diagnostics: with `IDLE_MEMORY_TRACE_SIZE=<bytes>` (and optionally
/// `IDLE_MEMORY_TRACE_COUNT=<n>`, default 1), the first allocations of that size made while the
/// callers connect print their backtrace, to tell which code a size in the table belongs to.
static TRACE_SIZE: AtomicUsize = AtomicUsize::new(0);
static TRACE_LEFT: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Set while a backtrace is taken on this thread: its own allocations are not traced.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

fn maybe_trace(layout: Layout) {
    if layout.size() != TRACE_SIZE.load(Ordering::Relaxed)
        || TRACE_LEFT.load(Ordering::Relaxed) <= 0
    {
        return;
    }
    TRACING.with(|tracing| {
        if tracing.get() {
            return;
        }
        tracing.set(true);
        if TRACE_LEFT.fetch_sub(1, Ordering::Relaxed) > 0 {
            let trace = std::backtrace::Backtrace::force_capture();
            eprintln!(
                "TRACE {} B aligned to {}:\n{trace}",
                layout.size(),
                layout.align()
            );
        }
        tracing.set(false);
    });
}

fn record(layout: Layout, n: isize) {
    let size = layout.size().min(TRACKED);
    let aligned = usize::from(layout.align() > 16);
    LIVE[size][aligned].fetch_add(n, Ordering::Relaxed);
    if layout.size() >= TRACKED {
        LARGE_BYTES.fetch_add(n * layout.size() as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            record(layout, 1);
            maybe_trace(layout);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            record(layout, 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) };
        record(layout, -1);
    }
    // `realloc` keeps its default (alloc, copy, dealloc through the two above), so it is counted.
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// jemalloc's size class for `size` bytes aligned to `align` (4 KiB pages, 16-byte quantum:
/// 8, 16, 32, 48, …, 128, then four classes per doubling: 160, 192, 224, 256, 320, …).
fn jemalloc_class(size: usize, align: usize) -> usize {
    fn class(size: usize) -> usize {
        match size {
            0..=8 => 8,
            9..=128 => size.div_ceil(16) * 16,
            _ => {
                let step = size.next_power_of_two() / 8;
                size.div_ceil(step) * step
            }
        }
    }
    let mut c = class(size.div_ceil(align) * align);
    while !c.is_multiple_of(align) {
        c = class(c + 1);
    }
    c
}

/// A number from the environment, if set.
fn env_number(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// A copy of the live counts.
fn snapshot(into: &mut [[isize; 2]]) {
    for (slot, live) in into.iter_mut().zip(LIVE.iter()) {
        *slot = [
            live[0].load(Ordering::Relaxed),
            live[1].load(Ordering::Relaxed),
        ];
    }
}

/// One caller: connects, sends a GET, reads the whole answer and stays open.
fn caller(proxy: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let get = format!("GET http://{GRAPH}/download/10 HTTP/1.1\r\nHost: {GRAPH}\r\n\r\n");
    s.write_all(get.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..]).unwrap();
        assert!(n > 0, "popgate closed a keep-alive caller mid-answer");
        have += n;
        let text = std::str::from_utf8(&buf[..have]).unwrap_or("");
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        assert!(text.starts_with("HTTP/1.1 200"), "not a 200: {text}");
        let head = text[..head_end].to_ascii_lowercase();
        let body = &text[head_end + 4..];
        let done = match head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            Some(len) => body.len() >= len.trim().parse::<usize>().unwrap(),
            None => body.ends_with("0\r\n\r\n"),
        };
        if done {
            return s;
        }
        assert!(have < buf.len(), "answer larger than expected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_keep_alive_caller_keeps_little_on_the_heap() {
    let mut settings = hardened(|_| {});
    // One worker runtime of its own, as `popgate run` serves.
    settings.workers = Some(1);
    let rig = rig(settings).await;
    let proxy = rig.proxy.addr;
    // Warm up what stays for the process's life (token, upstream connection, pools, metrics'
    // children, the runtime's buffers), then let the warm-up callers go.
    let warm = tokio::task::spawn_blocking(move || {
        let callers: Vec<TcpStream> = (0..8).map(|_| caller(proxy)).collect();
        drop(callers);
    });
    warm.await.unwrap();
    tokio::time::sleep(SETTLE).await;

    let mut before = vec![[0isize; 2]; TRACKED + 1];
    let mut after = vec![[0isize; 2]; TRACKED + 1];
    let mut held = Vec::with_capacity(CALLERS);
    // The test upstream records every request it sees: forget them, so that only popgate's
    // memory is counted.
    let forget_seen = || {
        let mut seen = rig.upstream.state.seen.lock().unwrap();
        seen.clear();
        seen.shrink_to_fit();
    };
    forget_seen();
    let parked_before = parked();
    let large_before = LARGE_BYTES.load(Ordering::Relaxed);
    snapshot(&mut before);
    if let Some(size) = env_number("IDLE_MEMORY_TRACE_SIZE") {
        TRACE_SIZE.store(size, Ordering::Relaxed);
        let count = env_number("IDLE_MEMORY_TRACE_COUNT").unwrap_or(1);
        TRACE_LEFT.store(count as isize, Ordering::Relaxed);
    }
    let held = tokio::task::spawn_blocking(move || {
        held.extend((0..CALLERS).map(|_| caller(proxy)));
        held
    })
    .await
    .unwrap();
    tokio::time::sleep(SETTLE).await;
    forget_seen();
    snapshot(&mut after);
    let large = LARGE_BYTES.load(Ordering::Relaxed) - large_before;
    let parked = parked() - parked_before;

    let n = CALLERS as isize;
    let (mut bytes, mut classed, mut count) = (0isize, 0isize, 0isize);
    let mut table = String::new();
    for (size, (b, a)) in before.iter().zip(after.iter()).enumerate() {
        for (aligned, align) in [(0, 16), (1, 128)] {
            let d = a[aligned] - b[aligned];
            if d == 0 || size == TRACKED {
                continue;
            }
            let class = jemalloc_class(size, align) as isize;
            bytes += d * size as isize;
            classed += d * class;
            count += d;
            if d.abs() >= n / 4 {
                table.push_str(&format!(
                    "  {size:>5} B{} (class {class:>5}): {:>+6.2} per connection\n",
                    if aligned == 1 { ", aligned" } else { "" },
                    d as f64 / n as f64,
                ));
            }
        }
    }
    let per = |x: isize| x as f64 / n as f64;
    eprintln!(
        "SIZE per parked connection ({CALLERS} callers, {parked} parks): {:.0} B requested, \
         {:.0} B in jemalloc classes, {:.2} allocations; larger than {TRACKED} B: {:.0} B\n{table}",
        per(bytes),
        per(classed),
        per(count),
        per(large),
    );
    assert!(
        parked >= CALLERS as f64,
        "only {parked} of {CALLERS} callers were parked"
    );
    let per_connection = per(classed + large);
    assert!(
        per_connection <= MAX_BYTES_PER_PARKED as f64,
        "a parked connection keeps {per_connection:.0} B, more than {MAX_BYTES_PER_PARKED} B"
    );
    drop(held);
}
