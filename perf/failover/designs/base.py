"""What every design adapter provides.

A design is started against a running farm and handed back as a `Running`
object: the endpoints clients should use per protocol, and a way to ask whether
the balancer would still choose a given server for each protocol. Designs with
no balancer (DNS round robin) answer None: there is nothing to ask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from perf.failover.connect import Endpoint
from perf.failover.farm import FarmInfo
from perf.failover.procs import LineProcess
from perf.failover.settings import ProbeSettings

HTTP_LOAD = ("owa", "ews", "autodiscover", "mapi", "eas", "rpc")
MAIL_LISTENER = {"imap": "imaps", "pop": "pops", "smtp": "smtp"}


class Running(Protocol):
    """A started design."""

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """Protocol -> where its clients connect."""
        ...

    @property
    def notes(self) -> tuple[str, ...]:
        """Remarks on how this design was run here, for the report."""
        ...

    async def chosen(self, server: str) -> dict[str, bool] | None:
        """Protocol -> True while the balancer may pick `server`; None without one."""
        ...


Starter = Callable[[FarmInfo, ProbeSettings, Path], AbstractAsyncContextManager[Running]]


@dataclass(frozen=True)
class Design:
    """One design: its name, what it models, and how to start it.

    Attributes:
        name: short name used on the command line and in results.
        summary: one line for `python -m perf` and the report.
        start: async context manager factory (farm, probe settings, workdir).
        unavailable: returns why the design cannot run here, or None.
    """

    name: str
    summary: str
    start: Starter
    unavailable: Callable[[], str | None]


def always_available() -> str | None:
    """For designs that need nothing beyond the project itself."""
    return None


async def wait_all_chosen(
    running: Running, farm: FarmInfo, proc: LineProcess, timeout: float = 20.0
) -> None:
    """Wait until the balancer chooses every server for every protocol.

    Raises:
        RuntimeError: when the balancer exits (quoting its log) or the servers
            are not all chosen within `timeout` seconds.
    """
    with trio.move_on_after(timeout):
        while True:
            proc.check_alive()
            try:
                states = [await running.chosen(s) for s in farm.names]
                if all(st and all(st.values()) for st in states):
                    return
            except (OSError, ValueError, trio.TooSlowError):
                pass  # not listening yet
            await trio.sleep(0.1)
    raise RuntimeError(f"servers not all chosen within {timeout} s")
