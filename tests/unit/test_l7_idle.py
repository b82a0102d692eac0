"""The rules of shared idle upstream connections (lb.l7.idle), idle leases (lb.pool), `reuse`.

Pure: times are numbers passed in, connections plain objects.
"""

from __future__ import annotations

import tomllib

import pytest
import trio

from lb import build
from lb.config import ConfigError, PoolConfig, ServerConfig, parse
from lb.l7.idle import IDLE_LIFE, MAX_IDLE_PER_SERVER, IdleSet, Reuse, may_park, may_take
from lb.pool import Pool
from probes.state import AdminState, CheckState


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def test_the_last_parked_is_taken_first_and_the_oldest_is_evicted() -> None:
    idle: IdleSet[Conn] = IdleSet(limit=2, life=60)
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    assert idle.park(a, 0) == []
    assert idle.park(b, 1) == []
    assert idle.park(c, 2) == [a]  # over the limit: the oldest goes
    assert idle.take(3) == (c, [])
    assert idle.take(3) == (b, [])
    assert idle.take(3) == (None, [])


def test_idle_life_ends_connections_at_take_and_expire() -> None:
    idle: IdleSet[Conn] = IdleSet(life=10)
    a, b = Conn("a"), Conn("b")
    idle.park(a, 0)
    idle.park(b, 5)
    assert idle.expires_at(5) == 15
    assert idle.expire(9.9) == []
    assert idle.take(10) == (b, [a])  # a's life is over at 10, b's is not
    idle.park(b, 20)
    assert idle.expire(30) == [b]
    assert len(idle) == 0


def test_remove_and_clear() -> None:
    idle: IdleSet[Conn] = IdleSet()
    a, b = Conn("a"), Conn("b")
    idle.park(a, 0)
    idle.park(b, 0)
    assert a in idle
    assert idle.remove(a)
    assert not idle.remove(a)
    assert a not in idle
    assert idle.clear() == [b]
    assert len(idle) == 0


def test_bounds_are_as_documented() -> None:
    assert MAX_IDLE_PER_SERVER == 64
    assert IDLE_LIFE == 60.0
    with pytest.raises(ValueError):
        IdleSet(limit=0)
    with pytest.raises(ValueError):
        IdleSet(life=0)


FINE = {"reuse": Reuse.SAFE, "client_bound": False, "private": False, "usable": True,
        "lease_valid": True, "eligible": True}


def test_a_clean_connection_is_parked() -> None:
    assert may_park(**FINE)  # type: ignore[arg-type]


@pytest.mark.parametrize("key, value", [
    ("reuse", Reuse.NEVER),
    ("client_bound", True),  # a PROXY header or transparent source names one client
    ("private", True),  # it carried NTLM or Negotiate: its client's for life
    ("usable", False),
    ("lease_valid", False),  # reset by the pool, or draining
    ("eligible", False),
    ("ejected", True),  # outlier detection has it out: no pick would take it
])
def test_what_keeps_a_connection_from_being_parked(key: str, value: object) -> None:
    assert not may_park(**{**FINE, key: value})  # type: ignore[arg-type]


def test_only_replayable_requests_take_a_shared_connection() -> None:
    assert may_take(reuse=Reuse.SAFE, client_bound=False, replayable=True)
    assert not may_take(reuse=Reuse.SAFE, client_bound=False, replayable=False)
    assert not may_take(reuse=Reuse.NEVER, client_bound=False, replayable=True)
    assert not may_take(reuse=Reuse.SAFE, client_bound=True, replayable=True)


def _pool(reset_on_down: bool = False) -> Pool:
    servers = (ServerConfig("cas1", "127.0.0.1", 1, "cas1.test"),
               ServerConfig("cas2", "127.0.0.1", 2, "cas2.test"))
    return Pool(PoolConfig("owa", servers, reset_on_down=reset_on_down))


async def test_an_idle_lease_is_not_load_and_counts_again_when_taken() -> None:
    pool = _pool()
    cas1 = pool.member("cas1")
    with pool.lease(cas1) as lease:
        assert cas1.active == 1
        pool.set_idle(lease)
        pool.set_idle(lease)  # twice is once
        assert cas1.active == 0
        with trio.move_on_after(0.01) as waited:
            await pool.idle()  # parked: the pool is idle
        assert not waited.cancelled_caught
        pool.set_idle(lease, False)
        assert cas1.active == 1
        assert cas1.total == 1  # a reuse is not a new connection
        pool.set_idle(lease)
    assert cas1.active == 0  # ended parked: not uncounted twice


@pytest.mark.parametrize("leave", ["down", "drain", "maint", "removed"])
async def test_a_server_leaving_service_resets_its_idle_leases_only(leave: str) -> None:
    pool = _pool()
    cas1 = pool.member("cas1")
    with pool.lease(cas1) as parked, pool.lease(cas1) as busy:
        pool.set_idle(parked)
        now = trio.current_time()
        if leave == "down":
            pool.set_check_state("cas1", CheckState.DOWN, now)
        elif leave == "removed":
            pool.reconfigure(PoolConfig("owa", (pool.config.servers[1],)), now)
        else:
            pool.set_admin("cas1", AdminState[leave.upper()], now)
        assert parked.scope.cancel_called
        # a busy one carries on as before: reset only on maint (or reset_on_down)
        assert busy.scope.cancel_called is (leave == "maint")


async def test_a_server_coming_back_ready_resets_nothing() -> None:
    pool = _pool()
    cas1 = pool.member("cas1")
    with pool.lease(cas1) as parked:
        pool.set_idle(parked)
        now = trio.current_time()
        pool.set_admin("cas1", AdminState.READY, now)
        pool.set_check_state("cas1", CheckState.UP, now)
        assert not parked.scope.cancel_called


_CONFIG = """
[frontends.web]
bind = "127.0.0.1:8443"
mode = "http"
default_pool = "owa"
[pools.owa]
servers = [{ name = "a", address = "127.0.0.1:1" }]
"""


def test_reuse_defaults_to_safe_and_reaches_the_upstream_settings() -> None:
    config = parse(tomllib.loads(_CONFIG))
    assert config.pools["owa"].reuse is Reuse.SAFE
    never = parse(tomllib.loads(_CONFIG + 'reuse = "never"\n'))
    assert never.pools["owa"].reuse is Reuse.NEVER
    assert build._upstream(never.pools["owa"]).reuse is Reuse.NEVER


def test_an_unknown_reuse_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(_CONFIG + 'reuse = "always"\n'))
    assert ("pools.owa.reuse", 'must be one of "safe", "never", got "always"') in info.value.errors
