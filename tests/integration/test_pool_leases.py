"""Leases under trio's virtual clock: resets on DOWN, drain deadlines, maintenance."""

from __future__ import annotations

import math

import pytest
import trio

from lb.config.model import PoolConfig, ServerConfig
from lb.pool import Held, Lease, Pool
from probes.state import AdminState, CheckState

SERVERS = tuple(ServerConfig(f"cas{i}", f"127.0.0.{10 + i}", 443, f"cas{i}") for i in (1, 2, 3))


async def _hold(pool: Pool, server: str, ended: dict[str, float], key: str,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """A long-lived connection: runs until its lease scope is cancelled (or 1000 s)."""
    with pool.lease(pool.member(server)) as lease, lease.scope:
        task_status.started()
        await trio.sleep(1000)
    ended[key] = trio.current_time()


async def test_lease_counts_and_releases_even_on_error() -> None:
    pool = Pool(PoolConfig("owa", SERVERS))
    member = pool.member("cas1")
    with pytest.raises(RuntimeError), pool.lease(member):
        assert (member.active, member.total) == (1, 1)
        raise RuntimeError("upstream broke")
    assert (member.active, member.total) == (0, 1)


async def test_down_with_reset_cancels_leases_at_once(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(PoolConfig("ews", SERVERS, reset_on_down=True))
    ended: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(_hold, pool, "cas1", ended, "a")
        await nursery.start(_hold, pool, "cas2", ended, "b")
        await trio.sleep(5)
        pool.set_check_state("cas1", CheckState.DOWN, trio.current_time())
        await trio.sleep(1)
        assert ended == {"a": 5.0}
        assert pool.member("cas1").active == 0 and pool.member("cas2").active == 1
        nursery.cancel_scope.cancel()


async def test_down_without_reset_leaves_connections(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(PoolConfig("ecp", SERVERS, reset_on_down=False))
    ended: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(_hold, pool, "cas1", ended, "a")
        pool.set_check_state("cas1", CheckState.DOWN, trio.current_time())
    assert ended == {"a": 1000.0}


async def test_no_reset_while_the_pool_panics(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(PoolConfig("ews", SERVERS, reset_on_down=True, panic_threshold=0.9))
    ended: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(_hold, pool, "cas1", ended, "a")
        pool.set_check_state("cas1", CheckState.DOWN, trio.current_time())
        assert pool.panicking
    assert ended == {"a": 1000.0}


async def test_drain_gives_a_bounded_grace(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(PoolConfig("eas", SERVERS, drain_grace=30.0))
    ended: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(_hold, pool, "cas1", ended, "old")
        await trio.sleep(10)
        pool.set_admin("cas1", AdminState.DRAIN, trio.current_time())
        assert pool.pick(trio.current_time(), exclude={"cas2", "cas3"}) is None
        await trio.sleep(5)
        # One opened during the drain (an L7 upstream already chosen) shares its deadline.
        await nursery.start(_hold, pool, "cas1", ended, "late")
        # Draining again does not extend the grace.
        pool.set_admin("cas1", AdminState.DRAIN, trio.current_time())
    assert ended == {"old": 40.0, "late": 40.0}


async def test_ready_again_lifts_the_drain_deadline(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(PoolConfig("eas", SERVERS, drain_grace=30.0))
    ended: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(_hold, pool, "cas1", ended, "a")
        pool.set_admin("cas1", AdminState.DRAIN, trio.current_time())
        await trio.sleep(10)
        pool.set_admin("cas1", AdminState.READY, trio.current_time())
    assert ended == {"a": 1000.0}


async def test_maintenance_cancels_at_once_and_refuses_new_leases(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = Pool(PoolConfig("owa", SERVERS, drain_grace=30.0))
    ended: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(_hold, pool, "cas2", ended, "a")
        await trio.sleep(3)
        pool.set_admin("cas2", AdminState.MAINT, trio.current_time())
        await trio.sleep(1)
        assert ended == {"a": 3.0}
        with pool.lease(pool.member("cas2")) as lease:
            assert lease.scope.cancel_called


async def test_reload_gives_removed_servers_their_grace(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(PoolConfig("owa", SERVERS, drain_grace=20.0))
    ended: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(_hold, pool, "cas3", ended, "a")
        await trio.sleep(2)
        pool.reconfigure(PoolConfig("owa", SERVERS[:2], drain_grace=20.0), trio.current_time())
        assert pool.member("cas1").eligible
    assert ended == {"a": 22.0}
    assert pool.member("cas1").up_since is None  # kept servers do not ramp again


class _Watcher:
    """Stands for a parked L4 relay: holds the lease outside its scope."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.seen: list[tuple[bool, float]] = []  # (cancelled, deadline) at each call

    def lease_changed(self) -> None:
        self.seen.append((self.lease.scope.cancel_called, self.lease.scope.deadline))


def _kept(pool: Pool, server: str) -> tuple[Held, _Watcher]:
    held = pool.lease(pool.member(server))
    with held as lease:
        held.keep()
    watcher = _Watcher(lease)
    lease.watcher = watcher
    return held, watcher


async def test_a_kept_lease_is_counted_until_released(autojump_clock: trio.abc.Clock) -> None:
    pool = Pool(PoolConfig("imap", SERVERS))
    held, _ = _kept(pool, "cas1")
    assert pool.member("cas1").active == 1  # past its `with` block
    idle = trio.Event()

    async def wait_idle() -> None:
        await pool.idle()
        idle.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_idle)
        await trio.sleep(1)
        assert not idle.is_set()  # a graceful stop still waits for the kept connection
        held.release()
        await trio.sleep(0)
    assert idle.is_set() and pool.member("cas1").active == 0


async def test_the_pool_tells_a_lease_watcher_of_resets_and_drains(
    autojump_clock: trio.abc.Clock,
) -> None:
    pool = Pool(PoolConfig("imap", SERVERS, reset_on_down=True, drain_grace=30.0))
    _, drained = _kept(pool, "cas1")
    _, downed = _kept(pool, "cas2")
    _, removed = _kept(pool, "cas3")
    pool.set_admin("cas1", AdminState.DRAIN, 10.0)
    pool.set_admin("cas1", AdminState.READY, 12.0)
    assert drained.seen == [(False, 40.0), (False, math.inf)]
    pool.set_check_state("cas2", CheckState.DOWN, 10.0)
    assert downed.seen == [(True, math.inf)]
    pool.set_admin("cas1", AdminState.MAINT, 13.0)
    assert drained.seen[2:] == [(True, math.inf), (True, 13.0)]
    pool.reconfigure(PoolConfig("imap", SERVERS[:2], drain_grace=30.0), 20.0)
    assert removed.seen == [(False, 50.0)]
