"""The checks of one server fall due together (probes.beats), on the autojump clock."""

from __future__ import annotations

import itertools
from collections import defaultdict

import trio
import trio.testing

from probes.beats import Beats
from probes.checks import CheckResult, CheckSpec, Reason, Target
from probes.runner import Check, ProbeRunner
from probes.state import Timing
from tests.integration.test_runner import SPEC

CAS1 = Target("cas1.lab.local", "127.0.0.11", 443)
CAS2 = Target("cas2.lab.local", "127.0.0.12", 443)
INTER, JITTER = 1.0, 0.1


def test_a_check_takes_a_planned_time_inside_its_window_else_its_own() -> None:
    beats = Beats()
    assert beats.due(9.8, 10.1, 10.05, now=9.0) == 10.05  # nothing planned: its own
    assert beats.due(9.9, 10.2, 10.15, now=9.0) == 10.05  # inside its window: shared
    assert beats.due(10.06, 10.3, 10.2, now=9.0) == 10.2  # outside: its own, planned too
    assert beats.due(10.1, 10.3, 10.25, now=9.0) == 10.2
    assert beats.due(9.9, 10.3, 10.25, now=10.1) == 10.2  # 10.05 has passed
    assert len(beats) == 1


async def test_the_checks_of_one_server_start_together_and_servers_apart(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    started: dict[str, list[float]] = defaultdict(list)

    def vdir(name: str, seconds: float) -> Check:
        async def check(spec: CheckSpec, target: Target) -> CheckResult:
            started[name].append(trio.current_time())
            await trio.sleep(seconds)  # each vdir answers in its own time
            return CheckResult(True, Reason.OK, "", seconds)

        return check

    runner = ProbeRunner(jitter=JITTER, seed=3)
    timing = Timing(inter=INTER, timeout=1.0)
    for server, target in (("cas1", CAS1), ("cas2", CAS2)):
        for i, name in enumerate(("owa", "ews", "imap")):
            runner.add(f"{server}/{name}", SPEC, target, timing,
                       check=vdir(f"{server}/{name}", 0.002 * (i + 1)))
    await nursery.start(runner.run)
    await trio.sleep(30)
    for server in ("cas1", "cas2"):
        rounds = list(zip(*(started[f"{server}/{n}"] for n in ("owa", "ews", "imap")),
                          strict=False))
        assert len(rounds) >= 25
        assert all(len(set(starts)) == 1 for starts in rounds)  # one instant per round
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(rounds)]
        # each check's own window: its jitter band, and as much again early to join
        assert all(INTER * (1 - 2 * JITTER) <= g <= INTER * (1 + JITTER) + 0.01 for g in gaps)
    assert not set(started["cas1/owa"]) & set(started["cas2/owa"])  # servers keep their phase


async def test_without_jitter_a_check_never_moves_to_join_another(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    starts: list[float] = []

    async def check(spec: CheckSpec, target: Target) -> CheckResult:
        starts.append(trio.current_time())
        await trio.sleep(0.25)
        return CheckResult(True, Reason.OK, "", 0.25)

    async def quick(spec: CheckSpec, target: Target) -> CheckResult:
        return CheckResult(True, Reason.OK, "", 0.0)

    runner = ProbeRunner(jitter=0.0)
    runner.add("slow", SPEC, CAS1, Timing(inter=1.0), check=check)
    runner.add("quick", SPEC, CAS1, Timing(inter=1.0), check=quick)
    await nursery.start(runner.run)
    await trio.sleep(3.6)
    assert starts == [0.0, 1.25, 2.5, 3.75][: len(starts)] and len(starts) == 3


def test_a_servers_beats_go_when_its_last_check_is_removed() -> None:
    # a reload that drops servers must not leave their planned times behind
    runner = ProbeRunner()
    timing = Timing(inter=INTER)
    runner.add("cas1/owa", SPEC, CAS1, timing)
    runner.add("cas1/ews", SPEC, CAS1, timing)
    runner.add("cas2/owa", SPEC, CAS2, timing)
    runner.remove("cas1/owa")
    assert len(runner._beats) == 2  # cas1/ews still plans with cas1's
    runner.remove("cas1/ews")
    assert list(runner._beats) == [(CAS2.fqdn, CAS2.host)]
