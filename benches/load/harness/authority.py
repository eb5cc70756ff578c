"""The local authority (`popgate-authority`) as a child: its endpoints and its admin API."""

from __future__ import annotations

import json
from pathlib import Path

from .procs import Child, HarnessError, http

# The peers get one static token for the whole run: a day outlives any run of the harness.
LONG_LIFETIME_S = 86_400


def start(binary: Path, work: Path) -> tuple[Child, dict]:
    state = work / "authority"
    child = Child("authority", [str(binary), "--state-dir", str(state)], work, stdout_pipe=True)
    info: dict = {"resolve": []}
    for _ in range(64):
        line = child.read_line()
        key, _, value = line.partition(": ")
        if line == "serving until Ctrl-C":
            break
        if key == "token endpoint":
            info["token_addr"] = value.split()[0].removeprefix("https://")
        elif key == "admin":
            info["admin"] = value.removeprefix("http://")
        elif key == "ca":
            info["ca"] = Path(value)
        elif key == "tenant":
            info["tenant"] = value
        elif key == "demo app":
            parts = dict(p.split("=", 1) for p in value.split())
            info["client_id"], info["cert"], info["key"] = parts["client_id"], parts["cert"], parts["key"]
        elif key == "resolve":
            host, port, ip, ip_port = value.rsplit(":", 3)
            info["resolve"].append((f"{host}:{port}", f"{ip}:{ip_port}"))
    missing = {"token_addr", "admin", "ca", "tenant", "client_id"} - info.keys()
    if missing:
        raise HarnessError(f"popgate-authority did not print {sorted(missing)}; see {child.log_path}")
    return child, info


def admin(info: dict, method: str, path: str, body: dict | None = None) -> dict:
    status, raw = http(method, f"http://{info['admin']}{path}", body)
    if status != 200:
        raise HarnessError(f"authority admin {method} {path} answered {status}: {raw[:300]!r}")
    return json.loads(raw)


def token_calls(info: dict) -> int:
    return int(admin(info, "GET", "/counts").get("token", 0))


def set_lifetime(info: dict, seconds: int) -> None:
    admin(info, "POST", "/settings", {"lifetime_secs": seconds, "clear_refresh_in": True})
