"""What the app knows of a running frontend of either wing; lb/build.py makes them.

The app serves, drains and counts frontends through this alone, so it never
asks which wing (lb/l4, lb/l7) a frontend belongs to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from lb.dial import Dial
from lb.l7.frontend import HttpFrontend
from lb.pool import Member

Report = Callable[[str, str, bool, str], None]
Connector = Callable[[Member, float, Dial], Awaitable[trio.abc.Stream]]


class Frontend(Protocol):
    """What the app runs: accept on listeners until cancelled."""

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None: ...


def open_connections(frontend: Frontend, *, parked_accepts: int = 0) -> int:
    """Client connections a frontend is serving now.

    Args:
        parked_accepts: accept calls waiting on listeners that no longer accept
            (`lb.gates.GateListener.parked`): an L7 accept loop takes its
            connection slot before it calls accept, so each holds one.
    """
    if isinstance(frontend, HttpFrontend):
        return int(frontend.limiter.borrowed_tokens) - parked_accepts
    return int(getattr(frontend, "active", 0))
