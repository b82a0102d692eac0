"""A count that tasks can wait on to reach zero (an event, not a poll).

The app waits for connections to end twice: a graceful stop drains every
pool's leases. Each `Pool` counts its leases in one `ZeroCount`; a waiter
sleeps on a `trio.Event` that the last release sets, and a new one replaces it
when the count leaves zero, so no waiter ever sleeps on a stale event.
"""

from __future__ import annotations

import trio


class ZeroCount:
    """A non-negative count with `wait_zero`."""

    def __init__(self) -> None:
        self.value = 0
        self._zero = trio.Event()
        self._zero.set()

    def up(self) -> None:
        """One more."""
        if self.value == 0:
            self._zero = trio.Event()
        self.value += 1

    def down(self) -> None:
        """One fewer; at zero, every waiter wakes."""
        self.value -= 1
        if self.value == 0:
            self._zero.set()

    async def wait_zero(self) -> None:
        """Return once the count is zero (at once if it is)."""
        while self.value:
            await self._zero.wait()
