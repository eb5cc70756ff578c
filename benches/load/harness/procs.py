"""Child processes (started, pinned, stopped) and what /proc says about them (CPU time, RSS)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Every wait for a child is bounded: a proxy that is not ready in this long is broken, not slow.
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class HarnessError(RuntimeError):
    """A step of the harness failed; the message says which and why."""


def taskset(cpus: str | None, argv: list[str]) -> list[str]:
    """Prefix argv with `taskset -c CPUS` when pinned."""
    return ["taskset", "-c", cpus, *argv] if cpus else argv


# Every child ever started, so that the harness stops them all however it ends.
ALL: list["Child"] = []


class Child:
    """One started process with its log file; stopped (and its process group killed) on stop()."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict | None = None,
                 stdout_pipe: bool = False, cwd: Path | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if stdout_pipe else self.log,
            stderr=self.log,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        ALL.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_line(self, timeout: float = READY_TIMEOUT_S) -> str:
        """The next stdout line (stdout_pipe children), bounded in time."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.readline()
            if chunk:
                buf += chunk
                if buf.endswith(b"\n"):
                    return buf.decode().rstrip("\n")
            elif self.proc.poll() is not None:
                raise HarnessError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            else:
                time.sleep(0.01)
        raise HarnessError(f"{self.name} printed no line within {timeout}s; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.log.closed:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.log.close()


def from_disk(binary: str | Path) -> None:
    """Drops `binary`'s pages, and those of the shared libraries it loads, from the page cache
    (`posix_fadvise(DONTNEED)`; pages some running process maps stay), so that the proxy started
    next reads its code from disk, as a fresh start does. A proxy's file-backed RSS is the code
    the kernel maps around each page it faults in, and with large page-cache folios (this VM
    reads ahead 8 MiB) that depends on how the file came into the cache: the same popgate binary
    (BOLT's layout) read 11.9-12.2 MiB at its peak with one route while cached as written, and
    10.4-10.6 MiB started from disk (benches/README.md). Every proxy starts from the same state,
    so the readings repeat and compare."""
    path = shutil.which(str(binary)) if not os.path.isabs(str(binary)) else str(binary)
    if path is None:
        return
    files = [path]
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=10).stdout
        # "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)" and the loader's own line.
        files += [w for line in out.splitlines() for w in line.split() if w.startswith("/")]
    except (OSError, subprocess.TimeoutExpired):
        pass  # no ldd: the binary alone
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def descendants(pid: int) -> list[int]:
    """pid and every process below it (nginx's workers, taskset's exec'd child)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of pid and its descendants (threads included)."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / CLOCK_TICKS


def memory_kib(pid: int, field: str) -> int:
    """Sum of a /proc/PID/status field (VmRSS, VmHWM) over pid and its descendants, in KiB."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    """One plain-HTTP request (loopback admin APIs and readiness probes)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for_200(url: str, host: str, child: Child, timeout: float = READY_TIMEOUT_S) -> float:
    """Polls url (with Host: host) until it answers 200; returns seconds since the child started."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            raise HarnessError(f"{child.name} exited with {child.proc.returncode}; see {child.log_path}")
        try:
            status, body = http("GET", url, headers={"host": host}, timeout=2.0)
            if status == 200:
                return time.monotonic() - child.started
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.005)
    raise HarnessError(f"{child.name} not serving 200 within {timeout}s (last: {last}); see {child.log_path}")
