"""A busy balancer never blames a server: checks on trio's autojump clock with stalls.

A stall is simulated by jumping the mock clock from inside a task that does not
yield: every timer then fires late by the jump, as when the process was busy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable

import pytest
import trio
import trio.testing

from probes.catalog import CheckKind
from probes.checks import CheckResult, CheckSpec, Reason, Target
from probes.lag import LagMeter, budget, overloaded, run_within
from probes.runner import ProbeRunner
from probes.state import CheckState, Timing

SPEC = CheckSpec(CheckKind.TCP, tls=False)
TARGET = Target("cas1.lab.local", "127.0.0.1", 443)
TIMING = Timing(inter=2.0, fastinter=0.5, downinter=5.0, rise=2, fall=2, timeout=1.0)


def test_stolen_time_counts_overlapping_stalls_once() -> None:
    meter = LagMeter()
    meter.record(10.0, 0.5)  # away 9.5 .. 10.0
    meter.record(10.2, 0.6)  # away 9.6 .. 10.2, overlapping the first
    meter.record(11.0, 0.0)
    assert meter.stolen(9.0, 12.0) == pytest.approx(0.7)
    assert meter.stolen(9.8, 12.0) == pytest.approx(0.4)  # clipped to the interval
    assert meter.stolen(10.5, 12.0) == 0.0


@pytest.mark.parametrize(
    ("timeout", "stolen", "elapsed", "verdict"),
    [
        (1.0, 0.0, 1.0, False),  # an idle balancer: the server had its full second
        (1.0, 0.6, 1.6, False),  # the deadline moved out by the stall: still the server's
        (1.0, 1.5, 2.0, True),  # at the cap with only 0.5 s to run: the balancer's fault
    ],
)
def test_a_timeout_is_the_balancers_only_when_it_never_had_the_time(
    timeout: float, stolen: float, elapsed: float, verdict: bool
) -> None:
    assert overloaded(timeout, stolen, elapsed) is verdict
    assert budget(timeout, stolen) == timeout + min(stolen, timeout)


class SlowHealthyServer:
    """Answers every check after three 0.2 s exchanges (as connect, TLS, HTTP)."""

    def __init__(self) -> None:
        self.checks = 0

    async def check(self, spec: CheckSpec, target: Target) -> CheckResult:
        self.checks += 1
        for _ in range(3):
            await trio.sleep(0.2)
        return CheckResult(True, Reason.OK, "", 0.6)


async def _stall_during_checks(
    clock: trio.testing.MockClock, server: SlowHealthyServer, seconds: float, times: int
) -> None:
    for _ in range(times):
        seen = server.checks
        while server.checks == seen:  # wait until a check is in flight
            await trio.sleep(0.01)
        await trio.sleep(0.05)
        clock.jump(seconds)  # the process is busy: nothing else runs meanwhile


@pytest.mark.parametrize("stall", [0.8, 3.0])
async def test_stalls_of_the_balancer_never_mark_a_healthy_server_down(
    stall: float, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "probes.runner")
    server = SlowHealthyServer()
    inconclusive: list[tuple[Hashable, float]] = []
    runner = ProbeRunner(seed=1, on_inconclusive=lambda k, s: inconclusive.append((k, s)))
    health = runner.add("cas1", SPEC, TARGET, TIMING, check=server.check)
    transitions = []
    runner.subscribe(lambda key, result, transition: transitions.append(transition))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await _stall_during_checks(autojump_clock, server, stall, times=5)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert health.state is CheckState.UP
    assert [t for t in transitions if t is not None] == []
    if stall > 2 * TIMING.timeout:  # beyond the stretched deadline: inconclusive, said once
        assert len(inconclusive) == 5 and runner.inconclusive == 5
        overload_lines = [r for r in caplog.records if "overloaded" in r.getMessage()]
        assert 1 <= len(overload_lines) < 5
    else:  # within it: the check simply got its time back
        assert inconclusive == []


async def _first_verdict_on_a_hung_server(
    busy: Callable[[], Awaitable[None]] | None = None,
) -> tuple[float, CheckResult, ProbeRunner]:
    """Run checks of a server that never answers until it is DOWN: (when, first result)."""

    async def hung(spec: CheckSpec, target: Target) -> CheckResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    runner = ProbeRunner(seed=1, jitter=0)
    health = runner.add("cas1", SPEC, TARGET, TIMING, check=hung)
    results: list[tuple[float, CheckResult | None]] = []
    runner.subscribe(lambda key, result, transition: results.append((trio.current_time(), result)))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        if busy is not None:
            nursery.start_soon(busy)
        while health.state is not CheckState.DOWN:
            await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    first_at, first = results[0]
    assert first is not None and first.reason is Reason.TIMEOUT
    return first_at, first, runner


async def test_a_hung_server_is_still_failed_on_an_idle_balancer_at_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first_at, _, runner = await _first_verdict_on_a_hung_server()
    assert first_at == pytest.approx(1.0)  # exactly its timeout: nothing was stolen
    assert runner.inconclusive == 0


async def test_a_hung_server_is_failed_despite_a_busy_balancer_within_twice_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def busy() -> None:  # 40 % of the time away: 20 ms late on every 50 ms wake
        while True:
            await trio.sleep(0.03)
            autojump_clock.jump(0.02)

    first_at, _, runner = await _first_verdict_on_a_hung_server(busy)
    assert TIMING.timeout < first_at <= 2 * TIMING.timeout + 0.1
    assert runner.inconclusive == 0


async def test_a_check_under_the_meter_runs_in_its_callers_task_and_ends_at_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    meter = LagMeter()
    tasks = []

    async def hung() -> None:
        tasks.append(trio.lowlevel.current_task())
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(meter.run)
        started = trio.current_time()
        assert await run_within(meter, 1.0, hung) is None
        assert trio.current_time() - started == pytest.approx(1.0)  # the meter's wake, on time
        nursery.cancel_scope.cancel()
    # no nursery and no task per check: the meter keeps the deadline
    assert tasks == [trio.lowlevel.current_task()]


async def test_a_deadline_holds_at_twice_its_timeout_without_the_meters_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    with trio.fail_after(10):
        assert await run_within(LagMeter(), 1.0, trio.sleep_forever) is None
    assert trio.current_time() - started == pytest.approx(2.0)  # the cap of budget()
