"""popgate's token path under load: cold start, a cold burst, refresh boundaries, rotation."""

from __future__ import annotations

import shutil
import statistics
import threading
import time

from . import authority as auth
from .load import Generator, Upstream
from .peers import Ctx, Placement, start_popgate
from .pki import UPSTREAM_HOST
from .procs import READY_TIMEOUT_S, http, memory_kib, wait_for_200

# How often the token-call counter is read while a run goes on, to place refreshes in time.
COUNT_POLL_S = 0.25
# A refresh is said to touch the latency of the seconds this close to it.
REFRESH_WINDOW_S = 1


def cold_start(ctx: Ctx, pl: Placement) -> dict:
    """Process start to the first token-bound 200 (eager acquisition)."""
    calls0 = auth.token_calls(ctx.authority)
    child, port, _ = start_popgate(ctx, pl, name="popgate-cold")
    try:
        seconds = wait_for_200(f"http://127.0.0.1:{port}/cold", UPSTREAM_HOST, child)
        time.sleep(1.0)
        return {"first_200_s": seconds, "token_calls": auth.token_calls(ctx.authority) - calls0,
                "rss_idle_kib_1_route": memory_kib(child.pid, "VmRSS")}
    finally:
        child.stop()


def cold_burst(ctx: Ctx, pl: Placement, gen: Generator, conns: int) -> dict:
    """`conns` callers at once on a lazy route with no token yet: exactly one token call."""
    child, port, admin_port = start_popgate(ctx, pl, name="popgate-burst", lazy=True)
    try:
        wait_for_200(f"http://127.0.0.1:{admin_port}/healthz", f"127.0.0.1:{admin_port}", child)
        calls0 = auth.token_calls(ctx.authority)
        load = gen.run("burst", f"http://127.0.0.1:{port}/burst", conns, 30)
        return {"callers": conns, "status": load.get("status", {}), "ok": load["ok"],
                "token_calls": auth.token_calls(ctx.authority) - calls0, "latency_us": load["latency_us"]}
    finally:
        child.stop()


def _count_token_calls(ctx: Ctx, t0: float, stop: threading.Event, out: list) -> None:
    last = auth.token_calls(ctx.authority)
    while not stop.wait(COUNT_POLL_S):
        now = auth.token_calls(ctx.authority)
        if now != last:
            out.append(round(time.monotonic() - t0, 2))
            last = now


def refresh_boundaries(ctx: Ctx, pl: Placement, gen: Generator, rate: int, conns: int,
                       lifetime: int, duration: float) -> dict:
    """A short token lifetime over a long fixed-rate run: no failures, p99 flat at refreshes."""
    auth.set_lifetime(ctx.authority, lifetime)
    child, port, _ = start_popgate(ctx, pl, name="popgate-refresh")
    try:
        wait_for_200(f"http://127.0.0.1:{port}/warm", UPSTREAM_HOST, child)
        stop, refreshes = threading.Event(), []
        t0 = time.monotonic()
        poller = threading.Thread(target=_count_token_calls, args=(ctx, t0, stop, refreshes))
        poller.start()
        try:
            load = gen.run("rate", f"http://127.0.0.1:{port}/refresh", conns, duration,
                           ["--rate", str(rate), "--warmup", "0", "--series"])
        finally:
            stop.set()
            poller.join()
    finally:
        child.stop()
        auth.set_lifetime(ctx.authority, auth.LONG_LIFETIME_S)
    series = load.get("series", [])
    near = {int(t) + d for t in refreshes for d in range(-REFRESH_WINDOW_S, REFRESH_WINDOW_S + 1)}
    at = [s["p99_us"] for s in series if s["t"] in near and s["count"]]
    away = [s["p99_us"] for s in series if s["t"] not in near and s["count"]]
    return {
        "lifetime_s": lifetime, "duration_s": duration, "rate": rate,
        "requests": load["requests"], "errors": load["errors"], "status": load.get("status", {}),
        "refreshes_at_s": refreshes,
        "p99_us_whole_run": load["latency_us"]["p99"],
        "p99_us_max_near_refresh": max(at) if at else None,
        "p99_us_median_away": statistics.median(away) if away else None,
        "p99_us_max_away": max(away) if away else None,
        "series": series,
    }


def rotation(ctx: Ctx, pl: Placement, gen: Generator, up: Upstream, rate: int, conns: int,
             duration: float, rotate_at: float) -> dict:
    """The binding certificate's files are replaced mid-run: no failure, the new one is presented."""
    cert, key = ctx.work / "rotating.pem", ctx.work / "rotating.key"
    shutil.copy(ctx.client_cert, cert)
    shutil.copy(ctx.client_key, key)
    child, port, _ = start_popgate(ctx, pl, name="popgate-rotation", cert=cert, key=key)
    result: dict = {}
    try:
        wait_for_200(f"http://127.0.0.1:{port}/warm", UPSTREAM_HOST, child)
        up.reset()
        box: dict = {}

        def drive() -> None:
            try:
                box["load"] = gen.run("rate", f"http://127.0.0.1:{port}/rotation", conns, duration,
                                      ["--rate", str(rate), "--warmup", "0"])
            except Exception as e:  # reported below, after the rotation steps
                box["error"] = e

        runner = threading.Thread(target=drive)
        runner.start()
        time.sleep(rotate_at)
        new = auth.admin(ctx.authority, "POST", "/certificates",
                         {"client_id": ctx.authority["client_id"], "common_name": "popgate-bench-rotated"})
        # The key first, then the certificate, each by rename: a watcher never reads a torn file.
        for src, dst in ((new["key_path"], key), (new["cert_path"], cert)):
            tmp = dst.with_suffix(".tmp")
            shutil.copy(src, tmp)
            tmp.replace(dst)
        swapped = time.monotonic()
        seen_after = None
        while time.monotonic() - swapped < duration:
            if new["x5t_s256"] in up.stats().get("thumbprints", []):
                seen_after = time.monotonic() - swapped
                break
            time.sleep(0.05)
        runner.join()
        if "error" in box:
            raise box["error"]
        load = box["load"]
        result = {"rate": rate, "duration_s": duration, "rotated_at_s": rotate_at,
                  "requests": load["requests"], "errors": load["errors"], "status": load.get("status", {}),
                  "new_cert_presented_after_s": seen_after, "latency_us": load["latency_us"],
                  "upstream_unauthorized": up.stats()["unauthorized"]}
    finally:
        child.stop()
    return result


def many_routes_rss(ctx: Ctx, pl: Placement, routes: int) -> dict:
    """Idle RSS with `routes` eager routes, each with its own audience and token."""
    for i in range(1, routes):
        auth.admin(ctx.authority, "POST", "/resources",
                   {"audience": f"https://svc{i}.bench.test", "hosts": [f"svc{i}.bench.test"]})
    calls0 = auth.token_calls(ctx.authority)
    child, port, admin_port = start_popgate(ctx, pl, name="popgate-routes", routes=routes)
    try:
        wait_for_200(f"http://127.0.0.1:{port}/warm", UPSTREAM_HOST, child)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if http("GET", f"http://127.0.0.1:{admin_port}/readyz", timeout=2.0)[0] == 200 and \
                    auth.token_calls(ctx.authority) - calls0 >= routes:
                break
            time.sleep(0.2)
        time.sleep(2.0)
        return {"routes": routes, "token_calls": auth.token_calls(ctx.authority) - calls0,
                "rss_idle_kib": memory_kib(child.pid, "VmRSS"), "peak_rss_kib": memory_kib(child.pid, "VmHWM"),
                "rss_anon_kib": memory_kib(child.pid, "RssAnon"), "rss_file_kib": memory_kib(child.pid, "RssFile")}
    finally:
        child.stop()
