"""caslb designs: `caslb run CONFIG` with the `[exchange]` shorthand, one per mode.

- caslb-l4 (scenario A): one TLS-passthrough frontend, one pool checked on OWA;
- caslb-l4-sni (scenario D): one frontend routing by SNI to per-protocol pools,
  clients ask for `<protocol>.<namespace>`;
- caslb-l7 (scenario B): TLS terminated, a pool per vdir.

Every mode gets the run's probe timing, connect timeout and retries, and the
mail frontends. The harness reads `GET /status` on the admin API: a server is
chosen for a protocol while it is eligible in the pool carrying that protocol
and not ejected from it by outlier detection.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trustme

from perf.failover.connect import Endpoint
from perf.failover.designs.base import HTTP_LOAD, MAIL_LISTENER, Design, wait_all_chosen
from perf.failover.farm import FarmInfo
from perf.failover.procs import REPO_ROOT, child, python
from perf.failover.settings import ProbeSettings
from perf.net import free_port

LISTENERS = ("https", "imaps", "pops", "smtp", "submission")
# the `caslb` console script, run with the harness's interpreter
CASLB_COMMAND = (python(), "-c", "from lb.cli import main; main()")


def _duration(seconds: float) -> str:
    return f'"{round(seconds * 1000)}ms"'


def _toml(value: Any) -> str:
    """A TOML inline value: strings, numbers, and tables of those."""
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def render_config(
    farm: FarmInfo,
    probes: ProbeSettings,
    mode: str,
    listen: Mapping[str, int],
    admin_port: int,
    tls: tuple[Path, Path] | None,
    protocols: tuple[str, ...] = (*HTTP_LOAD, *MAIL_LISTENER),
    slowstart: float | None = None,
) -> str:
    """The caslb TOML of one design, in the `[exchange]` shorthand.

    `slowstart` overrides the shorthand's for every pool (None keeps it).

    Raises:
        ValueError: naming a bad mode, or l7 without a certificate.
    """
    if mode not in ("l4", "l4-sni", "l7"):
        raise ValueError(f"unknown caslb mode {mode!r}")
    if mode == "l7" and tls is None:
        raise ValueError("caslb l7 needs a certificate and key")
    servers = ",\n    ".join(
        _toml(
            {
                "name": s.name,
                "address": s.host,
                "fqdn": s.fqdn,
                "ports": {k: s.ports[k] for k in LISTENERS if k in s.ports},
            }
        )
        for s in farm.servers
    )
    lines = [
        '# written by perf/failover for one scenario; a short drain keeps the matrix fast',
        'grace = "1s"',
        "",
        "[exchange]",
        f'namespace = "{farm.namespace}"',
        f'mode = "{mode}"',
        'bind = "127.0.0.1"',
        f"protocols = {json.dumps(list(protocols))}",
        f"servers = [\n    {servers},\n]",
        f"listen = {_toml(listen)}",
        f"inter = {_duration(probes.inter)}",
        f"fastinter = {_duration(probes.fastinter)}",
        f"downinter = {_duration(probes.downinter)}",
        f"rise = {probes.rise}",
        f"fall = {probes.fall}",
        f"timeout = {_duration(probes.timeout)}",
        f"connect_timeout = {_duration(probes.connect_timeout)}",
        f"retries = {probes.retries}",
        f'ca_file = "{farm.ca_path}"',
    ]
    if slowstart is not None:
        lines.append(f"slowstart = {_duration(slowstart)}")
    if tls is not None:
        lines.append(f'tls = {{ cert = "{tls[0]}", key = "{tls[1]}" }}')
    lines += ["", "[admin]", f'bind = "127.0.0.1:{admin_port}"']
    return "\n".join(lines) + "\n"


def pool_of(protocol: str, mode: str) -> str:
    """The caslb pool that carries `protocol` in a mode (pools are named by protocol)."""
    if protocol in MAIL_LISTENER or mode != "l4":
        return protocol
    return "https"


def parse_status(document: Mapping[str, Any]) -> dict[tuple[str, str], bool]:
    """`GET /status` JSON -> (pool, server) -> eligible and not ejected."""
    out = {}
    for pool, body in document.get("pools", {}).items():
        for server in body.get("servers", []):
            out[(pool, server["name"])] = (
                bool(server.get("eligible")) and server.get("ejected_for") is None
            )
    return out


async def http_get(port: int, path: str, timeout: float = 2.0) -> bytes:
    """A plain HTTP/1.0 GET on 127.0.0.1, the body returned on 200."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            chunks = []
            while data := await stream.receive_some(65536):
                chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        raise OSError(f"admin GET {path} answered {head[:40]!r}")
    return body


@dataclass(frozen=True)
class CaslbRunning:
    """A running caslb design."""

    endpoints: Mapping[str, Endpoint]
    admin_port: int
    mode: str
    notes: tuple[str, ...] = ()

    async def chosen(self, server: str) -> dict[str, bool] | None:
        """Per protocol: is `server` eligible in the pool carrying it."""
        status = parse_status(json.loads(await http_get(self.admin_port, "/status")))
        return {p: status.get((pool_of(p, self.mode), server), False) for p in self.endpoints}


def _endpoints(farm: FarmInfo, mode: str, listen: Mapping[str, int]) -> dict[str, Endpoint]:
    https = (("127.0.0.1", listen["https"]),)
    out = {}
    for p in HTTP_LOAD:
        name = f"{p}.{farm.namespace}" if mode == "l4-sni" else farm.namespace
        out[p] = Endpoint(https, name)
    for p, listener in MAIL_LISTENER.items():
        out[p] = Endpoint((("127.0.0.1", listen[listener]),), farm.namespace, listener != "smtp")
    return out


def write_cert(farm: FarmInfo, workdir: Path) -> tuple[Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert(farm.namespace, f"*.{farm.namespace}")
    cert_path, key_path = workdir / "caslb-cert.pem", workdir / "caslb-key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path



def _starter(mode: str, slowstart: float | None = None):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def start(
        farm: FarmInfo, probes: ProbeSettings, workdir: Path
    ) -> AsyncIterator[CaslbRunning]:
        listen = {k: free_port() for k in LISTENERS}
        admin = free_port()
        tls = write_cert(farm, workdir) if mode == "l7" else None
        cfg = workdir / f"caslb-{mode}.toml"
        argv = [*CASLB_COMMAND, "run", str(cfg)]
        notes: tuple[str, ...] = ()
        async with AsyncExitStack() as stack:
            for protocols in ((*HTTP_LOAD, *MAIL_LISTENER), HTTP_LOAD):
                cfg.write_text(
                    render_config(farm, probes, mode, listen, admin, tls, protocols, slowstart))
                log = workdir / f"caslb-{len(protocols)}.log"
                proc = await stack.enter_async_context(child(argv, log=log, name="caslb"))
                endpoints = {
                    p: e for p, e in _endpoints(farm, mode, listen).items() if p in protocols
                }
                running = CaslbRunning(endpoints, admin, mode, notes)
                try:
                    await wait_all_chosen(running, farm, proc)
                    break
                except RuntimeError as exc:
                    # a checkout whose caslb serves HTTP but not yet TCP frontends
                    # still measures L7 for the HTTP protocols, and says so
                    if mode != "l7" or "not served yet" not in str(exc) or len(protocols) < 9:
                        raise
                    notes = (f"mail protocols left out: {exc}",)
            yield running

    return start


@functools.cache
def caslb_missing() -> str | None:
    """Why caslb designs cannot run here (no `caslb run` yet), or None."""
    try:
        done = subprocess.run(
            [*CASLB_COMMAND, "run", "--help"],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"caslb cannot start: {exc}"
    if done.returncode != 0:
        return "`caslb run` is not available in this checkout"
    return None


CASLB_DESIGNS = (
    Design("caslb-l4", "caslb L4, one namespace, OWA probe (scenario A)", _starter("l4"),
           caslb_missing),
    Design("caslb-l4-sni", "caslb L4 SNI, a name per protocol (scenario D)", _starter("l4-sni"),
           caslb_missing),
    Design("caslb-l7", "caslb L7, one namespace, a pool per vdir (scenario B)", _starter("l7"),
           caslb_missing),
    # HAProxy runs here without slow start: this one shows caslb's L7 rebalancing
    # of kept-alive clients at the same pace, not the pace of a 30 s ramp.
    Design("caslb-l7-noslow", "caslb L7 as caslb-l7, slow start off (as HAProxy here)",
           _starter("l7", slowstart=0.0), caslb_missing),
)
