"""What one L4 connection is: where a frontend may send it, and the state its attempts share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from lb.dial import Peer
from lb.l4.events import ConnectionRecord
from lb.l4.first_response import FirstFlight
from lb.l4.idle_timer import IdleTimer
from lb.l4.settings import UpstreamPolicy
from lb.pool import Pool


@dataclass(frozen=True)
class Route:
    """Where a frontend sends a connection: a pool and how to treat its servers.

    Attributes:
        pool: the pool to pick from.
        policy: how to treat its servers, or a function asked once per new
            connection (lb/build.py passes one that follows the pool's live
            config, so a reload that changes timeouts applies to new connections).
    """

    pool: Pool
    policy: UpstreamPolicy | Callable[[], UpstreamPolicy]

    def current_policy(self) -> UpstreamPolicy:
        """The policy for a new connection."""
        return self.policy() if callable(self.policy) else self.policy


@dataclass(frozen=True)
class Resolved:
    """A route with its policy fixed for one connection."""

    pool: Pool
    policy: UpstreamPolicy


class Connection:
    """Per-connection state the attempts share."""

    __slots__ = ("client", "committed", "flight", "flight_sent", "idle", "parked", "peer", "record",
                 "tried")

    def __init__(self, client: trio.abc.Stream, flight: FirstFlight, idle: IdleTimer,
                 frontend: str) -> None:
        self.client = client
        self.flight = flight
        self.idle = idle
        self.peer = Peer.of(client)
        self.record = ConnectionRecord(frontend, self.peer.client)
        self.tried: list[str] = []
        self.flight_sent = False
        self.committed = False  # set the moment an attempt commits, even mid-relay
        self.parked = False  # handed to the parker (lb/l4/parked.py), which ends it
