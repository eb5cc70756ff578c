#!/usr/bin/env python3
"""Connection soak: popgate under 10,000 silent or slow connections, a slowloris mix and steady
normal load at once, on loopback, bounded in time.

    python3 benches/soak/run.py --binary target/release/popgate        # about 100 s
    python3 benches/soak/run.py --binary target/release/popgate --quiet-s 5 --attack-s 10 --silent 2000

popgate runs as `popgate dev` (the local authority in-process, demo credentials from
examples/dev/), so a normal caller's request goes all the way: route, PoP token, mTLS upstream,
200. Phases: a quiet run (normal load only), then the attack (normal load plus attackers). Each
normal caller opens a fresh connection per request (as `curl -x` does) and must get 200 within
--request-timeout-s. Attackers, in a separate process so their event loop does not slow the
normal callers' clock:

- silent: connect and send nothing; reconnect (after --reconnect-ms) when popgate closes it;
- partial preface: send `PRI * HTTP/2.0\\r\\n` and stop; reconnect likewise;
- slowloris: a request head trickled one byte per second; reconnect likewise.

Reports the normal callers' p50/p99 in both phases, their failures, how many attacker sockets
were open, and popgate's RSS (VmRSS, sampled every second). Loopback only; every child is
stopped on exit. Exit status 1 if a normal caller failed or p99 under attack exceeds 2x quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "examples" / "dev"
MAX_TOTAL_S = 120  # the whole soak must stay within two minutes
REQUEST = (b"GET http://graph.microsoft.com/v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\n"
           b"Connection: close\r\n\r\n")
PARTIAL_PREFACE = b"PRI * HTTP/2.0\r\n"
SLOW_HEAD = b"GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nx-slow: " + b"a" * 200

CONFIG = f"""version: 1
listeners:
  - address: 127.0.0.1:0
identities:
  app:
    kind: confidential_client
    tenant_id: 751a212b-4003-416e-b600-e1f48e40db9f
    client_id: d3adb33f-c0de-ed0c-c0de-deadb33fc0d3
    certificate: {{ cert_file: {DEV}/app.pem, key_file: {DEV}/app.key }}
    allow_insecure_key_permissions: true # demo key in git (which keeps no 0600)
routes:
  - name: graph
    match: {{ host: graph.microsoft.com }}
    resource: https://graph.microsoft.com
    flow: vanilla
    identity: app
"""


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# Seconds after the attack before RSS is sampled a second time (jemalloc's dirty_decay_ms is 10 s).
SETTLE_S = 18


def rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) if m else 0


async def one_request(addr, timeout_s: float) -> tuple[float, str | None]:
    started = time.perf_counter()
    try:
        async def go():
            reader, writer = await asyncio.open_connection(*addr)
            writer.write(REQUEST)
            data = await reader.read()
            writer.close()
            return data
        data = await asyncio.wait_for(go(), timeout_s)
    except Exception as e:  # noqa: BLE001 - every failure is counted by kind
        return time.perf_counter() - started, type(e).__name__
    took = time.perf_counter() - started
    status = data[9:12].decode(errors="replace")
    return took, None if status == "200" else f"status {status or 'none'}"


async def normal_load(addr, callers: int, seconds: float, timeout_s: float) -> dict:
    latencies: list[float] = []
    failures: dict[str, int] = {}
    stop = time.monotonic() + seconds

    async def caller():
        while time.monotonic() < stop:
            took, err = await one_request(addr, timeout_s)
            if err:
                failures[err] = failures.get(err, 0) + 1
            else:
                latencies.append(took)

    await asyncio.gather(*(caller() for _ in range(callers)))
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2) if latencies else None  # noqa: E731
    return {"ok": len(latencies), "failures": failures, "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "max_ms": round(latencies[-1] * 1000, 2) if latencies else None}


def attack(addr, silent: int, partial: int, slow: int, seconds: float, reconnect_s: float, out) -> None:
    raise_nofile()

    async def main():
        stop = time.monotonic() + seconds
        stats = {"connects": 0, "connect_failures": 0, "closed_by_popgate": 0, "open": 0, "peak_open": 0}

        async def attacker(opening: bytes, trickle: bool):
            while time.monotonic() < stop:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), 5)
                except Exception:  # noqa: BLE001
                    stats["connect_failures"] += 1
                    await asyncio.sleep(reconnect_s)
                    continue
                stats["connects"] += 1
                stats["open"] += 1
                stats["peak_open"] = max(stats["peak_open"], stats["open"])
                try:
                    if trickle:
                        for i in range(len(opening)):
                            writer.write(opening[i:i + 1])
                            try:
                                if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                                    break
                            except asyncio.TimeoutError:
                                pass
                            if time.monotonic() >= stop:
                                break
                    else:
                        if opening:
                            writer.write(opening)
                        left = stop - time.monotonic()
                        while left > 0 and await asyncio.wait_for(reader.read(1024), left) != b"":
                            left = stop - time.monotonic()
                    if time.monotonic() < stop:
                        stats["closed_by_popgate"] += 1
                except Exception:  # noqa: BLE001 - reset or timeout at the end
                    if time.monotonic() < stop:
                        stats["closed_by_popgate"] += 1
                finally:
                    stats["open"] -= 1
                    writer.close()
                await asyncio.sleep(reconnect_s)

        tasks = [attacker(b"", False) for _ in range(silent)]
        tasks += [attacker(PARTIAL_PREFACE, False) for _ in range(partial)]
        tasks += [attacker(SLOW_HEAD, True) for _ in range(slow)]
        await asyncio.gather(*tasks, return_exceptions=True)
        return stats

    out.put(asyncio.run(main()))


def start_popgate(binary: Path, workdir: Path) -> tuple[subprocess.Popen, tuple[str, int]]:
    config = workdir / "routes.yaml"
    config.write_text(CONFIG)
    child = subprocess.Popen([str(binary), "dev", "--config", str(config), "--listen", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        m = re.search(r"proxy listening on http://([\d.]+):(\d+)", line)
        if m:
            return child, (m.group(1), int(m.group(2)))
    child.kill()
    raise SystemExit("popgate dev did not report its listener within 60 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "popgate")
    ap.add_argument("--silent", type=int, default=9_000)
    ap.add_argument("--partial", type=int, default=500)
    ap.add_argument("--slowloris", type=int, default=500)
    ap.add_argument("--callers", type=int, default=8, help="concurrent normal callers")
    ap.add_argument("--quiet-s", type=float, default=20)
    ap.add_argument("--attack-s", type=float, default=60)
    ap.add_argument("--reconnect-ms", type=float, default=100)
    ap.add_argument("--request-timeout-s", type=float, default=10)
    args = ap.parse_args()
    if args.quiet_s + args.attack_s + 30 > MAX_TOTAL_S:
        ap.error(f"quiet + attack must leave the soak within {MAX_TOTAL_S} s")
    nofile = raise_nofile()
    attackers = args.silent + args.partial + args.slowloris
    if attackers + 1000 > nofile:
        ap.error(f"{attackers} attacker sockets need more than RLIMIT_NOFILE={nofile}")

    with tempfile.TemporaryDirectory(prefix="popgate-soak-") as tmp:
        child, addr = start_popgate(args.binary, Path(tmp))
        try:
            return run(args, child, addr)
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


def run(args, child, addr) -> int:
    asyncio.run(normal_load(addr, 1, 2, args.request_timeout_s))  # warm: token, upstream pool
    rss_quiet_start = rss_kib(child.pid)
    quiet = asyncio.run(normal_load(addr, args.callers, args.quiet_s, args.request_timeout_s))
    rss = {"before_kib": rss_quiet_start, "after_quiet_kib": rss_kib(child.pid), "peak_attack_kib": 0}
    out = multiprocessing.Queue()
    proc = multiprocessing.Process(target=attack, args=(addr, args.silent, args.partial, args.slowloris,
                                                       args.attack_s, args.reconnect_ms / 1000, out))
    proc.start()
    time.sleep(min(5.0, args.attack_s / 4))  # let the attackers fill every slot first

    async def attacked():
        async def sample():
            while proc.is_alive():
                rss["peak_attack_kib"] = max(rss["peak_attack_kib"], rss_kib(child.pid))
                await asyncio.sleep(1)
        sampler = asyncio.create_task(sample())
        result = await normal_load(addr, args.callers, args.attack_s - min(5.0, args.attack_s / 4) - 1,
                                   args.request_timeout_s)
        sampler.cancel()
        return result

    under = asyncio.run(attacked())
    stats = out.get(timeout=args.attack_s + 30)
    proc.join(30)
    time.sleep(2)
    rss["after_kib"] = rss_kib(child.pid)
    # The allocator (jemalloc) returns freed pages on a ~10 s decay schedule: sample again once
    # it has had time to, so the figure says what stays rather than what is still being purged.
    time.sleep(SETTLE_S)
    rss["settled_kib"] = rss_kib(child.pid)
    report = {"quiet": quiet, "attack": under, "attackers": stats, "rss": rss,
              "config": {k: v for k, v in vars(args).items() if k != "binary"}}
    print(json.dumps(report, indent=2))
    ratio = (under["p99_ms"] or 0) / (quiet["p99_ms"] or 1)
    print(f"normal callers: quiet p99 {quiet['p99_ms']} ms, under attack p99 {under['p99_ms']} ms "
          f"({ratio:.2f}x); failures {sum(under['failures'].values())}; attacker peak open "
          f"{stats['peak_open']}; popgate RSS peak {rss['peak_attack_kib'] // 1024} MiB, "
          f"{rss['settled_kib'] // 1024} MiB {SETTLE_S} s after (before {rss['before_kib'] // 1024} MiB)")
    return 0 if not under["failures"] and not quiet["failures"] and ratio <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
