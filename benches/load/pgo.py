#!/usr/bin/env python3
"""Profile-guided build of popgate's production binary: the `dist` build (as the Dockerfile
builds it), compiled once with instrumentation, trained on the load harness's closed loop, and
compiled again with the profile it wrote.

    python3 benches/load/pgo.py                       # -> target/pgo/dist/popgate
    python3 benches/load/pgo.py --llvm-profdata /usr/lib/llvm-19/bin/llvm-profdata
    python3 benches/load/pgo.py --bolt                # and -> target/pgo/bolt/popgate

The training runs the instrumented popgate between the harness's upstream and load generator on
127.0.0.1 only, every run bounded by --seconds: both upstream protocols (HTTP/2-capable and
HTTP/1.1-only), one pinned worker and every core, GETs and POSTs with a 16 KiB body, and GETs
through CONNECT interception, so request bodies, both upstream lanes, both runtime layouts and the
tunnel are in the profile, not the plain GET path alone. What it does not exercise (token
acquisition, reloads, HTTP/2 callers) is compiled as code LLVM saw run rarely or never: correct,
optimised for size.

Needs `llvm-profdata` able to read the raw profiles of the LLVM inside rustc (`rustc -vV`): the
rustup component (`rustup component add llvm-tools`) matches it exactly; Debian's `llvm-19`
package reads rustc 1.95's (LLVM 22) profiles too. Takes two `dist` builds (about 7 and 5 minutes
on 2 cores) and about 2 minutes of training. Results: benches/README.md ("profile-guided build").

`--bolt` then lays the profile-guided binary out again with `llvm-bolt` (see `bolt.py`): the
binary instrumented by BOLT, the same training again, and the rewrite into
`target/pgo/bolt/popgate`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

LOAD = Path(__file__).resolve().parent
ROOT = LOAD.parents[1]
sys.path.insert(0, str(LOAD))

import bolt  # noqa: E402
from harness.context import AUTHORITY_BUILD, DIST_BUILD, TOOLS_BUILD  # noqa: E402

PGO_BINARY = ROOT / "target" / "pgo" / "dist" / "popgate"
BOLT_BINARY = ROOT / "target" / "pgo" / "bolt" / "popgate"

# The training mix: (upstream protocol, placement, request body bytes (0 = GET), through CONNECT
# interception). The interception runs (callers' TLS to popgate inside a CONNECT tunnel, as apps
# with compiled-in https:// URLs use it) make the TLS server side and the tunnel's request path
# hot code too; without them the tunnel cost 1.16-1.22x the plain path's CPU per request in the
# profile-guided build against 1.07-1.12x in the plain one (benches/README.md).
TRAINING = [(proto, placement, body, False)
            for proto in ("h2", "http1.1")
            for placement in ("pinned", "unpinned")
            for body in (0, 16 * 1024)]
TRAINING += [(proto, "pinned", 0, True) for proto in ("h2", "http1.1")]
# Bounds each training run (the harness adds a 2 s warm-up); ab.py refuses more than 60 s.
MAX_SECONDS = 60.0
# Each ab.py run: its warm-up, the measured seconds, and starting and stopping the authority,
# upstream and popgate; anything longer than this margin over --seconds is a hang.
RUN_MARGIN_S = 60.0


class PgoError(Exception):
    pass


def rustc_llvm_major() -> int:
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^LLVM version: (\d+)", out, re.M)
    if not m:
        raise PgoError("`rustc -vV` names no LLVM version")
    return int(m.group(1))


def tool_llvm_major(tool: str) -> int | None:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"LLVM version (\d+)", out)
    return int(m.group(1)) if m else None


def find_llvm_profdata(given: str | None) -> str:
    """--llvm-profdata, $LLVM_PROFDATA, rustup's llvm-tools, then llvm-profdata[-N] on PATH."""
    if given or os.environ.get("LLVM_PROFDATA"):
        tool = given or os.environ["LLVM_PROFDATA"]
        if tool_llvm_major(tool) is None:
            raise PgoError(f"{tool}: not an llvm-profdata that runs (`{tool} --version` failed)")
        return tool
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    host = f"{platform.machine()}-unknown-linux-gnu"
    candidates = [str(Path(sysroot) / "lib" / "rustlib" / host / "bin" / "llvm-profdata")]
    major = rustc_llvm_major()
    candidates += [f"llvm-profdata-{v}" for v in range(major, 16, -1)] + ["llvm-profdata"]
    for tool in candidates:
        path = tool if os.path.isabs(tool) else shutil.which(tool)
        if path and os.path.exists(path) and tool_llvm_major(path) is not None:
            return path
    raise PgoError("no llvm-profdata found: `rustup component add llvm-tools`, or install one "
                   f"(Debian: apt-get install llvm-19) and pass --llvm-profdata; rustc's LLVM is {major}")


def cargo(argv: list[str], env_extra: dict, what: str) -> None:
    env = {**os.environ, **env_extra}
    started = time.monotonic()
    print(f"building {what} ...", flush=True)
    done = subprocess.run(argv, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise PgoError(f"cargo build ({what}) failed with exit code {done.returncode}")
    print(f"  built {what} in {time.monotonic() - started:.0f} s", flush=True)


def rustflags(flag: str) -> str:
    return " ".join(f for f in (os.environ.get("RUSTFLAGS", ""), flag) if f)


def check_answers(what: str, result: Path, output: str) -> None:
    """A profile of error answers trains the error path: every request of a training run must have
    been answered with a 2xx (the load counts requests without an answer and answers with an
    error status apart; both must be 0)."""
    try:
        rounds = json.loads(result.read_text())["answers"]["trained"]
    except (OSError, ValueError, KeyError) as e:
        raise PgoError(f"training run {what}: ab.py wrote no readable {result} ({e})") from e
    for r in rounds:
        if not r["all_2xx"]:
            raise PgoError(f"training run {what}: {r['ok']} answered 2xx, {r['errors']} without an "
                           f"answer, {r['error_statuses']} with an error status {r['status']}:\n"
                           f"{output[-1500:]}")


def llvm_profiles(raw_dir: Path) -> list[Path]:
    profiles = sorted(raw_dir.glob("popgate-*.profraw"))
    if not profiles:
        raise PgoError(f"popgate wrote no profile into {raw_dir}: it writes one when it exits "
                       "cleanly (SIGTERM, drain); was it killed?")
    return profiles


def train(binary: Path, work_dir: Path, seconds: float, env: dict) -> None:
    """Runs the training mix through `binary` (an instrumented build, which writes its profile
    where `env` says); `work_dir` takes ab.py's answers."""
    env = {**os.environ, **env}
    for proto, placement, body, tunnel in TRAINING:
        what = f"{proto}/{placement}/{body} B{' through interception' if tunnel else ''}"
        result = work_dir / "answers.json"
        argv = [sys.executable, str(LOAD / "ab.py"), "--build", f"trained={binary}", "--peers", "",
                "--upstream-protocol", proto, "--placement", placement, "--rounds", "1",
                "--duration", str(seconds), "--body-bytes", str(body), "--out", str(result)]
        argv += ["--intercept"] if tunnel else []
        print(f"training: {proto} upstream, {placement}, {'GET' if not body else f'POST {body} B'}"
              f"{', through interception' if tunnel else ''}", flush=True)
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=seconds + RUN_MARGIN_S)
        except subprocess.TimeoutExpired as e:
            raise PgoError(f"training run {what} did not finish in {seconds + RUN_MARGIN_S:.0f} s") from e
        if done.returncode != 0:
            raise PgoError(f"training run {what} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
        check_answers(what, result, done.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llvm-profdata", help="the llvm-profdata to merge the profiles with")
    ap.add_argument("--bolt", action="store_true",
                    help=f"also lay the binary out with BOLT by a second training -> {BOLT_BINARY.relative_to(ROOT)}")
    ap.add_argument("--llvm-bolt", help="the llvm-bolt to use (merge-fdata is looked for beside it)")
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per training run")
    ap.add_argument("--work", type=Path, default=ROOT / "target" / "pgo-work",
                    help="instrumented build, raw profiles and the merged profile")
    args = ap.parse_args()
    if not 0 < args.seconds <= MAX_SECONDS:
        ap.error(f"--seconds must be in (0, {MAX_SECONDS:.0f}]")
    try:
        profdata = find_llvm_profdata(args.llvm_profdata)
        # Found before the builds, so a missing tool stops the script before its 12 minutes.
        bolt_tools = bolt.find_tools(args.llvm_bolt) if args.bolt else ("", "")
        print(f"llvm-profdata: {profdata} (LLVM {tool_llvm_major(profdata)}; "
              f"rustc's LLVM {rustc_llvm_major()})", flush=True)
        # A BOLT binary of an earlier run is stale from here on: gone, rather than left beside a
        # profile-guided binary it no longer matches.
        BOLT_BINARY.unlink(missing_ok=True)
        work = args.work.resolve()
        raw = work / "train"
        shutil.rmtree(raw, ignore_errors=True)
        raw.mkdir(parents=True)
        generate_target = work / "target"
        cargo(DIST_BUILD, {"CARGO_TARGET_DIR": str(generate_target),
                           "RUSTFLAGS": rustflags(f"-Cprofile-generate={work / 'build-scripts'}")},
              "popgate, instrumented")
        # The harness's own parts, as run.py builds them (the authority issues the tokens).
        for argv, what in (AUTHORITY_BUILD, TOOLS_BUILD):
            cargo(argv, {}, what)
        # `%m` merges the runs of one binary into one file as they exit; `%p` keeps concurrent
        # writers apart. Set for the training only, the build scripts' own profiles (they are
        # instrumented too) stay in the build's directory.
        train(generate_target / "dist" / "popgate", raw, args.seconds,
              {"LLVM_PROFILE_FILE": str(raw / "popgate-%m-%p.profraw")})
        profiles = llvm_profiles(raw)
        merged = work / "popgate.profdata"
        done = subprocess.run([profdata, "merge", "-o", str(merged), *map(str, profiles)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise PgoError(f"llvm-profdata merge failed (an llvm-profdata older than rustc's LLVM "
                           f"may not read its raw profiles):\n{done.stderr[-1500:]}")
        print(f"merged {len(profiles)} raw profile(s) into {merged}", flush=True)
        # BOLT moves functions only in a binary that kept its relocations; they are not mapped
        # (no cost in memory), only the file grows.
        relocs = " -Clink-arg=-Wl,--emit-relocs" if args.bolt else ""
        cargo(DIST_BUILD, {"CARGO_TARGET_DIR": str(ROOT / "target" / "pgo"),
                           "RUSTFLAGS": rustflags(f"-Cprofile-use={merged}{relocs}")},
              "popgate with the profile")
        print(f"profile-guided production build: {PGO_BINARY}", flush=True)
        if args.bolt:
            bolt_layout(bolt_tools, work / "bolt", args.seconds)
    except (PgoError, bolt.BoltError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def bolt_layout(tools: tuple[str, str], work: Path, seconds: float) -> None:
    """The profile-guided binary instrumented by BOLT, trained again, laid out by that profile."""
    llvm_bolt, merge_fdata = tools
    fdata_dir = work / "fdata"
    shutil.rmtree(work, ignore_errors=True)
    fdata_dir.mkdir(parents=True)
    instrumented = work / "popgate-instrumented"
    bolt.instrument(llvm_bolt, PGO_BINARY, instrumented, fdata_dir)
    print("BOLT: instrumented; training again", flush=True)
    train(instrumented, work, seconds, {})
    merged = work / "popgate.fdata"
    fdata = bolt.profiles(fdata_dir)
    bolt.merge(merge_fdata, fdata, merged)
    print(f"BOLT: merged {len(fdata)} profile(s) into {merged}", flush=True)
    report = bolt.optimise(llvm_bolt, PGO_BINARY, merged, BOLT_BINARY)
    (work / "llvm-bolt.log").write_text(report)
    print(f"BOLT layout of the profile-guided build: {BOLT_BINARY} (llvm-bolt's report: "
          f"{work / 'llvm-bolt.log'})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
