"""The upstream's certificate (a bench CA of its own) and the static token the peers send."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .procs import HarnessError

UPSTREAM_HOST = "api.bench.test"
RESOURCE = f"https://{UPSTREAM_HOST}"


def run(argv: list[str], what: str) -> bytes:
    done = subprocess.run(argv, capture_output=True)
    if done.returncode != 0:
        raise HarnessError(f"{what} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return done.stdout


def upstream_certificate(work: Path) -> dict:
    """A P-256 CA and a server certificate for UPSTREAM_HOST signed by it (openssl)."""
    ca_key, ca = work / "bench-ca.key", work / "bench-ca.pem"
    key, csr, cert = work / "upstream.key", work / "upstream.csr", work / "upstream.pem"
    ext = work / "upstream.ext"
    ext.write_text(
        f"subjectAltName=DNS:{UPSTREAM_HOST}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=popgate bench CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"], "bench CA")
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={UPSTREAM_HOST}"], "upstream CSR")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)], "upstream cert")
    return {"ca": ca, "cert": cert, "key": key}


def fetch_pop_token(authority: dict, cert: Path, key: Path, resource: str = RESOURCE) -> str:
    """An mTLS PoP token from the local authority's token endpoint, bound to cert (curl)."""
    host = "mtlsauth.microsoft.com"
    url = f"https://{host}/{authority['tenant']}/oauth2/v2.0/token"
    out = run(["curl", "-sS", "--max-time", "10", "--cacert", str(authority["ca"]),
               "--cert", str(cert), "--key", str(key),
               "--connect-to", f"{host}:443:{authority['token_addr']}",
               "-d", "grant_type=client_credentials", "-d", f"client_id={authority['client_id']}",
               "-d", f"scope={resource}/.default", "-d", "token_type=mtls_pop", url],
              "token request (curl)")
    try:
        body = json.loads(out)
        if body.get("token_type") != "mtls_pop":
            raise HarnessError(f"token endpoint answered {body.get('error', 'no token')}")
        return body["access_token"]
    except (ValueError, KeyError) as e:
        raise HarnessError(f"token endpoint answer is not a token response: {e}") from e
