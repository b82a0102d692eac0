"""The runtime server table of one pool: who may be picked, who carries what, resets and drains.

Theory of operation
-------------------
A `Pool` holds one `Member` per configured server. Probes and operators change
a member's check state (UP/DOWN) and admin state (READY/DRAIN/MAINT); frontends
ask `pick()` for a member and hold a `Lease` on it for the life of a connection
(L4) or of a client connection's upstream (L7).

Who is a candidate:

- normally, members whose check is UP and whose admin state is READY;
- in panic (opt-in: `panic_threshold` > 0 and the UP share of the pool below
  it, Envoy's rule), every READY member whatever its check says: when an AD or
  DNS fault fails every healthcheck.htm at once, routing to all beats refusing
  all (docs/exchange.md §6, fault 15). Drained and maintenance members stay out even
  then: an operator took them out on purpose;
- otherwise nobody: `pick()` returns None and the caller refuses fast and
  counts it (fail closed, the default).

The strategy (lb/balancer.py) then chooses among candidates, given each one's
slow-start ramp: a member that came back UP, was re-enabled, or was added by a
reload ramps from a tenth of its weight to all of it over `slowstart`.

Leases carry a `trio.CancelScope` the caller runs its I/O in. The pool acts on
them when a member leaves service:

- check DOWN with `reset_on_down`: every lease's scope is cancelled at once, so
  clients of a dead server reconnect elsewhere (Kemp's "drop connections on RS
  failure"); skipped while the pool panics, as every server is suspect then;
- DRAIN: each lease gets `deadline = now + drain_grace`; MAINT: cancelled now;
- READY again: deadlines are lifted.

A connection may also be held without a task inside the scope (a parked L4
relay, lb/l4/parking.py): its holder sets `Lease.watcher`, and the pool tells
the watcher after every change it makes to the scope, so the reset and the
drain deadline reach it as they reach a task.

A lease opened on a member that is already draining gets the same deadline.

The pool also owns its outlier ejections (`ejections`, lb/ejection.py): every
L7 frontend routing here shares them, and a check that goes UP after a DOWN
lifts the server's ejection.
`idle()` returns once no lease is held, so a graceful stop waits on an event.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from lb.balancer import Balance, Candidate, in_panic, make_strategy, slowstart_ramp
from lb.config import PoolConfig, ServerConfig
from lb.ejection import PoolEjections
from lb.zerocount import ZeroCount
from probes.state import AdminState, CheckState


class Member:
    """One server in one pool, at runtime.

    Attributes:
        name, host, port, fqdn, weight: from its ServerConfig.
        check_state: what this pool's health check says.
        admin: what an operator says.
        up_since: when it last entered service (slow start), None if in
            service since the pool was built.
        last_change: when its check or admin state last changed (or a reload
            added it), None if unchanged since the pool was built.
        active: connections (L4) or upstream connections (L7) it carries now.
        total: connections it has carried in all.
    """

    host: str
    port: int
    fqdn: str
    weight: int

    def __init__(self, server: ServerConfig) -> None:
        self.name = server.name
        self.check_state = CheckState.UP
        self.admin = AdminState.READY
        self.up_since: float | None = None
        self.last_change: float | None = None
        self.active = 0
        self.total = 0
        self.configure(server)

    def configure(self, server: ServerConfig) -> None:
        """Take the address, name and weight of a (reloaded) server config."""
        self.host = server.host
        self.port = server.port
        self.fqdn = server.fqdn
        self.weight = server.weight

    @property
    def eligible(self) -> bool:
        """True when it may take new traffic: check UP and admin READY."""
        return self.check_state is CheckState.UP and self.admin is AdminState.READY

    @property
    def serving(self) -> bool:
        """True while it may go on carrying what it has: check UP, READY or draining."""
        return self.check_state is CheckState.UP and self.admin is not AdminState.MAINT

    def __repr__(self) -> str:
        return (f"<Member {self.name} {self.host}:{self.port} {self.check_state.value}/"
                f"{self.admin.value} active={self.active} total={self.total}>")


class LeaseWatcher(Protocol):
    """Whoever holds a connection outside its lease's scope (see the module docstring)."""

    def lease_changed(self) -> None:
        """The pool just cancelled the lease's scope or moved its deadline."""


@dataclass(eq=False, slots=True)
class Lease:
    """One connection on a member; run its I/O inside `with lease.scope:`.

    Attributes:
        member: the member it is on.
        scope: cancelled by the pool to reset the connection, or given a
            deadline to end a drain.
        watcher: told of every change the pool makes to `scope`, while set.
        idle: an L7 connection parked for other clients (lb/l7/sharing.py): not load, and
            cancelled as soon as its member leaves service (DOWN, DRAIN, MAINT, removed).
    """

    member: Member
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    watcher: LeaseWatcher | None = None
    idle: bool = False

    def cancel(self) -> None:
        """Reset the connection now (DOWN with reset, MAINT)."""
        self.scope.cancel()
        if self.watcher is not None:
            self.watcher.lease_changed()

    def end_by(self, deadline: float) -> None:
        """End the connection at `deadline` (a drain's grace), or never (inf)."""
        self.scope.deadline = deadline
        if self.watcher is not None:
            self.watcher.lease_changed()


class Held:
    """One lease while its `with` block runs; a class, not a generator: one per connection.

    A holder that keeps the connection past the block (lb/l4/parking.py) calls
    `keep` inside it and `release` once the connection ends.
    """

    __slots__ = ("_leases", "_pool", "kept", "lease")

    def __init__(self, pool: Pool, leases: set[Lease], member: Member) -> None:
        self._pool, self._leases = pool, leases
        # Its deadline given to the constructor: trio's deadline setter costs a context manager.
        self.lease = Lease(member, trio.CancelScope(deadline=pool._deadline[member.name]))
        self.kept = False

    def __enter__(self) -> Lease:
        lease, member = self.lease, self.lease.member
        if member.admin is AdminState.MAINT:
            lease.scope.cancel()
        member.active += 1
        member.total += 1
        self._leases.add(lease)
        self._pool._held.up()
        return lease

    def __exit__(self, *exc: object) -> None:
        if not self.kept:
            self.release()

    def keep(self) -> None:
        """Leave the lease held when the `with` block ends; `release` ends it."""
        self.kept = True

    def release(self) -> None:
        """The connection ended: the member and the pool stop counting it."""
        if not self.lease.idle:  # an idle lease was uncounted when it became idle
            self.lease.member.active -= 1
            self._pool._held.down()
        self._leases.discard(self.lease)


class Pool:
    """The runtime table of one pool (see the module docstring).

    Args:
        config: the pool's configuration.
        rng: random source for the `random2` strategy; inject a seeded one in tests.
    """

    def __init__(self, config: PoolConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.name = config.name
        self._rng = rng
        self._strategy = make_strategy(config.balance, rng=rng)
        self.members: tuple[Member, ...] = tuple(Member(s) for s in config.servers)
        self._by_name = {m.name: m for m in self.members}
        self._leases: dict[str, set[Lease]] = {m.name: set() for m in self.members}
        # Absolute drain deadline per member; inf while READY.
        self._deadline: dict[str, float] = {m.name: math.inf for m in self.members}
        # Every lease, also those on members a reload removed since.
        self._held = ZeroCount()
        # Shared by every frontend routing here, so it outlives their rebuilds.
        self.ejections = PoolEjections(
            config.name, config.outlier, config.protocol, lambda: len(self.members)
        )

    def member(self, server: str) -> Member:
        """The member called `server`.

        Raises:
            KeyError: naming the server and the pool.
        """
        try:
            return self._by_name[server]
        except KeyError:
            raise KeyError(f"no server {server!r} in pool {self.name!r}") from None

    @property
    def panicking(self) -> bool:
        """True when too few members are UP and the pool routes to all READY ones."""
        healthy = sum(m.check_state is CheckState.UP for m in self.members)
        return in_panic(healthy, len(self.members), self.config.panic_threshold)

    def _servable(self) -> list[Member]:
        panic = self.panicking
        return [m for m in self.members
                if m.eligible or (panic and m.admin is AdminState.READY)]

    @property
    def sticky(self) -> bool:
        """True when the strategy hashes each client to a server (`source`)."""
        return self.config.balance is Balance.SOURCE

    @property
    def refuses_all(self) -> bool:
        """True when no member may take a new connection: every pick returns None."""
        return not self._servable()

    def candidate(self, member: Member, now: float) -> Candidate:
        """`member` as the strategy weighs it at `now`: its slow-start ramp applied."""
        ramp = slowstart_ramp(now, member.up_since, self.config.slowstart)
        return Candidate(member.name, member.weight, ramp, member.active)

    def _candidates(self, now: float, exclude: Collection[str]) -> list[Candidate]:
        return [self.candidate(m, now) for m in self._servable() if m.name not in exclude]

    def pick(
        self, now: float, *, client: str | None = None, exclude: Collection[str] = ()
    ) -> Member | None:
        """Choose a member for a new connection, or None when none may take it.

        Args:
            now: the current time (trio.current_time()), for slow start.
            client: the client's address, for `source` hashing.
            exclude: names of members already tried for this connection.
        """
        chosen = self._strategy.choose(self._candidates(now, exclude), client)
        return None if chosen is None else self.member(chosen.name)

    def lease(self, member: Member) -> Held:
        """Account one connection on `member` for as long as the `with` block runs.

        Raises:
            KeyError: `member` is not (or no longer) in this pool.
        """
        leases = self._leases.get(member.name)
        if leases is None or self.member(member.name) is not member:
            raise KeyError(f"member {member.name!r} is not in pool {self.name!r}")
        return Held(self, leases, member)

    def set_idle(self, lease: Lease, idle: bool = True) -> None:
        """Count a held lease as load again, or no longer (idle: it carries no client)."""
        if lease.idle is not idle:
            lease.idle = idle
            lease.member.active += -1 if idle else 1  # not `total`: connections opened
            (self._held.down if idle else self._held.up)()

    async def idle(self) -> None:
        """Return once no lease is held on this pool (at once if none is), idle ones aside."""
        await self._held.wait_zero()

    def set_check_state(self, server: str, state: CheckState, now: float) -> None:
        """Record a check transition (see the module docstring for resets).

        Raises:
            KeyError: unknown server.
        """
        member = self.member(server)
        old, member.check_state = member.check_state, state
        if old is state:
            return
        member.last_change = now
        if state is CheckState.UP:
            member.up_since = now
            # A crash or hang that ejected it is over once the check says so.
            self.ejections.lift(server, "its check is UP again")
        else:
            reset = self.config.reset_on_down and not self.panicking
            for lease in (held for held in self._leases[server] if reset or held.idle):
                lease.cancel()

    def set_admin(self, server: str, state: AdminState, now: float) -> None:
        """Drain, take into maintenance, or re-enable a member.

        Raises:
            KeyError: unknown server.
        """
        member = self.member(server)
        old, member.admin = member.admin, state
        if old is not state:
            member.last_change = now
        if state is AdminState.READY:
            deadline = math.inf
            if old is not AdminState.READY:
                member.up_since = now
        elif state is AdminState.DRAIN:
            # A second DRAIN keeps the first deadline: the grace is not extended.
            deadline = min(self._deadline[server], now + self.config.drain_grace)
        else:
            deadline = now
        self._deadline[server] = deadline
        for lease in self._leases[server]:
            if state is AdminState.MAINT or (lease.idle and state is AdminState.DRAIN):
                lease.cancel()
            lease.end_by(deadline)

    def reconfigure(self, config: PoolConfig, now: float) -> None:
        """Apply a reloaded config, keeping the state of servers it still lists.

        New servers start UP and READY with slow start from `now`; servers no
        longer listed leave at once for new picks, and their open leases get
        `drain_grace` to finish.
        """
        old = {m.name: m for m in self.members}
        members = []
        for server in config.servers:
            member = old.pop(server.name, None)
            if member is None:
                member = Member(server)
                member.up_since = member.last_change = now
                self._leases[server.name] = set()
                self._deadline[server.name] = math.inf
            member.configure(server)
            members.append(member)
        for gone in old.values():
            for lease in self._leases.pop(gone.name):
                if lease.idle:
                    lease.cancel()
                lease.end_by(min(lease.scope.deadline, now + config.drain_grace))
            del self._deadline[gone.name]
            self.ejections.forget(gone.name)
        self.ejections.configure(config.outlier, config.protocol)
        if config.balance is not self.config.balance:
            self._strategy = make_strategy(config.balance, rng=self._rng)
        self.config = config
        self.members = tuple(members)
        self._by_name = {m.name: m for m in members}

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The pool's state as plain JSON-able data (for /status).

        Args:
            now: when given, each member's current slow-start ramp is included.
        """
        members = []
        for m in self.members:
            row: dict[str, Any] = {
                "name": m.name, "host": m.host, "port": m.port, "fqdn": m.fqdn,
                "weight": m.weight, "check": m.check_state.value, "admin": m.admin.value,
                "eligible": m.eligible, "active": m.active, "total": m.total,
                "up_since": m.up_since,
            }
            if now is not None:
                row["ramp"] = self.candidate(m, now).ramp
            members.append(row)
        return {
            "name": self.name,
            "protocol": self.config.protocol,
            "balance": self.config.balance.value,
            "panicking": self.panicking,
            "eligible": sum(m.eligible for m in self.members),
            "members": members,
        }

    def __repr__(self) -> str:
        up = sum(m.eligible for m in self.members)
        return f"<Pool {self.name} {up}/{len(self.members)} eligible panicking={self.panicking}>"
