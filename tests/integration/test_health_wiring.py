"""lb.health: live-traffic reports and probe transitions reach the pools; reloads keep state."""

from __future__ import annotations

import tomllib

import trio
import trio.testing
from prometheus_client import CollectorRegistry

from lb.config import Config, parse
from lb.health import HealthWiring
from lb.metrics import Metrics
from lb.pool import Pool
from lb.seams import ProbeKey
from probes.runner import ProbeRunner
from probes.state import CheckState

CONFIG = """
[frontends.web]
bind = "127.0.0.1:8443"
mode = "tcp"
pool = "watched"

[frontends.other]
bind = "127.0.0.1:8444"
mode = "tcp"
pool = "plain"

[pools.watched]
servers = [{{ name = "cas1", address = "127.0.0.11:443", fqdn = "cas1.lab.local" }}]
observe = {{ error_limit = 2, on_error = "mark-down" }}
check = {{ kind = "tcp", rise = {rise} }}

[pools.plain]
servers = [{{ name = "cas1", address = "127.0.0.11:443", fqdn = "cas1.lab.local" }}]
check = {{ kind = "tcp" }}
"""


def config(rise: int = 2) -> Config:
    return parse(tomllib.loads(CONFIG.format(rise=rise)))


def wiring_for(cfg: Config) -> tuple[HealthWiring, dict[str, Pool]]:
    pools = {name: Pool(pc) for name, pc in cfg.pools.items()}
    wiring = HealthWiring(ProbeRunner(), pools)
    wiring.sync(pools)
    return wiring, pools


async def test_live_errors_mark_a_server_down_only_where_the_pool_observes() -> None:
    wiring, pools = wiring_for(config())
    for _ in range(2):
        wiring.report("watched", "cas1", False, "refused")
        wiring.report("plain", "cas1", False, "refused")
    assert pools["watched"].member("cas1").check_state is CheckState.DOWN
    assert pools["plain"].member("cas1").check_state is CheckState.UP


async def test_a_success_between_errors_resets_the_count() -> None:
    wiring, pools = wiring_for(config())
    wiring.report("watched", "cas1", False, "refused")
    wiring.report("watched", "cas1", True, "answered")
    wiring.report("watched", "cas1", False, "refused")
    assert pools["watched"].member("cas1").check_state is CheckState.UP


async def test_a_probe_re_registered_by_a_reload_starts_where_the_member_is() -> None:
    wiring, pools = wiring_for(config())
    for _ in range(2):
        wiring.report("watched", "cas1", False, "refused")
    for name, pool_config in config(rise=3).pools.items():
        pools[name].reconfigure(pool_config, trio.current_time())
    wiring.sync(pools)  # the check changed (rise 3): a new probe
    key = ProbeKey("cas1", "watched")
    assert wiring.runner.health(key).state is CheckState.DOWN
    assert wiring.runner.health(ProbeKey("cas1", "plain")).state is CheckState.UP


async def test_a_check_removed_by_a_reload_brings_its_members_up() -> None:
    wiring, pools = wiring_for(config())
    for _ in range(2):
        wiring.report("watched", "cas1", False, "refused")
    unchecked = parse(tomllib.loads(CONFIG.format(rise=2).replace(
        'check = { kind = "tcp", rise = 2 }', "check = false")))
    pools["watched"].reconfigure(unchecked.pools["watched"], trio.current_time())
    wiring.sync(pools)
    assert ProbeKey("cas1", "watched") not in wiring.runner
    assert pools["watched"].member("cas1").check_state is CheckState.UP


async def test_check_results_are_kept_per_pool_and_read_live_by_the_metrics(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Nothing listens on 127.0.0.11:443, so every TCP check is refused at once.
    wiring, pools = wiring_for(config())
    registry = CollectorRegistry()
    metrics = Metrics(registry, pools=lambda: pools, last_check=wiring.last_result)
    seen: list[ProbeKey] = []
    wiring.subscribe(lambda key, result, transition: seen.append(key))
    wiring.subscribe(metrics.on_probe)
    assert wiring.last_result("watched", "cas1") is None
    async with trio.open_nursery() as nursery:
        await nursery.start(wiring.runner.run)
        for _ in range(100):
            if wiring.last_result("watched", "cas1") and wiring.last_result("plain", "cas1"):
                break
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    watched = wiring.last_result("watched", "cas1")
    assert watched is not None and not watched.ok
    assert set(seen) == {ProbeKey("cas1", "watched"), ProbeKey("cas1", "plain")}
    assert registry.get_sample_value(
        "caslb_server_check_status",
        {"pool": "watched", "server": "cas1", "state": watched.reason.name}) == 1
    assert (registry.get_sample_value(
        "caslb_server_check_results_total",
        {"server": "cas1", "protocol": "plain", "reason": watched.reason.name}) or 0) >= 1
    assert wiring.last_result("watched", "cas2") is None
    unchecked = parse(tomllib.loads(CONFIG.format(rise=2).replace(
        'check = { kind = "tcp", rise = 2 }', "check = false")))
    pools["watched"].reconfigure(unchecked.pools["watched"], trio.current_time())
    wiring.sync(pools)
    assert wiring.last_result("watched", "cas1") is None  # its probe is gone
    assert wiring.last_result("plain", "cas1") is not None
