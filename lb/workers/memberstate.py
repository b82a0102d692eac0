"""Member states ⇄ protocol messages: what a snapshot holds and how a worker applies one.

The supervisor's pools are the truth; a worker's pools copy their check and
admin states. A worker applies each change at its own clock, so resets and
drain deadlines act on its own connections as they would in one process, and
applies a snapshot member by member, touching only states that differ (a
periodic snapshot that agrees changes nothing, not even a drain deadline).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from lb.pool import Pool
from lb.workers.messages import (
    AdminChange,
    CheckChange,
    ControlMessage,
    EjectionChange,
    MemberState,
    Snapshot,
)

log = logging.getLogger("caslb.workers")


def snapshot(pools: Mapping[str, Pool], now: float | None = None) -> Snapshot:
    """Every member's check and admin state, and (given `now`) every ejection in force."""
    members = tuple(
        MemberState(pool.name, member.name, member.check_state, member.admin)
        for pool in pools.values() for member in pool.members
    )
    if now is None:
        return Snapshot(members)
    return Snapshot(members, tuple(
        EjectionChange(pool.name, server, round(until - now, 3))
        for pool in pools.values() for server, until in pool.ejections.ejections(now).items()
    ))


def ejection_change(pool: str, server: str, until: float | None, now: float) -> EjectionChange:
    """The line that tells workers of an ejection ending at `until` (None: lifted)."""
    return EjectionChange(pool, server, None if until is None else round(until - now, 3))


def apply_control(pools: Mapping[str, Pool], message: ControlMessage, now: float) -> None:
    """Apply a state change or snapshot to the worker's pools; unknown members are ignored.

    The supervisor and a worker can briefly disagree on the config around a
    reload; the snapshot that follows the worker's reload settles it.
    """
    if isinstance(message, Snapshot):
        for member in message.members:
            _apply_member(pools, member, now)
        _apply_ejections(pools, message.ejections, now)
        return
    pool = pools.get(message.pool)
    if pool is None:
        return
    if isinstance(message, EjectionChange):
        seconds = message.seconds
        pool.ejections.apply(message.server, None if seconds is None else now + seconds)
        return
    try:
        if isinstance(message, CheckChange):
            pool.set_check_state(message.server, message.state, now)
        else:
            pool.set_admin(message.server, message.state, now)
    except KeyError:
        log.debug("state for a server not in pool %s: %s", message.pool, message.server)


def _apply_member(pools: Mapping[str, Pool], state: MemberState, now: float) -> None:
    pool = pools.get(state.pool)
    if pool is None:
        return
    try:
        member = pool.member(state.server)
    except KeyError:
        return
    if member.check_state is not state.check:
        apply_control(pools, CheckChange(state.pool, state.server, state.check), now)
    if member.admin is not state.admin:
        apply_control(pools, AdminChange(state.pool, state.server, state.admin), now)


def _apply_ejections(
    pools: Mapping[str, Pool], ejections: tuple[EjectionChange, ...], now: float
) -> None:
    """Make the worker's ejections exactly the snapshot's (a lost `eject` line heals)."""
    wanted = {(e.pool, e.server): e.seconds for e in ejections}
    for pool in pools.values():
        for server in pool.ejections.ejected(now):
            if (pool.name, server) not in wanted:
                pool.ejections.apply(server, None)
    for (name, server), seconds in wanted.items():
        owner = pools.get(name)
        if owner is not None and seconds is not None:
            owner.ejections.apply(server, now + seconds)
