"""HAProxy (whatever Debian ships, 2.6 here) configured as the Exchange guides do.

Two designs share one generator:

- haproxy-tcp, like scenario A: one TLS-passthrough frontend for every HTTPS
  protocol, one backend checked on /owa/healthcheck.htm;
- haproxy-http, like scenario B: TLS terminated, a backend per vdir routed by
  path (`path_beg -i`), each checked on its own healthcheck.htm and
  re-encrypted to the servers.

Both get `option httpchk` with `http-check expect status 200`, `check-ssl verify
none` with the server's FQDN as check SNI, the run's inter/fastinter/downinter/
rise/fall and check/connect timeouts, `retries` and `option redispatch`, and tcp
frontends for IMAPS, POP3S (banner expected) and SMTP (`option smtpchk`). No
`on-marked-down shutdown-sessions` and no `slowstart`: the guides list neither,
so established sessions stay where they are, as the measured baseline did.

The harness reads server state from the stats socket (`show stat`): a server is
chosen while its status starts with UP (including "UP 1/2", still in service
while going down).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
import trustme

from perf import tools
from perf.failover.connect import Endpoint
from perf.failover.designs.base import HTTP_LOAD, MAIL_LISTENER, Design, wait_all_chosen
from perf.failover.farm import FarmInfo
from perf.failover.procs import child
from perf.failover.settings import ProbeSettings
from perf.net import free_port
from probes.catalog import protocol as catalog_protocol

MAIL_CHECKS = {
    "imap": ["option tcp-check", "tcp-check expect string *\\ OK"],
    "pop": ["option tcp-check", "tcp-check expect string +OK"],
    "smtp": ["option smtpchk EHLO perf.lab.local"],
}


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True)
class Ports:
    """Where HAProxy listens: https and one port per mail protocol."""

    https: int
    mail: Mapping[str, int]


def _server_lines(farm: FarmInfo, listener: str, tls_check: bool, reencrypt: bool) -> list[str]:
    lines = []
    for s in farm.servers:
        opts = ["check"]
        if reencrypt:
            opts += ["ssl", "verify none", f"sni str({s.fqdn})", f"check-sni {s.fqdn}"]
        if tls_check:
            opts += ["check-ssl", "verify none", f"check-sni {s.fqdn}"]
        lines.append(f"    server {s.name} {s.host}:{s.ports[listener]} {' '.join(opts)}")
    return lines


def _httpchk(vdir: str, namespace: str) -> list[str]:
    return [
        "    option httpchk",
        f"    http-check send meth GET uri {vdir}/healthcheck.htm ver HTTP/1.1 "
        f"hdr Host {namespace}",
        "    http-check expect status 200",
    ]


def render_config(
    farm: FarmInfo,
    probes: ProbeSettings,
    ports: Ports,
    stats_socket: Path,
    mode: str,
    pem: Path | None = None,
) -> str:
    """The whole haproxy.cfg of one design.

    Args:
        mode: "tcp" (scenario A) or "http" (a backend per vdir).
        pem: certificate and key for TLS termination (http mode only).

    Raises:
        ValueError: naming a bad mode, or http mode without a certificate.
    """
    if mode not in ("tcp", "http"):
        raise ValueError(f"unknown haproxy mode {mode!r}")
    if mode == "http" and pem is None:
        raise ValueError("haproxy http mode needs a certificate")
    out = [
        "global",
        "    maxconn 5000",
        f"    stats socket {stats_socket} mode 600 level admin",
        "defaults",
        "    mode tcp",
        f"    timeout connect {_ms(probes.connect_timeout)}",
        f"    timeout check {_ms(probes.timeout)}",
        "    timeout client 15m",
        "    timeout server 15m",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        f"    retries {probes.retries}",
        "    option redispatch",
        f"    default-server inter {_ms(probes.inter)} fastinter {_ms(probes.fastinter)} "
        f"downinter {_ms(probes.downinter)} rise {probes.rise} fall {probes.fall}",
        "",
        "frontend https",
        f"    bind 127.0.0.1:{ports.https}" + (f" ssl crt {pem}" if mode == "http" else ""),
    ]
    if mode == "tcp":
        out += ["    default_backend https", "", "backend https", "    balance roundrobin"]
        out += _httpchk("/owa", farm.namespace)
        out += _server_lines(farm, "https", tls_check=True, reencrypt=False)
    else:
        out += ["    mode http", "    option forwardfor"]
        for name in HTTP_LOAD:
            vdir = catalog_protocol(name).vdir
            out.append(f"    use_backend {name} if {{ path_beg -i {vdir} }}")
        out.append("    default_backend owa")
        for name in dict.fromkeys(("owa", *HTTP_LOAD)):
            vdir = catalog_protocol(name).vdir
            assert vdir is not None
            out += ["", f"backend {name}", "    mode http", "    balance roundrobin"]
            out += _httpchk(vdir, farm.namespace)
            out += _server_lines(farm, "https", tls_check=False, reencrypt=True)
    for name, port in ports.mail.items():
        listener = MAIL_LISTENER[name]
        out += ["", f"frontend {name}", f"    bind 127.0.0.1:{port}", f"    default_backend {name}"]
        out += ["", f"backend {name}", "    balance roundrobin"]
        out += [f"    {line}" for line in MAIL_CHECKS[name]]
        out += _server_lines(farm, listener, tls_check=listener != "smtp", reencrypt=False)
    return "\n".join(out) + "\n"


def backend_of(protocol: str, mode: str) -> str:
    """The HAProxy backend that carries `protocol` in a design."""
    if protocol in MAIL_LISTENER:
        return protocol
    return "https" if mode == "tcp" else protocol


def parse_stat(text: str) -> dict[tuple[str, str], str]:
    """`show stat` CSV -> (backend, server) -> status, servers only."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {
        (r["pxname"], r["svname"]): r["status"]
        for r in rows
        if r.get("svname") not in (None, "FRONTEND", "BACKEND")
    }


async def show_stat(socket_path: Path) -> dict[tuple[str, str], str]:
    """Ask the stats socket for every server's status."""
    stream = await trio.open_unix_socket(str(socket_path))
    async with stream:
        await stream.send_all(b"show stat\n")
        chunks = []
        while data := await stream.receive_some(65536):
            chunks.append(data)
    return parse_stat(b"".join(chunks).decode())


@dataclass(frozen=True)
class HaproxyRunning:
    """A running HAProxy design."""

    endpoints: Mapping[str, Endpoint]
    socket_path: Path
    mode: str
    notes: tuple[str, ...] = ()

    async def chosen(self, server: str) -> dict[str, bool] | None:
        """Per protocol: is `server` UP in the backend carrying it."""
        stats = await show_stat(self.socket_path)
        return {
            p: stats.get((backend_of(p, self.mode), server), "").startswith("UP")
            for p in self.endpoints
        }


def write_pem(farm: FarmInfo, workdir: Path) -> Path:
    """A certificate for the namespace (and its key) for TLS termination."""
    ca = trustme.CA()
    cert = ca.issue_cert(farm.namespace, f"*.{farm.namespace}")
    pem = workdir / "haproxy.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    return pem



def _mode_starter(mode: str):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def start(
        farm: FarmInfo, probes: ProbeSettings, workdir: Path
    ) -> AsyncIterator[HaproxyRunning]:
        ports = Ports(free_port(), {name: free_port() for name in MAIL_LISTENER})
        sock = workdir / "haproxy.sock"
        pem = write_pem(farm, workdir) if mode == "http" else None
        cfg = workdir / "haproxy.cfg"
        cfg.write_text(render_config(farm, probes, ports, sock, mode, pem))
        endpoints = {p: Endpoint((("127.0.0.1", ports.https),), farm.namespace) for p in HTTP_LOAD}
        for name, port in ports.mail.items():
            endpoints[name] = Endpoint((("127.0.0.1", port),), farm.namespace, name != "smtp")
        argv = [tools.which("haproxy") or "haproxy", "-db", "-f", str(cfg)]
        async with child(argv, log=workdir / "haproxy.log") as proc:
            running = HaproxyRunning(endpoints, sock, mode)
            await wait_all_chosen(running, farm, proc)
            yield running

    return start


def haproxy_missing() -> str | None:
    """Why HAProxy designs cannot run here, or None."""
    if tools.which("haproxy") is None:
        return "haproxy is not installed (apt-get install -y haproxy)"
    return None


HAPROXY_DESIGNS = (
    Design(
        "haproxy-tcp",
        "HAProxy mode tcp, one namespace, OWA probe (like scenario A)",
        _mode_starter("tcp"),
        haproxy_missing,
    ),
    Design(
        "haproxy-http",
        "HAProxy mode http, TLS bridged, a backend per vdir (like scenario B)",
        _mode_starter("http"),
        haproxy_missing,
    ),
)
