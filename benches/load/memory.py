#!/usr/bin/env python3
"""popgate's memory figures alone, measured as `run.py` measures them, in about a minute:

    python3 benches/load/memory.py [--idle 9900] [--routes 1000] [--closed-s 8]

- peak RSS (VmHWM) with one route after a closed-loop phase (64 connections, pinned: popgate on
  CPU 0 with one worker, generator and upstream on CPU 1);
- RSS per idle keep-alive caller: VmRSS before, and 1 s after `--idle` callers have each been
  served one request and left open, divided by the callers held;
- idle RSS with `--routes` eager routes, each with its own audience and token.

Uses the binaries already built: popgate's production build and the local authority (the builds
`harness.context.POPGATE_BUILDS` lists, which `run.py` runs), the bench tools in
`load/tools/target/release`. Every target is 127.0.0.1; every phase is bounded.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import compare, procs, token_path  # noqa: E402
from harness.load import Generator, Upstream  # noqa: E402
from harness.peers import Placement, start  # noqa: E402
from harness.context import bench_context, popgate_binaries  # noqa: E402
from harness.procs import memory_kib  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LOAD = ROOT / "benches" / "load"
NOFILE = 65_536
# How long the idle callers are held: the RSS reading needs them held past its settling time.
IDLE_HOLD_S = compare.IDLE_SETTLE_S + compare.IDLE_READ_MARGIN_S + 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=9_900, help="idle callers held (0: skip)")
    ap.add_argument("--routes", type=int, default=1_000, help="eager routes (0: skip)")
    ap.add_argument("--closed-s", type=float, default=8.0, help="closed-loop seconds before the peak")
    ap.add_argument("--popgate", type=Path, help="measure this popgate binary instead (an A/B against another build)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, NOFILE), max(hard, NOFILE)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tools = LOAD / "tools" / "target" / "release"
    bins = {**popgate_binaries(ROOT),
            "upstream": tools / "bench-upstream", "load": tools / "bench-load"}
    if args.popgate:
        bins["popgate"] = args.popgate
    for name, path in bins.items():
        if not path.exists():
            print(f"error: {name} binary {path} is missing", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="popgate-mem-"))
    try:
        ctx, cert = bench_context(bins, work)
        info = ctx.authority
        pinned = Placement("pinned", "0", "1", 1)
        up = Upstream.start(bins["upstream"], pinned.other_cpus, 1, cert, info["ca"], work)
        ctx.upstream_addr = up.addr
        gen = Generator(bins["load"], pinned.other_cpus, 1, work)
        out: dict = {}
        child, port = start("popgate", ctx, pinned)
        try:
            gen.run("closed", f"http://127.0.0.1:{port}/bench", 64, args.closed_s + 1, ["--warmup", "1"])
            out["peak_rss_kib_1_route"] = memory_kib(child.pid, "VmHWM")
            # The split of the current RSS right after the load: the binary's resident pages
            # (RssFile) count in VmHWM too, whatever popgate allocates.
            out["rss_anon_kib_after_load"] = memory_kib(child.pid, "RssAnon")
            out["rss_file_kib_after_load"] = memory_kib(child.pid, "RssFile")
            if args.idle:
                out.update(compare.idle(child, port, gen, args.idle, IDLE_HOLD_S))
        finally:
            child.stop()
            # Lines a diagnostic build prints to stderr (e.g. future sizes), kept in the report.
            notes = [ln for ln in child.log_path.read_text(errors="replace").splitlines()
                     if ln.startswith("SIZE ")]
            if notes:
                out["notes"] = notes
        print(json.dumps(out), flush=True)
        if args.routes:
            unpinned = Placement("unpinned", None, None, 2)
            out["routes"] = token_path.many_routes_rss(ctx, unpinned, args.routes)
        up.child.stop()
        print(json.dumps(out, indent=1))
        return 0
    finally:
        for c in reversed(procs.ALL):
            c.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
