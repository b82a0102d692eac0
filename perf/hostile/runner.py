"""Each attack beside the well-behaved clients, judged from outside.

One rig (backend and `caslb run`) serves every attack but fd exhaustion, which
gets a balancer of its own started under a low RLIMIT_NOFILE. An attack passes
when every well-behaved channel got every answer it asked for, the balancer is
still running, it logged nothing at ERROR and no traceback, and (after fd
exhaustion) a new client is served again once the attacker lets go.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from perf.failover.procs import LineProcess, child, python
from perf.hostile.attacks import ATTACKS, Scale
from perf.hostile.good import KeepAlive
from perf.hostile.rig import Balancer, backend, balancer

WARMUP = 1.0
COOLDOWN = 1.0
RECOVERY_LIMIT = 10.0


@dataclass
class Row:
    """One attack's outcome."""

    attack: str
    did: str
    channels: dict[str, dict[str, Any]]
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every channel served throughout, no failed boundary, nothing else wrong."""
        served = all(c["failed"] == 0 and c["ok"] > 0 for c in self.channels.values())
        return served and not self.problems


class GoodClients:
    """The well-behaved clients' process, started before an attack and read after it."""

    def __init__(self, proc: LineProcess) -> None:
        self._proc = proc

    async def finish(self) -> dict[str, dict[str, Any]]:
        """Stop the channels; their summaries."""
        assert self._proc.process.stdin is not None
        await self._proc.process.stdin.aclose()
        summary: dict[str, dict[str, Any]] = json.loads(await self._proc.readline(timeout=20))
        return summary


@asynccontextmanager
async def good_clients(rig: Balancer, pause: float = 0.02,
                       timeout: float = 5.0) -> AsyncIterator[GoodClients]:
    """The well-behaved clients' process, running against every frontend of `rig`."""
    p = rig.ports
    spec = {"plain": p.plain, "tls": p.tls, "sni": p.sni, "admin": p.admin,
            "ca": str(rig.ca), "pause": pause, "timeout": timeout}
    argv = [python(), "-m", "perf.hostile.good", json.dumps(spec)]
    async with child(argv, stdin=True, log=rig.log.with_suffix(".good.log"),
                     name="good clients") as proc:
        await proc.readline(timeout=20)
        yield GoodClients(proc)


async def served_again(rig: Balancer) -> str | None:
    """None once a new client is answered on the plain frontend; else why not."""
    why = "never tried"
    with trio.move_on_after(RECOVERY_LIMIT):
        while True:
            client = KeepAlive(lambda: trio.open_tcp_stream("127.0.0.1", rig.ports.plain))
            try:
                with trio.fail_after(2):
                    await client.get("/owa/again")
                return None
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, ValueError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            finally:
                await client.close()
            await trio.sleep(0.2)
    return f"no new client served {RECOVERY_LIMIT:g} s after the attack: {why}"


async def attack_once(name: str, rig: Balancer, scale: Scale) -> Row:
    """Run one attack beside the good clients; its row."""
    before = len(rig.problems())
    peak = rig.fds()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rig.fds())
            await trio.sleep(0.25)

    async with good_clients(rig) as good, trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        await trio.sleep(WARMUP)
        did = await ATTACKS[name](rig.ports, scale)
        await trio.sleep(COOLDOWN)
        channels = await good.finish()
        nursery.cancel_scope.cancel()
    did += f"; caslb fds at peak {peak}"
    problems = rig.problems()[before:]
    if rig.proc.process.poll() is not None:
        problems.append(f"caslb exited with {rig.proc.process.returncode}")
    elif (stuck := await served_again(rig)) is not None:
        problems.append(stuck)
    return Row(name, did, channels, problems)


Report = Callable[[Row], Awaitable[None]]


async def run_attacks(names: list[str], scale: Scale, workdir: Path, report: Report) -> list[Row]:
    """Every named attack in turn, each row reported as it is known."""
    rows = []
    async with backend(workdir) as servers:
        shared = [n for n in names if n != "fd-exhaustion"]
        if shared:
            async with balancer(workdir, servers) as rig:
                for name in shared:
                    rows.append(await attack_once(name, rig, scale))
                    await report(rows[-1])
        if "fd-exhaustion" in names:
            async with balancer(workdir, servers, nofile=scale.fd_limit, name="caslb-fd") as rig:
                rows.append(await attack_once("fd-exhaustion", rig, scale))
                await report(rows[-1])
    return rows
