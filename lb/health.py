"""Wiring between the probe runner and the pools.

Each pool with a check gets one probe per member, keyed `ProbeKey(server, pool)`:
a pool's check runs once per server for that pool alone, so two pools with the
same check still probe apart. Check transitions move the member's check state
in that pool, and the last result of every probe is kept here, where the
metrics collector and the admin API read it (`last_result`); the admin API
also reads each probe's health counter from the runner (`check_progress`),
so "UP 1/2" on the status page is the probe's own state, never a copy; live-traffic
outcomes reported by the frontends go back into the same probe (HAProxy's
`observe layer4`) when the pool asks for it. A reload re-registers a probe only
when what it checks or how often changed, so health survives a SIGHUP.

`OwnProbes` is a runner and its wiring as the app sees them: the state source
and outcome sink (lb/seams.py) of a process that checks the servers itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from lb.config import PoolConfig
from lb.pool import Pool
from lb.seams import ProbeEvents, ProbeKey
from probes.checks import CheckResult, Target
from probes.passive import PassivePolicy
from probes.runner import ProbeRunner
from probes.state import CheckProgress, CheckState, Transition

log = logging.getLogger("caslb.health")


CheckSubscriber = Callable[[ProbeKey, CheckResult | None, Transition | None], None]
"""`(key, result, transition)`: told of every check result and transition, after the pool."""


@dataclass(frozen=True)
class _Registration:
    target: Target
    pool: PoolConfig


def _same_probe(a: _Registration, b: _Registration) -> bool:
    return (
        a.target == b.target
        and a.pool.check == b.pool.check
        and a.pool.observe == b.pool.observe
    )


def _forget_check(pool: Pool) -> None:
    """A pool without a check (any more) has every member UP, as HAProxy's `no check`."""
    for member in pool.members:
        if member.check_state is not CheckState.UP:
            pool.set_check_state(member.name, CheckState.UP, trio.current_time())


class HealthWiring:
    """Keeps a runner's probes in step with the pools, and their results flowing back.

    Args:
        runner: the probe runner (not yet running, or running).
        pools: the live pools by name; `sync` replaces them after a reload.
    """

    def __init__(self, runner: ProbeRunner[ProbeKey], pools: Mapping[str, Pool]) -> None:
        self.runner = runner
        self._pools = pools
        self._registered: dict[ProbeKey, _Registration] = {}
        # (pool, server) → key of every probe that observes live traffic: `report`
        # runs on every request and connection, so it looks up a plain tuple.
        self._observed: dict[tuple[str, str], ProbeKey] = {}
        self._last: dict[ProbeKey, CheckResult] = {}
        self._subscribers: list[CheckSubscriber] = []
        runner.subscribe(self._on_probe)

    def subscribe(self, callback: CheckSubscriber) -> None:
        """Call `callback(key, result, transition)` after every check result and transition."""
        self._subscribers.append(callback)

    def last_result(self, pool: str, server: str) -> CheckResult | None:
        """The last result of the check `pool` runs on `server`, or None before the first."""
        return self._last.get(ProbeKey(server, pool))

    def check_progress(self, pool: str, server: str) -> CheckProgress | None:
        """The health counter of the check `pool` runs on `server`, None without one."""
        key = ProbeKey(server, pool)
        return self.runner.health(key).progress if key in self.runner else None

    def sync(self, pools: Mapping[str, Pool]) -> None:
        """Register, replace or remove probes to match these pools."""
        self._pools = pools
        wanted: dict[ProbeKey, _Registration] = {}
        for pool in pools.values():
            if pool.config.check is None:
                _forget_check(pool)
                continue
            for server in pool.config.servers:
                wanted[ProbeKey(server.name, pool.name)] = _Registration(
                    pool.config.check_target(server), pool.config
                )
        for key in list(self._registered):
            if key not in wanted or not _same_probe(self._registered[key], wanted[key]):
                self.runner.remove(key)
                del self._registered[key]
                self._observed.pop((key.pool, key.server), None)
            if key not in wanted:
                self._last.pop(key, None)
        for key, registration in wanted.items():
            if key not in self._registered:
                self._add(key, registration)

    def _add(self, key: ProbeKey, registration: _Registration) -> None:
        pool = registration.pool
        assert pool.check is not None
        observe = pool.observe
        passive = None if observe is None else PassivePolicy(observe.error_limit, observe.on_error)
        self.runner.add(key, pool.check.spec, registration.target, pool.check.timing,
                        passive=passive, initial=self._current_state(key))
        self._registered[key] = registration
        if observe is not None:
            self._observed[(key.pool, key.server)] = key

    def _current_state(self, key: ProbeKey) -> CheckState:
        # A probe re-registered by a reload starts where the member is, or a DOWN
        # member whose server is fine would never see the transition back to UP.
        pool = self._pools.get(key.pool)
        try:
            return CheckState.UP if pool is None else pool.member(key.server).check_state
        except KeyError:
            return CheckState.UP

    def report(self, pool: str, server: str, ok: bool, reason: str) -> None:
        """A live-traffic outcome from a frontend; counts when the pool observes."""
        key = self._observed.get((pool, server))
        if key is not None:
            self.runner.report(key, ok, reason)

    def _on_probe(
        self, key: ProbeKey, result: CheckResult | None, transition: Transition | None
    ) -> None:
        if result is not None:
            self._last[key] = result
        if transition is not None:
            self._apply(key, transition)
        for callback in list(self._subscribers):
            callback(key, result, transition)

    def _apply(self, key: ProbeKey, transition: Transition) -> None:
        pool = self._pools.get(key.pool)
        if pool is None:
            return
        # Going DOWN is news an operator acts on; coming back UP is the good news.
        level = logging.WARNING if transition.new is CheckState.DOWN else logging.INFO
        log.log(
            level, "pool %s server %s is %s (was %s): %s",
            key.pool, key.server, transition.new.value, transition.old.value, transition.reason,
            extra={"fields": {"event": "check", "pool": key.pool, "server": key.server,
                              "state": transition.new.value, "was": transition.old.value,
                              "reason": transition.reason}},
        )
        try:
            pool.set_check_state(key.server, transition.new, transition.at)
        except KeyError:
            log.debug("transition for a server no longer in pool %s: %s", key.pool, key.server)


class OwnProbes:
    """Health from this process's own probes: a state source and an outcome sink.

    Args:
        runner: the probe runner to use (a fresh one by default).
    """

    def __init__(self, runner: ProbeRunner[ProbeKey] | None = None) -> None:
        # Checks only run inside `run`, which names the events first, so an
        # internal error always finds them.
        self._events: ProbeEvents | None = None
        self.runner = runner or ProbeRunner[ProbeKey](
            on_internal_error=self._internal_error, on_inconclusive=self._inconclusive
        )
        self.wiring = HealthWiring(self.runner, {})
        self._pools: Mapping[str, Pool] = {}

    def subscribe(self, callback: CheckSubscriber) -> None:
        """Call `callback(key, result, transition)` after every check result and transition."""
        self.wiring.subscribe(callback)

    def last_result(self, pool: str, server: str) -> CheckResult | None:
        """The last result of the check `pool` runs on `server`."""
        return self.wiring.last_result(pool, server)

    def check_progress(self, pool: str, server: str) -> CheckProgress | None:
        """The health counter of the check `pool` runs on `server`."""
        return self.wiring.check_progress(pool, server)

    def report(self, pool: str, server: str, ok: bool, reason: str) -> None:
        """A live-traffic outcome; counts when the pool observes."""
        self.wiring.report(pool, server, ok, reason)

    def pools_changed(self) -> None:
        """Re-register probes to match the pools after a reload."""
        self.wiring.sync(self._pools)

    async def run(
        self,
        pools: Mapping[str, Pool],
        events: ProbeEvents,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Probe every member of `pools` until cancelled; started at once."""
        self._pools, self._events = pools, events
        self.wiring.subscribe(events.on_probe)
        self.wiring.sync(pools)
        await self.runner.run(task_status=task_status)

    def _internal_error(self, where: str) -> None:
        if self._events is not None:
            self._events.internal_error(where)

    def _inconclusive(self, key: ProbeKey, stolen: float) -> None:
        if self._events is not None:
            self._events.check_inconclusive(key)
