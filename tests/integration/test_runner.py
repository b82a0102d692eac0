"""The probe runner on trio's autojump clock: exact virtual detection times."""

from __future__ import annotations

import logging
from collections.abc import Hashable

import pytest
import trio
import trio.testing

from probes.catalog import CheckKind
from probes.checks import CheckResult, CheckSpec, Reason, Target
from probes.passive import PassivePolicy
from probes.runner import ProbeRunner
from probes.state import (
    AdminState,
    AdminTransition,
    CheckState,
    OnError,
    Timing,
    Transition,
    worst_case_down,
    worst_case_up,
)

SPEC = CheckSpec(CheckKind.TCP, tls=False)
TARGET = Target("cas1.lab.local", "127.0.0.1", 443)
TIMING = Timing(inter=2.0, fastinter=0.5, downinter=5.0, rise=2, fall=3, timeout=1.0)


class FakeServer:
    """A check that answers per `mode` and logs when each check started."""

    def __init__(self, mode: str = "ok", duration: float = 0.0) -> None:
        self.mode = mode
        self.duration = duration
        self.started: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def check(self, spec: CheckSpec, target: Target) -> CheckResult:
        self.started.append(trio.current_time())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.mode == "blackhole":
                await trio.sleep_forever()
            await trio.sleep(self.duration)
            if self.mode == "ok":
                return CheckResult(True, Reason.OK, "", self.duration)
            if self.mode == "refused":
                return CheckResult(False, Reason.REFUSED, "refused", self.duration)
            raise RuntimeError(f"bad mode {self.mode}")
        finally:
            self.in_flight -= 1


class Recorder:
    def __init__(self) -> None:
        self.results: list[tuple[Hashable, CheckResult | None, Transition | None]] = []
        self.changed = trio.Event()

    def __call__(self, key: Hashable, result: CheckResult | None, tr: Transition | None) -> None:
        self.results.append((key, result, tr))
        if tr is not None:
            self.changed.set()

    @property
    def transitions(self) -> list[Transition]:
        return [tr for _, _, tr in self.results if tr is not None]

    async def next_transition(self) -> Transition:
        with trio.fail_after(120):
            await self.changed.wait()
        self.changed = trio.Event()
        return self.transitions[-1]


async def start(
    nursery: trio.Nursery, server: FakeServer, timing: Timing = TIMING, **kwargs: object
) -> tuple[ProbeRunner, Recorder]:
    runner = ProbeRunner(jitter=0.0)
    recorder = Recorder()
    runner.subscribe(recorder)
    runner.add("cas1", SPEC, TARGET, timing, check=server.check, **kwargs)  # type: ignore[arg-type]
    await nursery.start(runner.run)
    return runner, recorder


@pytest.mark.parametrize(
    ("mode", "fail_duration", "schedule"),
    [
        # black hole: each check runs into the 1 s timeout
        ("blackhole", None, [0, 2, 4, 6, 7.5, 9]),
        # crash: each check fails at once
        ("refused", 0.0, [0, 2, 4, 6, 6.5, 7]),
    ],
)
async def test_down_and_up_at_the_times_the_formulas_predict(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    mode: str,
    fail_duration: float | None,
    schedule: list[float],
) -> None:
    server = FakeServer()
    runner, recorder = await start(nursery, server)
    last_pass = 4.0
    await trio.sleep_until(last_pass + 0.1)  # the fault strikes just after a passing check
    server.mode = mode
    down = await recorder.next_transition()
    assert (down.old, down.new) == (CheckState.UP, CheckState.DOWN)
    assert down.at == last_pass + worst_case_down(TIMING, fail_duration=fail_duration)
    assert server.started == schedule

    last_fail = down.at
    await trio.sleep_until(last_fail + 0.1)
    server.mode = "ok"
    up = await recorder.next_transition()
    assert up.new is CheckState.UP
    assert up.at == last_fail + worst_case_up(TIMING, check_duration=0)
    assert runner.health("cas1").eligible


async def test_a_started_server_falls_on_its_first_failure(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = FakeServer("refused")
    _, recorder = await start(nursery, server)
    down = await recorder.next_transition()
    assert (down.at, down.reason) == (0.0, "connection refused: refused")


async def test_every_result_is_published_with_its_transition(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = FakeServer("ok", duration=0.25)
    runner, recorder = await start(nursery, server, initial=CheckState.DOWN)
    await trio.sleep(3.5)
    results = [(r.ok if r else None, tr.new if tr else None) for _, r, tr in recorder.results]
    # DOWN at 0: checks at 0 → 0.25 (rising, fastinter), 0.75 → 1.0 UP, then inter
    assert results[:3] == [(True, None), (True, CheckState.UP), (True, None)]
    assert server.started[:3] == [0.0, 0.75, 3.0]
    assert runner.checks_run("cas1") == 3


async def test_live_errors_mark_down_and_hurry_the_next_check(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = FakeServer()
    runner, recorder = await start(
        nursery, server, passive=PassivePolicy(error_limit=3, on_error=OnError.MARK_DOWN)
    )
    await trio.sleep_until(1.0)
    outcomes = [runner.report("cas1", False, "connection refused") for _ in range(3)]
    assert outcomes[:2] == [None, None]
    assert outcomes[2] is not None and outcomes[2].new is CheckState.DOWN
    assert recorder.results[-1][1] is None  # passive: no check result
    await trio.sleep_until(1.6)
    assert server.started == [0.0, 1.5]  # pulled forward from 2.0 to now + fastinter


async def test_a_live_success_resets_the_error_run(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = FakeServer()
    runner, _ = await start(nursery, server, passive=PassivePolicy(2, OnError.MARK_DOWN))
    for ok in (False, True, False, True, False):
        assert runner.report("cas1", ok, "reset") is None
    assert runner.health("cas1").state is CheckState.UP


async def test_concurrent_checks_are_capped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = FakeServer("ok", duration=0.5)
    runner = ProbeRunner(max_concurrent=2, jitter=0.0)
    for i in range(6):
        runner.add(i, SPEC, TARGET, Timing(inter=10.0), check=server.check)
    await nursery.start(runner.run)
    await trio.sleep(1.6)
    assert server.max_in_flight == 2
    assert sorted(server.started) == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]


async def test_jitter_spreads_intervals_within_bounds(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = FakeServer()
    runner = ProbeRunner(jitter=0.1, seed=7)
    runner.add("cas1", SPEC, TARGET, Timing(inter=2.0), check=server.check)
    await nursery.start(runner.run)
    await trio.sleep(40)
    gaps = [b - a for a, b in zip(server.started, server.started[1:], strict=False)]
    assert len(gaps) >= 15
    assert all(1.8 <= g <= 2.2 for g in gaps)
    assert len({round(g, 6) for g in gaps}) > 5


async def test_broken_checks_and_subscribers_do_not_stop_the_runner(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeServer("nonsense")
    errors: list[str] = []
    runner = ProbeRunner(jitter=0.0, on_internal_error=errors.append)
    recorder = Recorder()

    def broken(key: Hashable, result: CheckResult | None, tr: Transition | None) -> None:
        raise ZeroDivisionError("subscriber bug")

    runner.subscribe(broken)
    runner.subscribe(recorder)
    runner.add("cas1", SPEC, TARGET, Timing(inter=1.0), check=server.check)
    with caplog.at_level(logging.ERROR, logger="probes.runner"):
        await nursery.start(runner.run)
        await trio.sleep(5)
    first = recorder.results[0][1]
    assert first is not None and first.reason is Reason.CHECK_ERROR
    assert "bad mode nonsense" in first.detail
    assert len(server.started) >= 3
    assert "subscriber bug" in caplog.text
    assert "Traceback" not in caplog.text  # one line each; the traceback is at DEBUG
    assert errors and set(errors) == {"probe"}


async def test_add_while_running_and_remove(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    runner = ProbeRunner(jitter=0.0)
    await nursery.start(runner.run)
    server = FakeServer()
    runner.add("late", SPEC, TARGET, TIMING, check=server.check)
    await trio.sleep(3)
    assert server.started == [0.0, 2.0]
    runner.remove("late")
    await trio.sleep(10)
    assert server.started == [0.0, 2.0]
    assert "late" not in runner
    with pytest.raises(KeyError, match="no check registered as 'late'"):
        runner.health("late")


async def test_admin_changes_are_published_and_kept_apart(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    runner, _ = await start(nursery, FakeServer())
    changes: list[tuple[Hashable, AdminTransition]] = []
    runner.subscribe_admin(lambda key, change: changes.append((key, change)))
    await trio.sleep(1)
    runner.set_admin("cas1", AdminState.DRAIN, "patching")
    assert changes == [
        ("cas1", AdminTransition(AdminState.READY, AdminState.DRAIN, 1.0, "patching"))
    ]
    health = runner.health("cas1")
    assert health.state is CheckState.UP and not health.eligible
    assert runner.set_admin("cas1", AdminState.DRAIN) is None


async def test_misuse_is_refused(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    runner, _ = await start(nursery, FakeServer())
    with pytest.raises(ValueError, match="check 'cas1' is already registered"):
        runner.add("cas1", SPEC, TARGET, TIMING)
    with pytest.raises(RuntimeError, match="already running"):
        await runner.run()
    with pytest.raises(ValueError, match="jitter must be in"):
        ProbeRunner(jitter=1.0)
    with pytest.raises(ValueError, match="max_concurrent must be at least 1, got 0"):
        ProbeRunner(max_concurrent=0)
    with pytest.raises(ValueError, match="cannot load ca file"):
        ProbeRunner().add("x", CheckSpec(CheckKind.TCP, ca_file="/nonexistent.pem"), TARGET, TIMING)
