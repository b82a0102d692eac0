"""The gate every frontend accepts through: shut, it stops accepting and leaves the socket be.

The app (lb/app.py) owns the listening sockets: a graceful stop shuts every
gate and closes its socket; a reload shuts the old frontend's gates and hands
the very same sockets to its successor.
"""

from __future__ import annotations

from typing import Any

import trio

from lb.listeners import accept_queued


class GateListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose `shut()` stops its accepts; the socket stays open if asked.

    Args:
        inner: the listener that really accepts.
    """

    def __init__(self, inner: trio.abc.Listener[Any]) -> None:
        self.inner = inner
        self.parked = 0
        self._shut = False
        self._waiting: set[trio.CancelScope] = set()

    async def accept(self) -> trio.abc.Stream:
        if not self._shut:
            with trio.CancelScope() as scope:
                self._waiting.add(scope)
                try:
                    stream: trio.abc.Stream = await self.inner.accept()
                    return stream
                finally:
                    self._waiting.discard(scope)
        # Callers parked here keep what they took before calling accept (an L7
        # frontend's connection slot): `parked` lets the app discount it.
        self.parked += 1
        try:
            await trio.sleep_forever()
        finally:
            self.parked -= 1
        raise AssertionError("unreachable")

    def accept_queued(self) -> trio.abc.Stream | None:
        """A connection already in the backlog, unless shut (see lb.listeners)."""
        return None if self._shut else accept_queued(self.inner)

    async def shut(self, *, close: bool) -> None:
        """Stop accepting; with `close`, also close the listening socket."""
        self._shut = True
        for scope in self._waiting:
            scope.cancel()
        if close:
            await trio.aclose_forcefully(self.inner)

    async def aclose(self) -> None:
        # The app owns the sockets: a frontend ending must not close them under
        # a successor that took them over on reload.
        await self.shut(close=False)


def bound_address(listener: trio.abc.Listener[Any]) -> tuple[str, int] | None:
    """The (host, port) a TCP listener is bound to, None for other listeners."""
    inner = listener.inner if isinstance(listener, GateListener) else listener
    if not isinstance(inner, trio.SocketListener):
        return None
    sockname = inner.socket.getsockname()
    return str(sockname[0]), int(sockname[1])
