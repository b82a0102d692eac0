"""The simulated farm as the harness sees it: a process, its servers, its controls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perf.failover.procs import LineProcess, child, python

NAMESPACE = "mail.lab.local"


@dataclass(frozen=True)
class FarmServer:
    """One CAS server: name (cas1), FQDN, loopback host and ports by listener."""

    name: str
    fqdn: str
    host: str
    ports: dict[str, int]


@dataclass(frozen=True)
class FarmInfo:
    """What designs need to know to front the farm."""

    servers: tuple[FarmServer, ...]
    ca_path: Path
    namespace: str = NAMESPACE

    @property
    def names(self) -> tuple[str, ...]:
        """Server names in order."""
        return tuple(s.name for s in self.servers)


class Farm:
    """A running farm process and the commands the harness sends it."""

    def __init__(self, proc: LineProcess, info: FarmInfo) -> None:
        self.proc = proc
        self.info = info

    async def command(self, **command: Any) -> dict[str, Any]:
        """Send one command and return the reply.

        Raises:
            RuntimeError: with the farm's own error message.
        """
        await self.proc.send_line(json.dumps(command))
        reply: dict[str, Any] = json.loads(await self.proc.readline(10.0))
        if not reply.get("ok"):
            raise RuntimeError(f"farm refused {command!r}: {reply.get('error')}")
        return reply

    async def counts(self) -> dict[str, int]:
        """Real requests per server so far (health checks excluded)."""
        reply = await self.command(op="counts")
        return {str(k): int(v) for k, v in reply["counts"].items()}


def parse_ready(line: str) -> FarmInfo:
    """The farm description the farm process prints first.

    Raises:
        ValueError: naming the line when it is not a ready message.
    """
    try:
        ready = json.loads(line)["ready"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"farm process said {line[:200]!r}, not ready") from None
    servers = tuple(
        FarmServer(s["name"], s["fqdn"], s["host"], {k: int(v) for k, v in s["ports"].items()})
        for s in ready["servers"]
    )
    return FarmInfo(servers=servers, ca_path=Path(ready["ca_path"]))


@asynccontextmanager
async def running_farm(
    workdir: Path, *, servers: int = 3, heartbeat: float = 2.0, pending_period: float = 1.0,
    health_cache_delay: float = 0.0, auth_vdirs: tuple[str, ...] = (),
) -> AsyncIterator[Farm]:
    """Start a farm process in `workdir`; stop it on exit.

    `auth_vdirs` authenticate as Exchange does (NTLM, lab user alice); the
    others serve anonymously, as the anonymous clients of the mix expect.
    """
    argv = [
        python(),
        "-m",
        "perf.failover.farmproc",
        f"--servers={servers}",
        f"--heartbeat={heartbeat}",
        f"--pending-period={pending_period}",
        f"--health-cache-delay={health_cache_delay}",
        f"--cert-dir={workdir / 'farm-certs'}",
        f"--auth-vdirs={','.join(auth_vdirs)}",
    ]
    async with child(argv, stdin=True, log=workdir / "farm.log") as proc:
        info = parse_ready(await proc.readline(30.0))
        yield Farm(proc, info)
