"""popgate through CONNECT interception beside the plain path, on the same process in one run.

One popgate with `intercept:` on its listener (a CA made by `popgate ca init`) serves the same
closed-loop workload twice per round: (a) plain, as every proxy in the comparison is driven, and
(b) tunnelled: each generator connection sends `CONNECT api.bench.test:443`, does TLS with a leaf
popgate mints from that CA, and sends its requests inside over keep-alive. Rounds alternate plain
and tunnel so that a burst of load from elsewhere on the machine does not land on one side only;
the ratio of the medians is the result.
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

from .compare import _summary, all_2xx
from .load import Generator, Upstream
from .peers import Ctx, Placement, start_popgate
from .pki import UPSTREAM_HOST
from .procs import HarnessError, cpu_seconds, wait_for_200

KINDS = ("plain", "tunnel")


def make_ca(ctx: Ctx) -> dict:
    """`popgate ca init` into the work dir (key 0600): the interception CA and the generator's trust anchor."""
    out = ctx.work / "intercept-ca"
    done = subprocess.run([str(ctx.bin["popgate"]), "ca", "init", "--out", str(out)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise HarnessError(f"popgate ca init failed ({done.returncode}): {done.stderr[-500:]}")
    return {"ca": out / "popgate-ca.pem", "key": out / "popgate-ca.key"}


def _closed(kind: str, child, port: int, up: Upstream, gen: Generator, ca: dict, conns: int,
            duration: float, warmup: float) -> dict:
    """One closed-loop run against a started popgate-intercept, plain or through the tunnel."""
    up.reset()
    cpu0 = cpu_seconds(child.pid)
    load = gen.run("closed", f"http://127.0.0.1:{port}/bench", conns, duration + warmup,
                   ["--warmup", str(warmup)], tunnel={"ca": ca["ca"]} if kind == "tunnel" else None)
    out = _summary(load, up.stats(), cpu_seconds(child.pid) - cpu0)
    out["error_kinds"] = load.get("error_kinds")
    return out


def tunnel_closed(ctx: Ctx, pl: Placement, up: Upstream, gen: Generator, ca: dict, conns: int,
                  duration: float, warmup: float) -> dict:
    """Closed-loop throughput through the tunnel alone, against a popgate started for it (what
    `ab.py --intercept` compares between builds); the answers are the caller's to judge."""
    child, port, _ = start_popgate(ctx, pl, name="popgate-intercept", intercept=(ca["ca"], ca["key"]))
    try:
        wait_for_200(f"http://127.0.0.1:{port}/ready", UPSTREAM_HOST, child)
        return _closed("tunnel", child, port, up, gen, ca, conns, duration, warmup)
    finally:
        child.stop()


def tunnel_vs_plain(ctx: Ctx, pl: Placement, up: Upstream, gen: Generator, ca: dict, conns: int,
                    duration: float, warmup: float, rounds: int) -> dict:
    """Closed-loop throughput plain and through the tunnel, alternating, against one popgate."""
    child, port, _ = start_popgate(ctx, pl, name="popgate-intercept", intercept=(ca["ca"], ca["key"]))
    try:
        wait_for_200(f"http://127.0.0.1:{port}/ready", UPSTREAM_HOST, child)
        runs: dict = {k: [] for k in KINDS}
        for _ in range(rounds):
            for kind in KINDS:
                out = _closed(kind, child, port, up, gen, ca, conns, duration, warmup)
                if not all_2xx(out):
                    raise HarnessError(f"{kind} run through popgate-intercept: {out['ok']} of {out['requests']} "
                                       f"ok, statuses {out['status']}, errors {out['error_kinds']}")
                runs[kind].append(out)
    finally:
        child.stop()
    med = {k: statistics.median(r["rps"] for r in runs[k]) for k in KINDS}
    cpu = {k: statistics.median(r["cpu_s_per_10k"] for r in runs[k]) for k in KINDS}
    return {"connections": conns, "closed_s": duration, "warmup_s": warmup, "rounds": rounds, "runs": runs,
            "rps": med, "cpu_s_per_10k": cpu, "ratio": med["tunnel"] / med["plain"],
            "cpu_ratio": cpu["tunnel"] / cpu["plain"]}
