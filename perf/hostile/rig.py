"""The balancer under attack and the servers behind it, each a process of its own.

`caslb run` is started from a config this module writes: a plain and a TLS L7
frontend routing `/owa` to the backend's plain ports, a tcp and an sni frontend
passing TLS through to its TLS ports, and the admin API. What the harness reads
of the balancer comes from outside: its fds and RSS from /proc, its servers'
state from `GET /status`, its parked upstream connections from `GET /metrics`,
its log from the file its stderr goes to.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from perf.failover.designs.caslb import CASLB_COMMAND, http_get, parse_status
from perf.failover.procs import LineProcess, child, python
from perf.idle import rss_kib
from perf.net import free_port

NAME = "hostile.test"
IDLE_SERIES = "caslb_server_idle_connections"


@dataclass(frozen=True)
class Ports:
    """Where the balancer listens."""

    plain: int
    tls: int
    tcp: int
    sni: int
    admin: int

    @staticmethod
    def pick() -> Ports:
        """Free loopback ports for every listener."""
        return Ports(free_port(), free_port(), free_port(), free_port(), free_port())


def render_config(ports: Ports, servers: Sequence[dict[str, int]], certs: Path) -> str:
    """The caslb TOML of the rig."""

    def members(kind: str) -> str:
        return ", ".join(
            f'{{ name = "b{i}", address = "127.0.0.1:{s[kind]}", fqdn = "{NAME}" }}'
            for i, s in enumerate(servers, 1)
        )

    pem = certs / "server.pem"
    return f"""\
# written by perf/hostile: every kind of frontend, on loopback
grace = "1s"

[admin]
bind = "127.0.0.1:{ports.admin}"

[frontends.plain]
bind = "127.0.0.1:{ports.plain}"
mode = "http"
routes = {{ "/owa" = "web" }}

[frontends.tls]
bind = "127.0.0.1:{ports.tls}"
mode = "http"
routes = {{ "/owa" = "web" }}
tls = {{ cert = "{pem}", key = "{pem}" }}

[frontends.tcp]
bind = "127.0.0.1:{ports.tcp}"
mode = "tcp"
pool = "passthrough"

[frontends.sni]
bind = "127.0.0.1:{ports.sni}"
mode = "sni"
sni = {{ "{NAME}" = "passthrough" }}

[pools.web]
servers = [{members("plain")}]

[pools.web.check]
kind = "healthcheck"
path = "/owa/healthcheck.htm"
tls = false
inter = "1s"
fall = 2

[pools.passthrough]
servers = [{members("tls")}]
check = {{ kind = "tcp", inter = "1s", fall = 2 }}
"""


@dataclass
class Balancer:
    """A running `caslb run` of the rig."""

    proc: LineProcess
    ports: Ports
    config: Path
    log: Path
    ca: Path

    @property
    def pid(self) -> int:
        """The balancer's process id."""
        return int(self.proc.process.pid)

    def fds(self) -> int:
        """Open file descriptors of the balancer, from /proc."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        """Resident memory of the balancer, from /proc."""
        return rss_kib(self.pid)

    def reload(self) -> None:
        """SIGHUP: re-read the config."""
        self.proc.process.send_signal(signal.SIGHUP)

    def problems(self) -> list[str]:
        """Log lines at ERROR or with a traceback: each is a failed boundary."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [ln for ln in text.splitlines() if " ERROR " in ln or "Traceback" in ln]

    async def parked_upstreams(self) -> int:
        """L7 upstream connections parked for other clients now (one fd each), from /metrics."""
        text = (await http_get(self.ports.admin, "/metrics")).decode()
        return round(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                         if line.startswith(IDLE_SERIES + "{")))

    async def eligible(self) -> dict[tuple[str, str], bool]:
        """(pool, server) → eligible, from the admin API."""
        return parse_status(json.loads(await http_get(self.ports.admin, "/status")))


@asynccontextmanager
async def backend(workdir: Path) -> AsyncIterator[list[dict[str, int]]]:
    """The backend process; yields its servers' ports."""
    argv = [python(), "-m", "perf.hostile.backend", str(workdir)]
    async with child(argv, stdin=True, log=workdir / "backend.log", name="backend") as proc:
        yield json.loads(await proc.readline(timeout=20))["servers"]


def _command(nofile: int | None) -> list[str]:
    if nofile is None:
        return list(CASLB_COMMAND)
    # the limit is set inside the child, so only the balancer is squeezed
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, "
            f"({nofile}, {nofile})); from lb.cli import main; main()")
    return [python(), "-c", code]


@asynccontextmanager
async def balancer(
    workdir: Path, servers: Sequence[dict[str, int]], *, nofile: int | None = None,
    name: str = "caslb",
) -> AsyncIterator[Balancer]:
    """`caslb run` of the rig, once every server is eligible in every pool.

    Args:
        workdir: where the config and log go (the backend's certificates are there).
        servers: the backend's ports.
        nofile: an RLIMIT_NOFILE for the balancer process.
        name: the file name stem of its config and log.
    """
    ports = Ports.pick()
    config, log = workdir / f"{name}.toml", workdir / f"{name}.log"
    config.write_text(render_config(ports, servers, workdir))
    argv = [*_command(nofile), "run", "--no-access-log", str(config)]
    async with child(argv, log=log, name=name) as proc:
        running = Balancer(proc, ports, config, log, workdir / "ca.pem")
        await _wait_eligible(running, len(servers))
        yield running


async def _wait_eligible(running: Balancer, count: int, timeout: float = 20.0) -> None:
    with trio.move_on_after(timeout):
        while True:
            running.proc.check_alive()
            try:
                states = await running.eligible()
                if len(states) == 2 * count and all(states.values()):
                    return
            except (OSError, ValueError, trio.TooSlowError):
                pass  # not listening yet
            await trio.sleep(0.1)
    raise RuntimeError(f"caslb: servers not all eligible within {timeout:g} s")
