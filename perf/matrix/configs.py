"""The config files of the origin and of every proxy a matrix run starts, as text.

Each proxy gets two processes' worth of config: an L7 one (a plain and a
TLS-terminating HTTP frontend, both to the nginx origin) and an L4 one (a tcp
frontend to iperf3 for bulk, and one to the origin that idle connections are
held through). All on 127.0.0.1; every limit set above the 10k idle connections
a full run holds.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

from perf.l7bench import CHECK, checked_pool

HOST = "127.0.0.1"


def _hard_nofile() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 200_000 if hard == resource.RLIM_INFINITY else min(hard, 200_000)


# Every proxy inherits the harness's limit, raised to the hard one; a container
# may not let even root raise that. A proxied connection is two descriptors.
FDS = _hard_nofile()
MAXCONN = (FDS - 200) // 2


def body_path(body: str) -> str:
    """The URL path of one body size; outside every Exchange vdir, so no catalog timeouts."""
    return f"/bench/{body}"


@dataclass(frozen=True)
class L7Ports:
    """Where one proxy's L7 process listens, and the origin behind it."""

    plain: int
    tls: int
    origin: int
    admin: int = 0  # caslb only


@dataclass(frozen=True)
class L4Ports:
    """Where one proxy's L4 process listens: bulk to iperf3, hold to the origin."""

    bulk: int
    hold: int
    iperf: int
    origin: int
    admin: int = 0


def nginx_origin(workdir: Path, port: int) -> str:
    """nginx serving static files from `workdir`/www, kept alive for the idle rows."""
    temp = "".join(f"    {k}_temp_path {workdir}/{k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"daemon off;\nworker_processes 1;\nworker_rlimit_nofile {FDS};\n"
        f"pid {workdir}/origin.pid;\nerror_log {workdir}/origin.err warn;\n"
        f"events {{ worker_connections {FDS - 100}; }}\n"
        f"http {{\n    access_log off;\n{temp}"
        "    keepalive_timeout 15m;\n    keepalive_requests 100000000;\n"
        f"    server {{ listen {HOST}:{port} backlog=4096; root {workdir}/www; }}\n}}\n"
    )


def caslb_l7(ports: L7Ports, pem: Path) -> str:
    """caslb: plain and TLS http frontends, one pool of the origin with a healthcheck check."""
    return f"""# written by perf/matrix
grace = "1s"

[admin]
bind = "{HOST}:{ports.admin}"

[frontends.plain]
bind = "{HOST}:{ports.plain}"
mode = "http"
default_pool = "origin"
max_connections = {MAXCONN}

[frontends.tls]
bind = "{HOST}:{ports.tls}"
mode = "http"
default_pool = "origin"
max_connections = {MAXCONN}
tls = {{ cert = "{pem}", key = "{pem}" }}
""" + checked_pool("origin", "origin", ports.origin)


def caslb_l4(ports: L4Ports) -> str:
    """caslb: tcp frontends to iperf3 and to the origin, tcp checks (iperf3 takes a probe)."""
    out = f'# written by perf/matrix\ngrace = "1s"\n\n[admin]\nbind = "{HOST}:{ports.admin}"\n'
    for name, port, target in (("bulk", ports.bulk, ports.iperf), ("hold", ports.hold,
                                                                   ports.origin)):
        out += f"""
[frontends.{name}]
bind = "{HOST}:{port}"
mode = "tcp"
pool = "{name}"
max_connections = {MAXCONN}

[pools.{name}]
servers = [{{ name = "{name}", address = "{HOST}:{target}" }}]

[pools.{name}.check]
kind = "tcp"
inter = "2s"
rise = 1
"""
    return out


_HAPROXY_HEAD = f"""global
    maxconn {MAXCONN}
defaults
    mode {{mode}}
    timeout connect 2s
    timeout client 15m
    timeout server 15m
"""


def haproxy_l7(ports: L7Ports, pem: Path) -> str:
    """HAProxy mode http, keep-alive both ways, the same check as caslb's."""
    return _HAPROXY_HEAD.format(mode="http") + f"""    option http-keep-alive
    timeout http-keep-alive 15m
frontend plain
    bind {HOST}:{ports.plain}
    default_backend origin
frontend tls
    bind {HOST}:{ports.tls} ssl crt {pem}
    default_backend origin
backend origin
    option httpchk GET {CHECK}
    server origin {HOST}:{ports.origin} check inter 2s
"""


def haproxy_l4(ports: L4Ports, *, splice: bool = False) -> str:
    """HAProxy mode tcp with its defaults, a tcp check on each server; with `splice`,
    its best bulk configuration: splice(2) both ways through 1 MiB pipes."""
    out = _HAPROXY_HEAD.format(mode="tcp")
    if splice:  # bulk rows only: fewer connections, so its pipes fit the descriptor limit
        out = out.replace(f"maxconn {MAXCONN}", "maxconn 4000\n    tune.pipesize 1048576", 1)
        out += "    option splice-auto\n"
    for name, port, target in (("bulk", ports.bulk, ports.iperf), ("hold", ports.hold,
                                                                   ports.origin)):
        out += f"listen {name}\n    bind {HOST}:{port}\n"
        out += f"    server {name} {HOST}:{target} check inter 2s\n"
    return out


def _nginx_head(workdir: Path, name: str, stream: bool) -> str:
    module = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n" if stream else ""
    return (
        f"{module}daemon off;\nworker_processes 1;\nworker_rlimit_nofile {FDS};\n"
        f"pid {workdir}/{name}.pid;\nerror_log {workdir}/{name}.err warn;\n"
        f"events {{ worker_connections {FDS - 100}; }}\n"
    )


def nginx_l7(workdir: Path, ports: L7Ports, pem: Path) -> str:
    """nginx as a reverse proxy with an upstream keep-alive pool (no active checks: not in OSS)."""
    temp = "".join(f"    {k}_temp_path {workdir}/n7-{k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return _nginx_head(workdir, "nginx-l7", stream=False) + f"""http {{
    access_log off;
{temp}    keepalive_timeout 15m;
    keepalive_requests 100000000;
    upstream origin {{ server {HOST}:{ports.origin}; keepalive 512; }}
    server {{
        listen {HOST}:{ports.plain} backlog=4096;
        listen {HOST}:{ports.tls} ssl backlog=4096;
        ssl_certificate {pem};
        ssl_certificate_key {pem};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx_l4(workdir: Path, ports: L4Ports) -> str:
    """nginx stream (Debian's libnginx-mod-stream): plain TCP relays."""
    servers = "".join(
        f"    server {{ listen {HOST}:{port} backlog=4096; proxy_pass {HOST}:{target}; "
        "proxy_timeout 15m; }\n"
        for port, target in ((ports.bulk, ports.iperf), (ports.hold, ports.origin))
    )
    return _nginx_head(workdir, "nginx-l4", stream=True) + f"stream {{\n{servers}}}\n"


def mitmproxy_l7(ports: L7Ports, pem: Path) -> str:
    """mitmproxy's config.yaml: reverse mode on both ports (it detects TLS itself)."""
    modes = "".join(f"  - reverse:http://{HOST}:{ports.origin}@{HOST}:{p}\n"
                    for p in (ports.plain, ports.tls))
    return (f"mode:\n{modes}certs:\n  - \"*={pem}\"\n"
            "flow_detail: 0\ntermlog_verbosity: warn\nconnection_strategy: lazy\n")
