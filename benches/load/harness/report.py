"""results.json -> RESULTS.md (tables, targets) and plot.png."""

from __future__ import annotations

from pathlib import Path

from .peers import YARDSTICKS

ORDER = ["direct", "popgate", "envoy", "nginx", "haproxy", "pingora", *YARDSTICKS]
MIB = 1024.0


def _f(v, fmt="{:.0f}"):
    return "—" if v is None else fmt.format(v)


def _lat(l):
    return f"{l['p50']:.0f} / {l['p99']:.0f} / {l['p999']:.0f}"


def _rounds_note(n: int) -> str:
    if n <= 1:
        return "."
    return (f"; {n} rounds, the proxies interleaved in each, medians shown (CPU per request: "
            "each round's in brackets).")


def _cpu(r: dict) -> str:
    """CPU-s per 10k requests at the fixed rate: the median, and each round's when there were several."""
    med = _f(r.get("cpu_s_per_10k"), "{:.3f}")
    rounds = [x["cpu_s_per_10k"] for x in r.get("rounds", []) if x["cpu_s_per_10k"] is not None]
    return med if len(rounds) < 2 else f"{med} ({', '.join(f'{x:.3f}' for x in rounds)})"


def targets(res: dict) -> list[tuple[str, str, bool]]:
    out = []
    pin = res["placements"].get("pinned")
    if pin:
        c, r = pin["closed"], pin["rate"]
        pg = c["popgate"]["rps"]
        for peer, need in (("envoy", 1.3), ("nginx", 1.0)):
            if peer in c:
                ratio = pg / c[peer]["rps"]
                out.append((f"throughput ≥ {need}× {peer} (one worker)", f"{ratio:.2f}×", ratio >= need))
        if "direct" in r and "envoy" in r:
            d = r["direct"]["latency_us"]["p99"]
            pg_add = r["popgate"]["latency_us"]["p99"] - d
            env_add = r["envoy"]["latency_us"]["p99"] - d
            ratio = pg_add / env_add if env_add > 0 else float("inf")
            out.append(("p99 added over direct ≤ 0.5× Envoy's",
                        f"{pg_add:.0f} µs vs {env_add:.0f} µs = {ratio:.2f}×", ratio <= 0.5))
        pg_cpu = r["popgate"]["cpu_s_per_10k"]
        for peer in ORDER[2:]:
            if peer in r and peer not in YARDSTICKS and r[peer]["cpu_s_per_10k"]:
                ratio = pg_cpu / r[peer]["cpu_s_per_10k"]
                out.append((f"CPU per request ≤ {peer}'s", f"{ratio:.2f}×", ratio <= 1.0))
    for name, p in res["placements"].items():
        out += _lead_over_peers(name, p["rate"])
    reuse = [p[ph]["popgate"]["reuse"] for p in res["placements"].values() for ph in ("closed", "rate")
             if "popgate" in p.get(ph, {})]
    if reuse:
        worst = min(reuse)
        out.append(("upstream connection reuse ≥ 99.9%", f"{worst * 100:.4f}% (worst phase)", worst >= 0.999))
    many = res.get("memory", {}).get("routes_1k")
    if many:
        mib = many["rss_idle_kib"] / MIB
        out.append((f"RSS ≤ 30 MiB idle with {many['routes']} routes", f"{mib:.1f} MiB", mib <= 30))
    return out


# Issue 13's targets against the best of nginx and HAProxy (the peers every deployment compares
# with), read off the fixed-rate phase (medians when it ran in rounds).
CPU_LEAD = 1.2
P50_OVER_DIRECT_US = 50


def _lead_over_peers(placement: str, r: dict) -> list[tuple[str, str, bool]]:
    peers = [n for n in ("nginx", "haproxy") if r.get(n, {}).get("cpu_s_per_10k")]
    pg = r.get("popgate", {})
    if not peers or not pg.get("cpu_s_per_10k"):
        return []
    out = []
    best = min(peers, key=lambda n: r[n]["cpu_s_per_10k"])
    lead = r[best]["cpu_s_per_10k"] / pg["cpu_s_per_10k"]
    out.append((f"req/s per CPU-s ≥ {CPU_LEAD}× the best of nginx and HAProxy ({placement})",
                f"{lead:.2f}× {best}", lead >= CPU_LEAD))
    best99 = min(peers, key=lambda n: r[n]["latency_us"]["p99"])
    p99, peer99 = pg["latency_us"]["p99"], r[best99]["latency_us"]["p99"]
    out.append((f"p99 ≤ the best peer's ({placement})", f"{p99:.0f} µs vs {best99} {peer99:.0f} µs",
                p99 <= peer99))
    if "direct" in r:
        over = pg["latency_us"]["p50"] - r["direct"]["latency_us"]["p50"]
        out.append((f"p50 within {P50_OVER_DIRECT_US} µs of the direct client's ({placement})",
                    f"{over:+.0f} µs", over <= P50_OVER_DIRECT_US))
    return out


def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [f"# Load harness results — {m['date']}", "",
             f"Machine: {m['machine']}. popgate {m['popgate_rev']} (binary `{m.get('popgate_binary', 'target/dist/popgate')}`); "
             f"{m['rustc']}.",
             "Peers: " + "; ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
             f"Command: `{m['command']}` — harness wall time {m['wall_s']:.0f} s.", ""]
    for name, p in res["placements"].items():
        rate = p["rate_rps"]
        lines += [f"## {name}: {p['description']}", "",
                  f"Closed loop: {p['connections']} keep-alive connections, {p['closed_s']} s after "
                  f"{p['warmup_s']} s warm-up. Fixed rate: {rate} req/s (half the slowest proxy's maximum), "
                  "latency from the intended send time (coordinated-omission corrected)"
                  + _rounds_note(p.get("rate_rounds", 1)), "",
                  "| proxy | max req/s | ×popgate | p50 / p99 / p99.9 µs at fixed rate | p99 added µs "
                  "| CPU-s per 10k req | peak RSS MiB (anon + file at the end) | upstream handshakes / requests | errors |",
                  "|---|---|---|---|---|---|---|---|---|"]
        direct_p99 = p["rate"].get("direct", {}).get("latency_us", {}).get("p99")
        pg = p["closed"].get("popgate", {}).get("rps")
        for proxy in ORDER:
            if proxy not in p["closed"]:
                continue
            c, r = p["closed"][proxy], p["rate"].get(proxy, {})
            added = None if proxy == "direct" or not r or direct_p99 is None else r["latency_us"]["p99"] - direct_p99
            lines.append(
                f"| {proxy} | {c['rps']:.0f} | {_f(c['rps'] / pg if pg else None, '{:.2f}')} | "
                f"{_lat(r['latency_us']) if r else '—'} | {_f(added)} | "
                f"{_cpu(r)} | {_rss(c)} | "
                f"{c['upstream_handshakes']} / {c['upstream_requests']} | {c['errors'] + r.get('errors', 0)} |")
        if any("idle_conns" in v for v in p["rate"].values()):
            lines += ["", "Idle callers: each connection served one request, then held open.", "",
                      "| proxy | idle connections | RSS before MiB | RSS with them MiB | bytes per connection |",
                      "|---|---|---|---|---|"]
            for proxy in ORDER:
                v = p["rate"].get(proxy, {})
                if "idle_conns" in v:
                    lines.append(f"| {proxy} | {v['idle_conns']} | {v['rss_before_idle_kib'] / MIB:.1f} | "
                                 f"{v['rss_idle_kib'] / MIB:.1f} | {_f(v['rss_per_idle_conn_bytes'])} |")
        ic = p.get("intercept")
        if ic:
            lines += ["", f"popgate through CONNECT interception beside its plain path: one popgate with "
                      f"`intercept:`, {ic['connections']} keep-alive connections, {ic['closed_s']} s closed loop "
                      f"after {ic['warmup_s']} s warm-up, plain and tunnel alternating, {ic['rounds']} rounds "
                      "(medians). Tunnel: CONNECT, TLS with popgate's interception CA, requests inside.", "",
                      "| path | req/s (each round) | median req/s | CPU-s per 10k req | errors |",
                      "|---|---|---|---|---|"]
            for kind in ("plain", "tunnel"):
                rs = ic["runs"][kind]
                each = ", ".join(f"{r['rps']:.0f}" for r in rs)
                lines.append(f"| {kind} | {each} | {ic['rps'][kind]:.0f} | "
                             f"{ic['cpu_s_per_10k'][kind]:.3f} | {sum(r['errors'] for r in rs)} |")
            lines += ["", f"**tunnel / plain: {ic['ratio']:.2f}× throughput, {ic['cpu_ratio']:.2f}× CPU per "
                      "request.**"]
        lines.append("")
    tp = res.get("token_path", {})
    if tp:
        lines += ["## popgate's token path", ""]
        if "cold_start" in tp:
            cs = tp["cold_start"]
            lines.append(f"- Cold start: process start → first token-bound 200 in {cs['first_200_s'] * 1000:.0f} ms "
                         f"({cs['token_calls']} token call); idle RSS {cs['rss_idle_kib_1_route'] / MIB:.1f} MiB.")
        if "cold_burst" in tp:
            b = tp["cold_burst"]
            lines.append(f"- {b['callers']} concurrent callers on a lazy route with no token: statuses {b['status']}, "
                         f"**{b['token_calls']} token call**, p99 {b['latency_us']['p99'] / 1000:.1f} ms.")
        if "refresh" in tp:
            r = tp["refresh"]
            lines.append(f"- {r['lifetime_s']} s token lifetime over {r['duration_s']:.0f} s at {r['rate']} req/s: "
                         f"{r['requests']} requests, {r['errors']} errors, statuses {r['status']}; token calls at "
                         f"{r['refreshes_at_s']} s; per-second p99 near refreshes max {_f(r['p99_us_max_near_refresh'])} µs "
                         f"vs elsewhere median {_f(r['p99_us_median_away'])} µs / max {_f(r['p99_us_max_away'])} µs.")
        if "rotation" in tp:
            r = tp["rotation"]
            lines.append(f"- Certificate rotation at {r['rotated_at_s']} s of a {r['duration_s']:.0f} s run at {r['rate']} "
                         f"req/s: {r['requests']} requests, {r['errors']} errors, statuses {r['status']}; the upstream "
                         f"saw the new certificate {_f(r['new_cert_presented_after_s'], '{:.2f}')} s after the files "
                         f"changed; upstream 401s {r['upstream_unauthorized']}.")
        lines.append("")
    mem = res.get("memory", {}).get("routes_1k")
    if mem:
        lines += [f"## Memory: {mem['routes']} eager routes, each with its own audience and token", "",
                  f"{mem['token_calls']} token calls; idle RSS {mem['rss_idle_kib'] / MIB:.1f} MiB, "
                  f"peak {mem['peak_rss_kib'] / MIB:.1f} MiB.", ""]
    lines += ["## Targets (ratios from this run)", "", "| target | measured | met |", "|---|---|---|"]
    for name, measured, ok in targets(res):
        lines.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
    return "\n".join(lines) + "\n"


def _rss(c: dict) -> str:
    """Peak RSS, with its anonymous and file-backed parts at the end of the load when known."""
    peak = _f(c.get("peak_rss_kib", 0) / MIB or None, "{:.1f}")
    if "rss_anon_kib" not in c:
        return peak
    return f"{peak} ({c['rss_anon_kib'] / MIB:.1f} + {c['rss_file_kib'] / MIB:.1f})"


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    names = [n for n in ORDER if n in res["placements"].get("pinned", {}).get("closed", {})]
    width = 0.38
    for i, (pl, p) in enumerate(res["placements"].items()):
        xs = [j + i * width for j in range(len(names))]
        axes[0][0].bar(xs, [p["closed"][n]["rps"] if n in p["closed"] else 0 for n in names], width, label=pl)
        d = p["rate"].get("direct", {}).get("latency_us", {}).get("p99", 0)
        axes[0][1].bar(xs, [max(p["rate"][n]["latency_us"]["p99"] - d, 0) if n in p["rate"] and n != "direct" else 0
                            for n in names], width, label=pl)
        axes[1][0].bar(xs, [(p["rate"][n].get("cpu_s_per_10k") or 0) if n in p["rate"] else 0 for n in names],
                       width, label=pl)
    for ax, title in ((axes[0][0], "max throughput, req/s (closed loop)"),
                      (axes[0][1], "p99 added over the direct mTLS client, µs (fixed rate)"),
                      (axes[1][0], "proxy CPU-seconds per 10k requests (fixed rate)")):
        ax.set_xticks([j + width / 2 for j in range(len(names))], names)
        ax.set_title(title)
        ax.legend()
    r = res.get("token_path", {}).get("refresh")
    ax = axes[1][1]
    if r and r["series"]:
        ax.plot([s["t"] for s in r["series"]], [s["p99_us"] for s in r["series"]], label="p99 per second")
        ax.plot([s["t"] for s in r["series"]], [s["p50_us"] for s in r["series"]], label="p50 per second")
        for t in r["refreshes_at_s"]:
            ax.axvline(t, color="red", alpha=0.4)
        ax.set_title(f"popgate, {r['lifetime_s']} s tokens at {r['rate']} req/s (red: token calls)")
        ax.set_xlabel("s")
        ax.set_ylabel("µs")
        ax.legend()
    fig.suptitle(f"popgate load harness — {res['meta']['date']} — {res['meta']['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
