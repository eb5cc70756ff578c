#!/usr/bin/env python3
"""Interleaved A/B of popgate builds beside the peers: req/s per proxy CPU-second in the harness's
closed loop (64 keep-alive callers, 2 s warm-up), every build and peer once per round, medians over
the rounds. On a noisy VM this separates two builds better than two full runs of run.py: each round
measures all of them within a minute of each other.

    python3 benches/load/ab.py --build before=/path/to/popgate --build after=target/dist/popgate \\
        --peers nginx,haproxy --upstream-protocol h2 --placement pinned --rounds 5

Every target is 127.0.0.1; every run is bounded by --duration. The peers must be installed (run.py
installs them) and the harness's tools built (run.py builds them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import compare, intercept, procs  # noqa: E402
from harness.context import bench_context, popgate_binaries  # noqa: E402
from harness.load import Generator, Upstream  # noqa: E402
from harness.peers import YARDSTICKS, Placement  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "benches" / "load" / "tools" / "target" / "release"
# As run.py: 64 keep-alive callers, 2 s warm-up.
CONNECTIONS = 64
WARMUP_S = 2.0
# A round of one proxy is bounded: 2 s warm-up and at most this long a measurement.
MAX_DURATION_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", required=True, metavar="NAME=PATH",
                        help="a popgate binary to measure (repeat for each build)")
    parser.add_argument("--peers", default="nginx,haproxy",
                        help="peers measured each round (also floor: the yardstick bench-floor)")
    parser.add_argument("--upstream-protocol", choices=["h2", "http1.1"], default="h2")
    parser.add_argument("--placement", choices=["pinned", "unpinned"], default="pinned")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    parser.add_argument("--body-bytes", type=int, default=0,
                        help="send POSTs with a body of this many bytes instead of GETs")
    parser.add_argument("--intercept", action="store_true",
                        help="drive the builds through CONNECT interception (TLS to popgate inside a "
                             "tunnel) instead of plain HTTP; no peers (they do not intercept)")
    parser.add_argument("--out", type=Path, help="write the per-round figures as JSON here")
    args = parser.parse_args()
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:.0f}] s")
    if args.body_bytes < 0:
        parser.error("--body-bytes must be 0 (GETs) or more")
    builds = dict(b.split("=", 1) for b in args.build)
    peers = [p for p in args.peers.split(",") if p]
    if args.intercept and (peers or args.body_bytes):
        parser.error("--intercept measures popgate builds alone, with GETs: give --peers '' and no --body-bytes")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bins = {**popgate_binaries(ROOT), "upstream": TOOLS / "bench-upstream", "load": TOOLS / "bench-load",
            "floor": TOOLS / "bench-floor"}
    if args.placement == "pinned":
        pl = Placement("pinned", "0", "1", 1)
    else:
        pl = Placement("unpinned", None, None, os.cpu_count() or 2)
    work = Path(tempfile.mkdtemp(prefix="popgate-ab-"))
    per_cpu: dict[str, list[float]] = {}
    answers: dict[str, list[dict]] = {}
    ca: dict | None = None
    try:
        ctx, cert = bench_context(bins, work)
        up = Upstream.start(bins["upstream"], pl.other_cpus, pl.workers, cert, ctx.authority["ca"], work,
                            http1_only=args.upstream_protocol == "http1.1")
        ctx.upstream_addr = up.addr
        gen = Generator(bins["load"], pl.other_cpus, pl.workers, work)
        for rnd in range(args.rounds):
            for name in list(builds) + peers:
                proxy = name
                if name in builds:
                    ctx.bin["popgate"] = Path(builds[name])
                    proxy = "popgate"
                if args.intercept:
                    # The interception CA is made by the first build's `popgate ca init`; every
                    # build signs its leaves with it.
                    ca = ca or intercept.make_ca(ctx)
                    out = intercept.tunnel_closed(ctx, pl, up, gen, ca, CONNECTIONS, args.duration, WARMUP_S)
                else:
                    out = compare.closed(proxy, ctx, pl, up, gen, CONNECTIONS, args.duration, WARMUP_S,
                                         args.body_bytes)
                # `errors` counts requests that got no answer; answers with an error status are
                # counted apart. A round with either measured something else than forwarding
                # (a peer answering 500 spends almost no CPU per answer): it is reported, not
                # counted in the medians.
                not_ok = out["requests"] - out["ok"] - out["errors"]
                valid = compare.all_2xx(out)
                answers.setdefault(name, []).append({"ok": out["ok"], "errors": out["errors"],
                                                    "error_statuses": not_ok, "status": out["status"],
                                                    "all_2xx": valid})
                value = 1e4 / out["cpu_s_per_10k"]
                if valid:
                    per_cpu.setdefault(name, []).append(value)
                print(f"round {rnd} {name:12s} {value:8.0f} req/s per CPU-s  ({out['rps']:.0f} req/s, "
                      f"{out['upstream_handshakes']} upstream handshakes, {out['errors']} errors, "
                      f"{not_ok} error statuses{'' if valid else '; not counted'})", flush=True)
        up.child.stop()
    finally:
        for child in reversed(procs.ALL):
            child.stop()
    # Only the rounds where every request was answered 2xx count (above); a peer without one is
    # no yardstick. The floor is measured beside the peers, never one of them.
    best_peer = max((statistics.median(per_cpu[p]) for p in peers if p in per_cpu and p not in YARDSTICKS),
                    default=None)
    print(f"\n{args.placement}, {args.upstream_protocol} upstream: median req/s per CPU-s over {args.rounds} rounds")
    for name, values in per_cpu.items():
        median = statistics.median(values)
        ratio = f"  {median / best_peer:.3f}x the best peer" if best_peer else ""
        print(f"  {name:12s} {median:8.0f}{ratio}   rounds: {', '.join(f'{v:.0f}' for v in values)}")
    for name in list(builds) + peers:
        if name not in per_cpu:
            print(f"  {name:12s} no round with every request answered 2xx (see the rounds above)")
    if args.out:
        args.out.write_text(json.dumps({"placement": args.placement, "upstream_protocol": args.upstream_protocol,
                                        "body_bytes": args.body_bytes, "intercept": args.intercept, "per_cpu_second": per_cpu,
                                        "answers": answers}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
