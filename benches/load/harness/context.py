"""The set-up every harness script shares: the local authority with the bench resource, the
upstream's certificate, the client certificate the authority issued, and a PoP token for the peers
that send one themselves."""
from __future__ import annotations

import shutil
from pathlib import Path

from . import authority as auth
from .peers import Ctx
from .pki import fetch_pop_token, upstream_certificate


def popgate_binaries(root: Path) -> dict:
    """popgate as production runs it (the Dockerfile's build: `dist` profile, without the `dev`
    feature's local authority, which `popgate run` never uses and whose code is resident text),
    and the local authority's own binary."""
    return {"popgate": root / "target" / "dist" / "popgate",
            "authority": root / "target" / "release" / "popgate-authority"}


# The builds `popgate_binaries` names, and the bench tools' (run from the repository's root).
DIST_BUILD = ["cargo", "build", "--profile", "dist", "--no-default-features", "--locked", "-p", "popgate",
              "--bin", "popgate"]
AUTHORITY_BUILD = (["cargo", "build", "--release", "--locked", "-p", "popgate-authority"], "local authority")
POPGATE_BUILDS = [(DIST_BUILD, "popgate (production build)"), AUTHORITY_BUILD]
TOOLS_BUILD = (["cargo", "build", "--release", "--locked", "--manifest-path", "benches/load/tools/Cargo.toml"],
               "bench tools")


def bench_context(bins: dict, work: Path) -> tuple[Ctx, dict]:
    """Starts the authority in `work` and returns the context (its upstream address still empty)
    and the upstream certificate (`upstream_certificate`'s dict)."""
    _, info = auth.start(bins["authority"], work)
    auth.set_lifetime(info, auth.LONG_LIFETIME_S)
    auth.admin(info, "POST", "/resources", {"audience": "https://api.bench.test", "hosts": ["api.bench.test"]})
    info["ca"] = Path(info["ca"])
    cert = upstream_certificate(work)
    client_cert, client_key = work / "client.pem", work / "client.key"
    shutil.copy(info["cert"], client_cert)
    shutil.copy(info["key"], client_key)
    combined = work / "client-combined.pem"
    combined.write_bytes(client_cert.read_bytes() + client_key.read_bytes())
    token = fetch_pop_token(info, client_cert, client_key)
    ctx = Ctx(work=work, bin=bins, client_cert=client_cert, client_key=client_key, client_combined=combined,
              bench_ca=cert["ca"], authority=info, upstream_addr="", token=token)
    return ctx, cert
