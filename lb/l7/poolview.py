"""The pool as the L7 proxy sees it: members, leases, picks (lb.pool.Pool satisfies it).

Protocols only, so that lb/l7 depends on no concrete pool and tests may pass their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Protocol

import trio

from lb.balancer import Candidate


class Member(Protocol):
    """A server as a pool shows it (lb.pool.Member satisfies this)."""

    @property
    def name(self) -> str:
        """Server name."""

    @property
    def host(self) -> str:
        """Address to connect to."""

    @property
    def port(self) -> int:
        """Port to connect to."""

    @property
    def fqdn(self) -> str:
        """FQDN: SNI and certificate name when re-encrypting."""

    @property
    def eligible(self) -> bool:
        """Whether new traffic may go to it."""

    @property
    def serving(self) -> bool:
        """Whether it may go on carrying what it has (UP; READY or draining)."""

    @property
    def active(self) -> int:
        """Connections open to it now."""


class Lease(Protocol):
    """A claim on a member for the life of one upstream connection."""

    @property
    def member(self) -> Member:
        """The leased member."""

    @property
    def scope(self) -> trio.CancelScope:
        """Cancelled by the pool to reset the connection."""

    @property
    def idle(self) -> bool:
        """Idle and not counted as load (`Pool.set_idle`)."""


class Pool(Protocol):
    """The part of lb.pool.Pool the proxy uses."""

    @property
    def name(self) -> str:
        """Pool name."""

    @property
    def members(self) -> Sequence[Member]:
        """Every member, eligible or not."""

    def pick(
        self, now: float, *, client: str | None = None, exclude: Collection[str] = ()
    ) -> Member | None:
        """An eligible member not named in `exclude`, or None."""

    def lease(self, member: Member) -> contextlib.AbstractContextManager[Lease]:
        """Hold `member` as active for the duration of the context."""

    @property
    def sticky(self) -> bool:
        """Whether the strategy hashes each client to a server (`source`)."""

    def candidate(self, member: Member, now: float) -> Candidate:
        """`member` as the strategy weighs it at `now` (slow start applied)."""

    def set_idle(self, lease: Lease, idle: bool = True) -> None:
        """Stop counting `lease` as load (its connection idles), or count it again."""
