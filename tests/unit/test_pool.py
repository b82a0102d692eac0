"""The pool table on explicit `now` values: candidates, panic, slow start, reload."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.testing

from lb.balancer import MIN_RAMP, Balance
from lb.config.model import PoolConfig, ServerConfig
from lb.pool import Pool
from probes.state import AdminState, CheckState

DOWN, UP = CheckState.DOWN, CheckState.UP


def _config(n: int = 3, **settings: object) -> PoolConfig:
    servers = tuple(
        ServerConfig(f"cas{i}", f"127.0.0.{10 + i}", 443, f"cas{i}.lab.local")
        for i in range(1, n + 1)
    )
    return PoolConfig("owa", servers, **settings)  # type: ignore[arg-type]


def _names(pool: Pool, now: float, n: int, **kwargs: object) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        member = pool.pick(now, **kwargs)  # type: ignore[arg-type]
        counts["<none>" if member is None else member.name] += 1
    return counts


def test_round_robin_over_eligible_members_only() -> None:
    pool = Pool(_config())
    pool.set_check_state("cas2", DOWN, 1.0)
    pool.set_admin("cas3", AdminState.DRAIN, 1.0)
    assert _names(pool, 2.0, 6) == {"cas1": 6}
    assert [m.eligible for m in pool.members] == [True, False, False]


def test_exclude_skips_servers_already_tried() -> None:
    pool = Pool(_config())
    assert _names(pool, 0.0, 4, exclude={"cas1", "cas2"}) == {"cas3": 4}
    assert pool.pick(0.0, exclude={"cas1", "cas2", "cas3"}) is None


def test_fail_closed_when_no_member_is_up() -> None:
    pool = Pool(_config())
    for m in pool.members:
        pool.set_check_state(m.name, DOWN, 1.0)
    assert not pool.panicking
    assert pool.pick(2.0) is None


def test_panic_routes_to_every_ready_member() -> None:
    pool = Pool(_config(4, panic_threshold=0.5))
    pool.set_check_state("cas1", DOWN, 1.0)
    pool.set_check_state("cas2", DOWN, 1.0)
    # 2 of 4 UP is not below one half: only the healthy two
    assert not pool.panicking
    assert set(_names(pool, 2.0, 8)) == {"cas3", "cas4"}
    pool.set_check_state("cas3", DOWN, 3.0)
    assert pool.panicking
    pool.set_admin("cas4", AdminState.MAINT, 3.0)
    # 1 of 4 UP: panic; every READY member, DOWN or not, but never the one in maintenance
    assert _names(pool, 4.0, 9) == {"cas1": 3, "cas2": 3, "cas3": 3}
    assert pool.snapshot()["panicking"] is True


def test_slow_start_ramps_a_recovered_server() -> None:
    pool = Pool(_config(2, balance=Balance.WRR, slowstart=100.0))
    pool.set_check_state("cas2", DOWN, 0.0)
    pool.set_check_state("cas2", UP, 10.0)
    assert pool.member("cas2").up_since == 10.0
    # at recovery: a tenth of the weight
    ramp_start = _names(pool, 10.0, 1100)
    assert ramp_start["cas2"] == pytest.approx(1100 * MIN_RAMP / (1 + MIN_RAMP), abs=2)
    # half way through the window: half the weight
    assert _names(pool, 60.0, 300)["cas2"] == pytest.approx(100, abs=2)
    # after the window: an equal share
    assert _names(pool, 110.0, 300) == {"cas1": 150, "cas2": 150}
    assert pool.snapshot(now=60.0)["members"][1]["ramp"] == pytest.approx(0.5)


def test_least_conn_does_not_flood_a_recovered_server() -> None:
    pool = Pool(_config(2, balance=Balance.LEASTCONN, slowstart=60.0))
    pool.member("cas1").active = 40
    pool.set_check_state("cas2", DOWN, 0.0)
    pool.set_check_state("cas2", UP, 100.0)
    picked = pool.pick(100.0)
    assert picked is not None and picked.name == "cas2"  # (0+1)/0.1 = 10 < 41
    pool.member("cas2").active = 5
    # (5+1)/0.1 = 60 > 41: the fresh server waits while it ramps
    assert [pool.pick(100.0) for _ in range(3)] == [pool.member("cas1")] * 3


def test_readmitted_server_ramps_too() -> None:
    pool = Pool(_config(2, slowstart=30.0))
    pool.set_admin("cas1", AdminState.MAINT, 5.0)
    pool.set_admin("cas1", AdminState.READY, 50.0)
    assert pool.member("cas1").up_since == 50.0
    assert pool.snapshot(now=65.0)["members"][0]["ramp"] == pytest.approx(0.5)


def test_random2_with_an_injected_rng_is_reproducible() -> None:
    def sequence(pool: Pool) -> list[str]:
        return [m.name for m in (pool.pick(0.0) for _ in range(20)) if m is not None]

    first = Pool(_config(balance=Balance.RANDOM2), rng=random.Random(5))
    second = Pool(_config(balance=Balance.RANDOM2), rng=random.Random(5))
    assert sequence(first) == sequence(second)
    assert len(sequence(first)) == 20


def test_source_hash_keeps_clients_when_another_server_fails() -> None:
    pool = Pool(_config(4, balance=Balance.SOURCE))
    clients = [f"198.51.100.{i}" for i in range(200)]
    before = {c: pool.pick(0.0, client=c) for c in clients}
    pool.set_check_state("cas2", DOWN, 1.0)
    after = {c: pool.pick(1.0, client=c) for c in clients}
    moved = {c for c in clients if before[c] is not after[c]}
    assert moved == {c for c in clients if before[c] is pool.member("cas2")}


def test_unknown_server_is_a_key_error_naming_it() -> None:
    pool = Pool(_config())
    with pytest.raises(KeyError, match="no server 'cas9' in pool 'owa'"):
        pool.set_admin("cas9", AdminState.DRAIN, 0.0)


def test_snapshot_shape() -> None:
    pool = Pool(_config(1, protocol="owa"))
    with pool.lease(pool.members[0]):
        snap = pool.snapshot()
    assert snap == {
        "name": "owa", "protocol": "owa", "balance": "roundrobin", "panicking": False,
        "eligible": 1,
        "members": [{
            "name": "cas1", "host": "127.0.0.11", "port": 443, "fqdn": "cas1.lab.local",
            "weight": 1, "check": "UP", "admin": "READY", "eligible": True, "active": 1,
            "total": 1, "up_since": None,
        }],
    }


def test_reconfigure_keeps_state_and_ramps_new_servers() -> None:
    pool = Pool(_config(2, slowstart=10.0))
    pool.set_admin("cas1", AdminState.DRAIN, 1.0)
    pool.set_check_state("cas2", DOWN, 1.0)
    servers = (
        ServerConfig("cas2", "127.0.0.99", 8443, "cas2.lab.local", 3),
        ServerConfig("cas4", "127.0.0.14", 443, "cas4.lab.local"),
    )
    pool.reconfigure(PoolConfig("owa", servers, slowstart=10.0, balance=Balance.WRR), 20.0)
    assert [m.name for m in pool.members] == ["cas2", "cas4"]
    cas2, cas4 = pool.members
    assert (cas2.check_state, cas2.host, cas2.port, cas2.weight) == (DOWN, "127.0.0.99", 8443, 3)
    assert cas4.up_since == 20.0 and cas4.eligible
    assert pool.snapshot(now=25.0)["members"][1]["ramp"] == pytest.approx(0.5)
    assert pool.config.balance is Balance.WRR
    with pytest.raises(KeyError):
        pool.member("cas1")


async def test_idle_wakes_on_the_last_lease_ending_not_before() -> None:
    pool = Pool(_config(2))
    await pool.idle()  # no lease: at once
    woke: list[str] = []

    async def waiter() -> None:
        await pool.idle()
        woke.append("idle")

    async with trio.open_nursery() as nursery:
        with pool.lease(pool.member("cas1")), pool.lease(pool.member("cas2")):
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []
        # Both leases ended: the waiter wakes without any clock moving.
        await trio.testing.wait_all_tasks_blocked()
        assert woke == ["idle"]


async def test_a_lease_on_a_member_a_reload_removed_still_keeps_the_pool_busy() -> None:
    pool = Pool(_config(2))
    woke: list[str] = []

    async def waiter() -> None:
        await pool.idle()
        woke.append("idle")

    async with trio.open_nursery() as nursery:
        with pool.lease(pool.member("cas2")):
            pool.reconfigure(_config(1), 0.0)  # cas2 is gone from the table
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []
        await trio.testing.wait_all_tasks_blocked()
        assert woke == ["idle"]


def test_last_change_follows_real_transitions_only() -> None:
    pool = Pool(_config(2))
    cas1, cas2 = pool.members
    assert cas1.last_change is None  # unchanged since the pool was built
    pool.set_check_state("cas1", DOWN, 5.0)
    pool.set_check_state("cas1", DOWN, 6.0)  # no change: the time stays
    assert cas1.last_change == 5.0
    pool.set_admin("cas1", AdminState.DRAIN, 7.0)
    pool.set_admin("cas1", AdminState.DRAIN, 8.0)
    assert cas1.last_change == 7.0
    pool.reconfigure(_config(3), 9.0)
    assert [m.last_change for m in pool.members] == [7.0, None, 9.0]
    assert cas2.last_change is None


def test_refuses_all_matches_pick() -> None:
    pool = Pool(_config(2))
    pool.set_check_state("cas1", DOWN, 1.0)
    assert not pool.refuses_all and pool.pick(2.0) is not None
    pool.set_admin("cas2", AdminState.MAINT, 1.0)
    assert pool.refuses_all and pool.pick(2.0) is None


def test_candidate_weighs_the_slow_start_ramp() -> None:
    pool = Pool(_config(1, slowstart=10.0))
    pool.set_check_state("cas1", DOWN, 0.0)
    pool.set_check_state("cas1", CheckState.UP, 100.0)
    member = pool.member("cas1")
    assert pool.candidate(member, 105.0).effective_weight == pytest.approx(0.5)
    assert pool.candidate(member, 120.0).effective_weight == 1


def test_a_draining_member_still_serves_what_it_carries_a_down_or_maint_one_does_not() -> None:
    pool = Pool(_config())
    pool.set_admin("cas1", AdminState.DRAIN, 1.0)
    pool.set_admin("cas2", AdminState.MAINT, 1.0)
    pool.set_check_state("cas3", DOWN, 1.0)
    assert [(m.eligible, m.serving) for m in pool.members] == [
        (False, True), (False, False), (False, False)]


def test_only_a_source_pool_is_sticky() -> None:
    assert Pool(_config(balance=Balance.SOURCE)).sticky
    assert not any(Pool(_config(balance=b)).sticky for b in Balance if b is not Balance.SOURCE)
