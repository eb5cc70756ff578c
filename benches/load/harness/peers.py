"""The proxies under test, each configured the same way: plain HTTP in, keep-alive, mTLS out with
the same client certificate, the same token header, upstream connection reuse, no access logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .pki import RESOURCE, UPSTREAM_HOST
from .procs import Child, free_port, from_disk, taskset, wait_for_200

# Upstream keep-alive is set far above any run's request count so that no proxy recycles
# connections by count (nginx's default is 1000 requests, which alone would cap reuse at 99.9%).
KEEPALIVE_REQUESTS = 100_000_000
# Callers held open by the idle-connection scenario, plus headroom.
MAX_CALLERS = 30_000
# HAProxy reserves two descriptors per connection (maxsock = 2 * maxconn + 14) and refuses to start
# when that exceeds RLIMIT_NOFILE, which this sandbox caps at 20 000 (no CAP_SYS_RESOURCE).
HAPROXY_MAXCONN = 9_990
# The buffer room HAProxy keeps free for header rewrites (`tune.maxrewrite`, 1,024 bytes by
# default): the ~1.2 KB Authorization it sets did not fit once a POST's body had filled the rest
# of the buffer, and HAProxy answered every such request 500. 4 KiB of its 16 KiB buffer.
HAPROXY_MAXREWRITE = 4_096


@dataclass
class Placement:
    name: str          # "pinned" or "unpinned"
    proxy_cpus: str | None   # taskset list for the proxy
    other_cpus: str | None   # for the load generator and the upstream
    workers: int       # proxy workers / threads


@dataclass
class Ctx:
    work: Path
    bin: dict           # popgate, envoy, pingora, ...
    client_cert: Path   # the binding certificate every proxy presents
    client_key: Path
    client_combined: Path  # cert + key in one file (HAProxy)
    bench_ca: Path      # trust anchor of the upstream's certificate
    authority: dict
    upstream_addr: str
    token: str          # the static token the peers send (popgate gets its own from the engine)


def authorization(ctx: Ctx) -> str:
    return f"mtls_pop {ctx.token}"


def popgate_config(ctx: Ctx, port: int, admin_port: int, routes: int = 1, lazy: bool = False,
                   cert: Path | None = None, key: Path | None = None,
                   intercept: tuple[Path, Path] | None = None, workers: int | None = None) -> str:
    """routes.yaml for the bench: the measured route plus (routes - 1) others of the same shape;
    `intercept`: (CA certificate, CA key) to intercept CONNECTs on the listener with.
    `workers`: popgate's data-plane threads (its own `workers:` setting; None: its default, the CPUs
    it may use)."""
    resolve = "\n".join(f'    "{h}": "{a}"' for h, a in ctx.authority["resolve"] if not h.startswith("*."))
    lines = [
        "version: 1",
        *([f"workers: {workers}"] if workers else []),
        "listeners:",
        f"  - address: 127.0.0.1:{port}",
        *([f"    intercept: {{ ca_cert_file: {intercept[0]}, ca_key_file: {intercept[1]} }}"] if intercept else []),
        "admin:",
        f"  address: 127.0.0.1:{admin_port}",
        "network:",
        "  resolve:",
        resolve,
        f'    "{UPSTREAM_HOST}:443": "{ctx.upstream_addr}"',
        f"  extra_ca_files: [{ctx.authority['ca']}, {ctx.bench_ca}]",
        "limits:",
        f"  max_connections: {MAX_CALLERS}",
        "identities:",
        "  app:",
        "    kind: confidential_client",
        f"    tenant_id: {ctx.authority['tenant']}",
        f"    client_id: {ctx.authority['client_id']}",
        f"    certificate: {{ cert_file: {cert or ctx.client_cert}, key_file: {key or ctx.client_key} }}",
        "routes:",
        "  - name: bench",
        f"    match: {{ host: {UPSTREAM_HOST} }}",
        f"    resource: {RESOURCE}",
        "    flow: vanilla",
        "    identity: app",
        f"    acquire: {'lazy' if lazy else 'eager'}",
    ]
    for i in range(1, routes):
        host = f"svc{i}.bench.test"
        lines += [
            f"  - name: svc{i}",
            f"    match: {{ host: {host} }}",
            f"    resource: https://{host}",
            "    flow: vanilla",
            "    identity: app",
        ]
    return "\n".join(lines) + "\n"


def start_popgate(ctx: Ctx, pl: Placement, name: str = "popgate", **config) -> tuple[Child, int, int]:
    port, admin_port = free_port(), free_port()
    cfg = ctx.work / f"{name}.yaml"
    # Placement by popgate's own setting: one worker pinned, one per CPU unpinned.
    config.setdefault("workers", pl.workers)
    cfg.write_text(popgate_config(ctx, port, admin_port, **config))
    env = {"POPGATE_LOG": "warn"}
    from_disk(ctx.bin["popgate"])
    child = Child(name, taskset(pl.proxy_cpus, [str(ctx.bin["popgate"]), "run", "--config", str(cfg),
                                                "--log-format", "json"]), ctx.work, env=env)
    return child, port, admin_port


def start_envoy(ctx: Ctx, pl: Placement) -> tuple[Child, int]:
    port = free_port()
    up_host, up_port = ctx.upstream_addr.rsplit(":", 1)
    cfg = ctx.work / "envoy.yaml"
    cfg.write_text(f"""static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    per_connection_buffer_limit_bytes: 1048576
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: HTTP1
          generate_request_id: false
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream, host_rewrite_literal: {UPSTREAM_HOST}, timeout: 60s}}
                request_headers_to_add:
                - header: {{key: authorization, value: "{authorization(ctx)}"}}
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 5s
    circuit_breakers:
      thresholds: [{{max_connections: {MAX_CALLERS}, max_pending_requests: {MAX_CALLERS}, max_requests: {MAX_CALLERS}}}]
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {up_host}, port_value: {up_port}}}}}}}}}]}}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {UPSTREAM_HOST}
        common_tls_context:
          tls_certificates:
          - certificate_chain: {{filename: {ctx.client_cert}}}
            private_key: {{filename: {ctx.client_key}}}
          validation_context:
            trusted_ca: {{filename: {ctx.bench_ca}}}
            match_typed_subject_alt_names: [{{san_type: DNS, matcher: {{exact: {UPSTREAM_HOST}}}}}]
""")
    argv = [str(ctx.bin["envoy"]), "-c", str(cfg), "--concurrency", str(pl.workers),
            "--disable-hot-restart", "-l", "warn", "--log-path", str(ctx.work / "envoy.stderr")]
    return Child("envoy", taskset(pl.proxy_cpus, argv), ctx.work), port


def start_nginx(ctx: Ctx, pl: Placement) -> tuple[Child, int]:
    port = free_port()
    prefix = ctx.work / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    cfg = prefix / "nginx.conf"
    cfg.write_text(f"""worker_processes {pl.workers};
worker_rlimit_nofile {MAX_CALLERS * 2};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {MAX_CALLERS}; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  keepalive_requests {KEEPALIVE_REQUESTS};
  keepalive_timeout 300s;
  upstream up {{
    server {ctx.upstream_addr};
    keepalive 1024;
    keepalive_requests {KEEPALIVE_REQUESTS};
    keepalive_timeout 300s;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=16384;
    location / {{
      proxy_pass https://up;
      proxy_http_version 1.1;
      # Request bodies streamed upstream as popgate does (ab.py --body-bytes), not spooled to
      # client_body_temp_path, which the unprivileged workers of a root master cannot write.
      proxy_request_buffering off;
      proxy_set_header Connection "";
      proxy_set_header Host {UPSTREAM_HOST};
      proxy_set_header Authorization "{authorization(ctx)}";
      proxy_ssl_certificate {ctx.client_cert};
      proxy_ssl_certificate_key {ctx.client_key};
      proxy_ssl_trusted_certificate {ctx.bench_ca};
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 2;
      proxy_ssl_name {UPSTREAM_HOST};
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }}
  }}
}}
""")
    argv = ["nginx", "-p", str(prefix), "-c", str(cfg), "-g", "daemon off; master_process on;"]
    return Child("nginx", taskset(pl.proxy_cpus, argv), ctx.work), port


def start_haproxy(ctx: Ctx, pl: Placement) -> tuple[Child, int]:
    port = free_port()
    cfg = ctx.work / "haproxy.cfg"
    cfg.write_text(f"""global
  nbthread {pl.workers}
  maxconn {HAPROXY_MAXCONN}
  tune.maxrewrite {HAPROXY_MAXREWRITE}
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:{port}
  default_backend upstream
backend upstream
  http-request set-header Host {UPSTREAM_HOST}
  http-request set-header Authorization "{authorization(ctx)}"
  server up {ctx.upstream_addr} ssl crt {ctx.client_combined} ca-file {ctx.bench_ca} verify required sni str({UPSTREAM_HOST}) verifyhost {UPSTREAM_HOST} alpn http/1.1 pool-purge-delay 300s
""")
    argv = ["haproxy", "-db", "-f", str(cfg)]
    return Child("haproxy", taskset(pl.proxy_cpus, argv), ctx.work), port


def _start_relay(name: str, ctx: Ctx, pl: Placement) -> tuple[Child, int]:
    """The pingora proxy and bench-floor take the same flags: listen, upstream, TLS files, token."""
    port = free_port()
    auth = ctx.work / "authorization.txt"
    auth.write_text(authorization(ctx) + "\n")
    argv = [str(ctx.bin[name]), "--listen", f"127.0.0.1:{port}", "--upstream", ctx.upstream_addr,
            "--sni", UPSTREAM_HOST, "--ca", str(ctx.bench_ca), "--cert", str(ctx.client_cert),
            "--key", str(ctx.client_key), "--authorization-file", str(auth), "--threads", str(pl.workers)]
    return Child(name, taskset(pl.proxy_cpus, argv), ctx.work), port


def start_pingora(ctx: Ctx, pl: Placement) -> tuple[Child, int]:
    return _start_relay("pingora", ctx, pl)


def start_floor(ctx: Ctx, pl: Placement) -> tuple[Child, int]:
    """The yardstick (tools/src/floor): the least an HTTP/1.1 proxy does per request, not a peer."""
    return _start_relay("floor", ctx, pl)


# Not peers: measured beside the proxies when asked for (`--proxies ...,floor`), never a target's
# peer nor the best peer a build is compared with, and without the idle callers (the floor's
# fixed buffers are not a design anyone runs).
YARDSTICKS = ["floor"]

PEERS = {
    "envoy": start_envoy,
    "nginx": start_nginx,
    "haproxy": start_haproxy,
    "pingora": start_pingora,
    "floor": start_floor,
}


def start(name: str, ctx: Ctx, pl: Placement) -> tuple[Child, int]:
    """Starts one proxy and waits until a request through it is answered 200 by the upstream."""
    if name == "popgate":
        child, port, _ = start_popgate(ctx, pl)
    else:
        from_disk(ctx.bin.get(name) or name)
        child, port = PEERS[name](ctx, pl)
    wait_for_200(f"http://127.0.0.1:{port}/ready", UPSTREAM_HOST, child)
    return child, port
