"""A committed L4 connection held without a task while idle, and how it resumes or ends.

Theory of operation: the task that commits a connection (lb/l4/frontend.py)
runs it inside the idle timer's scope and the lease's; when its flows park
(lb/l4/parking.py) it hands the connection over as a `Relay` and returns. The
relay then owns everything the connection still holds: the two sockets and
their flows (the `Link`), the connection log record, the pool's lease (held
past its `with` block: `Held.keep`) and the frontend's connection slot. The
frontend's parker holds the relay, and calls exactly one of:

- `resume`, in a fresh task, when either fd turns readable or hangs up: the
  flows run again inside fresh scopes with the deadlines the old ones had (a
  trio scope is entered once), so the idle timeout, the pool's reset and the
  drain deadline reach the running relay as they reached the first task; flows
  that park again are handed back to the parker;
- `expire`, when its deadline passed while parked: the idle timeout (both ends
  closed) or the pool's reset or drain deadline (both ends reset);
- `shut`, when the parker stops: both ends closed.

The pool reaches a parked relay through `Lease.watcher`: the relay tells the
parker to look at its deadline again, and the parker ends it from its own
task. Each path ends in `_finish`, once: the sockets closed, the lease
released, and the frontend told (`Owner.relay_ended`), which logs the
connection and stops counting it.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import trio

from lb.boundary import log_internal_error
from lb.l4 import events as connlog
from lb.l4.closing import close_after, drop
from lb.l4.events import ConnectionRecord, L4Events
from lb.l4.idle_timer import IdleTimer
from lb.l4.parking import Parker, all_parked, parked_fds, run_again
from lb.l4.pump import PEER_ERRORS, Link, RelayResult
from lb.pool import Held

log = logging.getLogger("caslb.l4")


class Owner(Protocol):
    """The frontend a relay belongs to."""

    @property
    def events(self) -> L4Events:
        """Its counters."""

    def relay_ended(self, record: ConnectionRecord) -> None:
        """A connection handed over as a relay ended: log it and stop counting it."""


def account_relay(events: L4Events, record: ConnectionRecord, replayed: int,
                  result: RelayResult) -> None:
    """Count the bytes of a relay that ran to its end, and note them in its record."""
    assert record.pool is not None and record.server is not None
    record.bytes_read = result.downstream_bytes
    events.bytes_relayed(record.frontend, record.pool, record.server,
                         to_server=replayed + result.upstream_bytes,
                         to_client=result.downstream_bytes)


def note_pool_reset(record: ConnectionRecord) -> None:
    """The pool cancelled the connection's lease (DOWN with reset, MAINT) or its drain ended."""
    log.info("frontend %s: %s/%s: connection reset by the pool", record.frontend, record.pool,
             record.server)
    record.termination = connlog.RESET_BY_POOL


def note_idle_timeout(record: ConnectionRecord) -> None:
    """Both ends stayed silent for the idle timeout."""
    record.termination = connlog.IDLE_TIMEOUT
    log.debug("frontend %s: idle timeout", record.frontend)


class Relay:
    """A committed, idle connection without a task (see the module docstring).

    Args:
        link: its sockets and flows, the flows parked or done; `link.idle` is set.
        record: its connection log record.
        held: its lease, kept past the `with` block that took it.
        replayed: first-flight bytes sent to the server before its flows ran.
        parker: holds it while parked.
        owner: its frontend, told once when it ends.
    """

    __slots__ = ("held", "link", "owner", "parker", "record", "replayed")

    def __init__(self, link: Link, record: ConnectionRecord, held: Held, replayed: int,
                 parker: Parker, owner: Owner) -> None:
        assert link.idle is not None
        self.link, self.record, self.held, self.replayed = link, record, held, replayed
        self.parker = parker
        self.owner: Owner | None = owner  # None once ended

    def park(self) -> bool:
        """Hand the relay to the parker; False when the parker is not running."""
        if not self.parker.hold(self):
            return False
        self.held.lease.watcher = self
        return True

    def fds(self) -> tuple[int, ...]:
        return parked_fds(self.link)

    def due(self) -> float:
        lease = self.held.lease.scope
        if lease.cancel_called:
            return -math.inf
        return min(self._idle().scope.deadline, lease.deadline)

    def lease_changed(self) -> None:
        self.parker.retime(self)

    async def resume(self) -> None:
        link, record, lease = self.link, self.record, self.held.lease
        lease.watcher = None  # its scopes are entered again below: they see the pool
        idle = self._idle()
        idle.renew()
        old = lease.scope
        lease.scope = trio.CancelScope(deadline=old.deadline)
        if old.cancel_called:  # cancelled between the wake and this task's start
            lease.scope.cancel()
        parked = False
        try:
            with idle.scope:
                with lease.scope:
                    await run_again(link, self.parker)
                    if all_parked(link):
                        parked = self.park()  # else the parker stops: closed below
                        return
                    result = link.result()
                    if self.owner is not None:
                        account_relay(self.owner.events, record, self.replayed, result)
                    await close_after(result, link.client, link.server)
                    return
                note_pool_reset(record)
                self._reset()
            if idle.scope.cancelled_caught:
                note_idle_timeout(record)
        except PEER_ERRORS as exc:
            record.termination = connlog.CLIENT_ERROR
            log.debug("frontend %s: client error %r", record.frontend, exc)
        except Exception as exc:  # the failure boundary: this connection ends, nothing else
            record.termination = connlog.INTERNAL_ERROR
            log_internal_error(log, f"frontend {record.frontend}: a resumed connection", exc)
            if self.owner is not None:
                self.owner.events.internal_error("l4")
        finally:
            if not parked:
                self._finish()

    def expire(self, now: float) -> None:
        try:
            lease = self.held.lease.scope
            if lease.cancel_called or lease.deadline <= now:
                note_pool_reset(self.record)
                self._reset()
            else:
                note_idle_timeout(self.record)
        finally:
            self._finish()

    def shut(self) -> None:
        self._finish()

    def _idle(self) -> IdleTimer:
        idle = self.link.idle
        assert idle is not None
        return idle

    def _reset(self) -> None:
        # Both ends learn the connection failed: their clients reconnect elsewhere.
        assert isinstance(self.link.client, trio.SocketStream)
        assert isinstance(self.link.server, trio.SocketStream)
        drop(self.link.server, abort=True)
        drop(self.link.client, abort=True)

    def _finish(self) -> None:
        owner, self.owner = self.owner, None
        if owner is None:
            return  # ended already: a failure inside an end path came back here
        self.held.lease.watcher = None
        try:
            for stream in (self.link.server, self.link.client):
                assert isinstance(stream, trio.SocketStream)  # only splice relays park
                drop(stream)
            self.held.release()
        finally:
            owner.relay_ended(self.record)
