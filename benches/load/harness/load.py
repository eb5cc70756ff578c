"""Runs the load generator (`bench-load`) and reads the upstream's counters (`bench-upstream`)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from .pki import UPSTREAM_HOST
from .procs import Child, HarnessError, http, taskset

# A generator run may overrun its --duration by its own start and drain; more than this is a hang.
LOAD_GRACE_S = 60.0


class Generator:
    def __init__(self, binary: Path, cpus: str | None, threads: int, work: Path):
        self.binary, self.cpus, self.threads, self.work = binary, cpus, threads, work

    def run(self, mode: str, target: str, connections: int, duration: float, extra: list[str] | None = None,
            direct: dict | None = None, hold_callback=None, tunnel: dict | None = None) -> dict:
        argv = [str(self.binary), mode, "--target", target, "--connections", str(connections),
                "--threads", str(self.threads), "--host", UPSTREAM_HOST]
        if mode != "idle" and mode != "burst":
            argv += ["--duration", str(duration)]
        if direct:
            argv += ["--cert", str(direct["cert"]), "--key", str(direct["key"]), "--ca", str(direct["ca"]),
                     "--sni", UPSTREAM_HOST, "--authorization-file", str(direct["authorization_file"])]
        if tunnel:
            # Through the proxy's CONNECT interception: TLS inside, verified by its CA.
            argv += ["--connect", f"{UPSTREAM_HOST}:443", "--ca", str(tunnel["ca"])]
        argv += extra or []
        timeout = duration + LOAD_GRACE_S
        if hold_callback is None:
            done = subprocess.run(taskset(self.cpus, argv), capture_output=True, timeout=timeout)
            out, err, code = done.stdout, done.stderr, done.returncode
        else:
            # idle: wait for "holding N" on stderr, measure, then let it finish.
            proc = subprocess.Popen(taskset(self.cpus, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stderr is not None
            deadline = time.monotonic() + timeout
            seen = b""
            while time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line:
                    break
                seen += line
                if line.startswith(b"holding"):
                    hold_callback(int(line.split()[1]))
                    break
            out, rest = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            err, code = seen + rest, proc.returncode
        if code != 0:
            raise HarnessError(f"bench-load {mode} failed ({code}): {err.decode()[-800:]}")
        try:
            return json.loads(out)
        except ValueError as e:
            raise HarnessError(f"bench-load {mode} printed no JSON: {out[-300:]!r}") from e


class Upstream:
    def __init__(self, child: Child, addr: str, stats: str):
        self.child, self.addr, self.stats_addr = child, addr, stats

    @classmethod
    def start(cls, binary: Path, cpus: str | None, threads: int, cert: dict, client_ca: Path,
              work: Path, http1_only: bool = False) -> "Upstream":
        """`http1_only`: the upstream offers only http/1.1 by ALPN (every peer speaks it); else h2
        and http/1.1, and each proxy uses the best it supports."""
        argv = [str(binary), "--listen", "127.0.0.1:0", "--cert", str(cert["cert"]), "--key", str(cert["key"]),
                "--client-ca", str(client_ca), "--threads", str(threads), "--stats-listen", "127.0.0.1:0"]
        if http1_only:
            argv.append("--http1-only")
        child = Child("upstream", taskset(cpus, argv), work, stdout_pipe=True)
        line = child.read_line()
        parts = line.split()
        if len(parts) != 4 or parts[0] != "listening" or parts[2] != "stats":
            raise HarnessError(f"bench-upstream printed {line!r}, expected 'listening ADDR stats ADDR'")
        return cls(child, parts[1], parts[3])

    def stats(self) -> dict:
        status, body = http("GET", f"http://{self.stats_addr}/stats")
        if status != 200:
            raise HarnessError(f"upstream /stats answered {status}")
        return json.loads(body)

    def reset(self) -> None:
        status, _ = http("POST", f"http://{self.stats_addr}/reset")
        if status != 200:
            raise HarnessError(f"upstream /reset answered {status}")
