#!/usr/bin/env python3
"""Profile-guided build of popgate's production binary: the `dist` build (as the Dockerfile
builds it), compiled once with instrumentation, trained on the load harness's closed loop, and
compiled again with the profile it wrote.

    python3 benches/load/pgo.py                       # -> target/pgo/dist/popgate
    python3 benches/load/pgo.py --llvm-profdata /usr/lib/llvm-19/bin/llvm-profdata

The training runs the instrumented popgate between the harness's upstream and load generator on
127.0.0.1 only, every run bounded by --seconds: both upstream protocols (HTTP/2-capable and
HTTP/1.1-only), one pinned worker and every core, GETs and POSTs with a 16 KiB body, so request
bodies, both upstream lanes and both runtime layouts are in the profile, not the GET path alone.
What it does not exercise (token acquisition, reloads, CONNECT interception, HTTP/2 callers) is
compiled as code LLVM saw run rarely or never: correct, optimised for size.

Needs `llvm-profdata` able to read the raw profiles of the LLVM inside rustc (`rustc -vV`): the
rustup component (`rustup component add llvm-tools`) matches it exactly; Debian's `llvm-19`
package reads rustc 1.95's (LLVM 22) profiles too. Takes two `dist` builds (about 7 and 5 minutes
on 2 cores) and about 2 minutes of training. Results: benches/README.md ("profile-guided build").
"""

from __future__ import annotations

import argparse
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

from harness.context import AUTHORITY_BUILD, DIST_BUILD, TOOLS_BUILD  # noqa: E402

# The training mix: (upstream protocol, placement, request body bytes; 0 = GET).
TRAINING = [(proto, placement, body)
            for proto in ("h2", "http1.1")
            for placement in ("pinned", "unpinned")
            for body in (0, 16 * 1024)]
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


def train(binary: Path, raw_dir: Path, seconds: float) -> list[Path]:
    """Runs the training mix through `binary`; returns the raw profiles popgate wrote."""
    # `%m` merges the runs of one binary into one file as they exit; `%p` keeps concurrent
    # writers apart. Set here, the build scripts' own profiles (they are instrumented too) stay
    # in the build's directory.
    env = {**os.environ, "LLVM_PROFILE_FILE": str(raw_dir / "popgate-%m-%p.profraw")}
    for proto, placement, body in TRAINING:
        argv = [sys.executable, str(LOAD / "ab.py"), "--build", f"trained={binary}", "--peers", "",
                "--upstream-protocol", proto, "--placement", placement, "--rounds", "1",
                "--duration", str(seconds), "--body-bytes", str(body)]
        print(f"training: {proto} upstream, {placement}, {'GET' if not body else f'POST {body} B'}",
              flush=True)
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=seconds + RUN_MARGIN_S)
        except subprocess.TimeoutExpired as e:
            raise PgoError(f"training run {proto}/{placement}/{body} B did not finish in "
                           f"{seconds + RUN_MARGIN_S:.0f} s") from e
        if done.returncode != 0:
            raise PgoError(f"training run {proto}/{placement}/{body} B failed:\n{done.stdout[-1500:]}"
                           f"{done.stderr[-1500:]}")
        if " 0 errors" not in done.stdout:
            raise PgoError(f"training run {proto}/{placement}/{body} B had failed requests:\n"
                           f"{done.stdout[-1500:]}")
    profiles = sorted(raw_dir.glob("popgate-*.profraw"))
    if not profiles:
        raise PgoError(f"popgate wrote no profile into {raw_dir}: it writes one when it exits "
                       "cleanly (SIGTERM, drain); was it killed?")
    return profiles


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llvm-profdata", help="the llvm-profdata to merge the profiles with")
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per training run")
    ap.add_argument("--work", type=Path, default=ROOT / "target" / "pgo-work",
                    help="instrumented build, raw profiles and the merged profile")
    args = ap.parse_args()
    if not 0 < args.seconds <= MAX_SECONDS:
        ap.error(f"--seconds must be in (0, {MAX_SECONDS:.0f}]")
    try:
        profdata = find_llvm_profdata(args.llvm_profdata)
        print(f"llvm-profdata: {profdata} (LLVM {tool_llvm_major(profdata)}; "
              f"rustc's LLVM {rustc_llvm_major()})", flush=True)
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
        profiles = train(generate_target / "dist" / "popgate", raw, args.seconds)
        merged = work / "popgate.profdata"
        done = subprocess.run([profdata, "merge", "-o", str(merged), *map(str, profiles)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise PgoError(f"llvm-profdata merge failed (an llvm-profdata older than rustc's LLVM "
                           f"may not read its raw profiles):\n{done.stderr[-1500:]}")
        print(f"merged {len(profiles)} raw profile(s) into {merged}", flush=True)
        cargo(DIST_BUILD, {"CARGO_TARGET_DIR": str(ROOT / "target" / "pgo"),
                           "RUSTFLAGS": rustflags(f"-Cprofile-use={merged}")},
              "popgate with the profile")
    except (PgoError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"profile-guided production build: {ROOT / 'target' / 'pgo' / 'dist' / 'popgate'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
