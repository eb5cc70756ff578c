"""The side-by-side measurements: closed-loop throughput, fixed-rate latency, idle connections."""

from __future__ import annotations

import statistics
import time

from .load import Generator, Upstream
from .peers import Ctx, Placement, start
from .procs import HarnessError, cpu_seconds, memory_kib

# Settling time before reading RSS with the idle connections open: the proxy has just accepted and
# served them; give its allocator a moment so the reading is the steady state, not the peak.
# popgate's jemalloc returns freed pages after 1 s (`dirty_decay_ms`, .cargo/config.toml), so a
# reading at 1 s still held the buffers of the 9,900 first requests: 2,142-2,404 B per caller
# against 1,734-1,774 B at 3 s and at 5 s (benches/README.md, fifth run). The peers' allocators
# keep what they freed either way.
IDLE_SETTLE_S = 3.0
# The idle callers must still be held when RSS is read: the generator holds them for its own
# `--hold` from the moment it reports them all held, while the reading waits IDLE_SETTLE_S.
IDLE_READ_MARGIN_S = 1.0


def direct_args(ctx: Ctx) -> dict:
    auth = ctx.work / "authorization.txt"
    auth.write_text(f"mtls_pop {ctx.token}\n")
    return {"cert": ctx.client_cert, "key": ctx.client_key, "ca": ctx.bench_ca, "authorization_file": auth}


def _summary(load: dict, upstream: dict, cpu: float | None) -> dict:
    served = max(upstream["requests"], 1)
    return {
        "rps": load.get("ok_rps", load.get("rps")),
        "achieved_rps": load.get("achieved_rps"),
        "requests": load["requests"],
        "ok": load["ok"],
        "errors": load["errors"],
        "status": load.get("status", {}),
        "reconnects": load.get("reconnects", 0),
        "latency_us": load["latency_us"],
        "upstream_requests": upstream["requests"],
        "upstream_handshakes": upstream["tls_handshakes"],
        "upstream_unauthorized": upstream["unauthorized"],
        "reuse": 1.0 - upstream["tls_handshakes"] / served,
        "cpu_s_per_10k": None if cpu is None else cpu / served * 10_000,
    }


def medians(runs: list[dict]) -> dict:
    """One proxy's fixed-rate rounds (each a `_summary`) as one: the first round's figures (and
    its idle-caller readings) with CPU per request and each latency percentile replaced by the
    median over the rounds, errors summed, reuse the worst; `rounds` keeps each round's own."""
    out = dict(runs[0])
    lat = {k: statistics.median(r["latency_us"][k] for r in runs) for k in runs[0]["latency_us"]}
    out["latency_us"] = lat
    cpus = [r["cpu_s_per_10k"] for r in runs]
    out["cpu_s_per_10k"] = None if None in cpus else statistics.median(cpus)
    for key in ("requests", "ok", "errors", "upstream_requests", "upstream_handshakes",
                "upstream_unauthorized", "reconnects"):
        out[key] = sum(r[key] for r in runs)
    out["reuse"] = min(r["reuse"] for r in runs)
    out["rounds"] = [{"cpu_s_per_10k": r["cpu_s_per_10k"], "p50": r["latency_us"]["p50"],
                      "p99": r["latency_us"]["p99"], "errors": r["errors"]} for r in runs]
    return out


def all_2xx(out: dict) -> bool:
    """Whether every request of a run (a `_summary`) was answered 2xx: none went unanswered and
    none got an error status. A run with either measured something else than forwarding."""
    return out["ok"] > 0 and out["ok"] == out["requests"]


def _phase(mode: str, name: str, ctx: Ctx, pl: Placement, up: Upstream, gen: Generator, conns: int,
           duration: float, extra: list[str], idle_conns: int = 0, idle_hold: float = 0) -> dict:
    """One load phase against a freshly started proxy (or the upstream itself for `direct`)."""
    if name == "direct":
        up.reset()
        load = gen.run(mode, f"https://{up.addr}/bench", conns, duration, extra, direct=direct_args(ctx))
        return _summary(load, up.stats(), None)
    child, port = start(name, ctx, pl)
    try:
        up.reset()
        cpu0 = cpu_seconds(child.pid)
        load = gen.run(mode, f"http://127.0.0.1:{port}/bench", conns, duration, extra)
        cpu = cpu_seconds(child.pid) - cpu0
        out = _summary(load, up.stats(), cpu)
        out["peak_rss_kib"] = memory_kib(child.pid, "VmHWM")
        # The split at the end of the load: anonymous memory is the proxy's own; file-backed is
        # its binary and libraries as mapped (clean page cache, shared between processes, and for
        # a large binary mostly how much of it the kernel's fault-around and read-ahead mapped).
        out["rss_anon_kib"] = memory_kib(child.pid, "RssAnon")
        out["rss_file_kib"] = memory_kib(child.pid, "RssFile")
        if idle_conns:
            out.update(idle(child, port, gen, idle_conns, idle_hold))
        return out
    finally:
        child.stop()


def closed(name: str, ctx: Ctx, pl: Placement, up: Upstream, gen: Generator, conns: int,
           duration: float, warmup: float, body_bytes: int = 0) -> dict:
    """Maximum throughput: every connection sends back to back (POSTs of `body_bytes` when > 0)."""
    extra = ["--warmup", str(warmup)] + (["--body-bytes", str(body_bytes)] if body_bytes else [])
    return _phase("closed", name, ctx, pl, up, gen, conns, duration + warmup, extra)


def at_rate(name: str, ctx: Ctx, pl: Placement, up: Upstream, gen: Generator, conns: int, rate: int,
            duration: float, warmup: float, idle_conns: int = 0, idle_hold: float = 0) -> dict:
    """Latency at a fixed rate (coordinated-omission corrected), then optionally idle callers."""
    return _phase("rate", name, ctx, pl, up, gen, conns, duration + warmup,
                  ["--rate", str(rate), "--warmup", str(warmup)], idle_conns, idle_hold)


def idle(child, port: int, gen: Generator, conns: int, hold: float) -> dict:
    """RSS with `conns` idle keep-alive callers, each served one request first, read while they are
    held (`hold` must outlast the settling time)."""
    if hold < IDLE_SETTLE_S + IDLE_READ_MARGIN_S:
        raise HarnessError(f"idle callers held {hold} s: the RSS reading waits {IDLE_SETTLE_S} s, "
                           f"hold them at least {IDLE_SETTLE_S + IDLE_READ_MARGIN_S} s")
    time.sleep(IDLE_SETTLE_S)
    before = memory_kib(child.pid, "VmRSS")
    # RssAnon beside VmRSS: the binary's resident file pages (its text; on a VM with a large
    # read-ahead nearly all of it) are in VmRSS whatever the connections cost.
    anon_before = memory_kib(child.pid, "RssAnon")
    seen: dict = {}

    def measure(holding: int) -> None:
        time.sleep(IDLE_SETTLE_S)
        seen["holding"] = holding
        seen["rss_kib"] = memory_kib(child.pid, "VmRSS")
        seen["anon_kib"] = memory_kib(child.pid, "RssAnon")

    load = gen.run("idle", f"http://127.0.0.1:{port}/bench", conns, hold,
                   ["--hold", str(hold)], hold_callback=measure)
    held = seen.get("holding", 0)
    rss = seen.get("rss_kib", 0)
    return {
        "idle_conns": held,
        "idle_ok": load.get("ok"),
        "rss_before_idle_kib": before,
        "rss_idle_kib": rss,
        "rss_per_idle_conn_bytes": (rss - before) * 1024 / held if held else None,
        "rss_anon_before_idle_kib": anon_before,
        "rss_anon_idle_kib": seen.get("anon_kib", 0),
    }
