"""caslb's L7 frontend on 127.0.0.1:0 in front of one recording backend per pool.

Routes: `/owa` → owa, `/ews` → ews, `/mapi` → mapi, nothing for `/ecp`; with
`default_pool=True` everything else goes to the pool "fallback". Each pool has
one member, its own recording backend, so a test tells which pool got a
request from which backend recorded it. Plain HTTP on both sides: the
hostile input is in the HTTP layer, and TLS is tested elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from lb.l7.frontend import HttpFrontend
from lb.l7.idle import Reuse
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from tests.hostile.recording_backend import RecordingBackend, Responder, answer_fixed, settle
from tests.integration.test_l7_rig import FakeMember, FakePool

NAMESPACE = "mail.lab.local"
VDIRS = {"/owa": "owa", "/ews": "ews", "/mapi": "mapi"}
DEFAULT_POOL = "fallback"


@dataclass
class HostileFront:
    """A running frontend and its backends.

    Attributes:
        port: the frontend's port on 127.0.0.1.
        backends: pool name → its recording backend.
        frontend: the frontend itself.
    """

    port: int
    backends: dict[str, RecordingBackend]
    frontend: HttpFrontend

    async def settle(self) -> None:
        """Wait until the balancer has closed every upstream connection."""
        await settle(*self.backends.values())

    def violations(self) -> list[str]:
        return [f"{name}: {v}" for name, b in self.backends.items() for v in b.violations]


@asynccontextmanager
async def hostile_front(
    *,
    default_pool: bool = False,
    responders: Mapping[str, Responder] | None = None,
    response_timeout: float = 5.0,
) -> AsyncIterator[HostileFront]:
    """Start the frontend and its backends; stop them all on exit.

    Args:
        default_pool: route what no virtual directory matches to "fallback".
        responders: pool name → how its backend answers (default: a fixed 200).
        response_timeout: seconds the balancer waits for a backend's response head.
    """
    names = [*sorted(set(VDIRS.values())), *([DEFAULT_POOL] if default_pool else [])]
    async with trio.open_nursery() as nursery:
        backends = {
            name: await RecordingBackend(name, (responders or {}).get(name, answer_fixed)).start(
                nursery
            )
            for name in names
        }
        pools = {
            name: FakePool(
                name, [FakeMember(f"{name}1", "127.0.0.1", b.port, f"{name}1.lab.local")]
            )
            for name, b in backends.items()
        }
        routes = RouteTable(vdirs=VDIRS, default_pool=DEFAULT_POOL if default_pool else None)
        frontend = HttpFrontend(
            HttpFrontendSettings(name="hostile", routes=routes),
            pools,  # type: ignore[arg-type]
            # Each client's upstream connections its own (reuse = "never"): `settle`
            # reads a test's forwarded bytes as complete once every upstream connection
            # has ended, which a connection parked for other clients does only after
            # lb.l7.idle.IDLE_LIFE. Sharing is tested in tests/smoke/test_l7_idle_sharing.py.
            upstream=UpstreamSettings(connect_timeout=2, response_timeout=response_timeout,
                                      reuse=Reuse.NEVER),
        )
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(frontend.serve, listeners)
        yield HostileFront(listeners[0].socket.getsockname()[1], backends, frontend)
        nursery.cancel_scope.cancel()
