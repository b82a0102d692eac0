"""Passive layer-4 observation feeding the health state machine."""

from __future__ import annotations

import pytest

from probes.passive import Layer4Observer, PassivePolicy, observe
from probes.state import CheckState, Health, OnError, Timing

T = Timing(inter=2.0, fastinter=0.5, rise=2, fall=3, timeout=1.0)
UP, DOWN = CheckState.UP, CheckState.DOWN


def run(policy: PassivePolicy, live: str) -> tuple[list[tuple[int, CheckState]], Health]:
    """Feed a fully-UP server live outcomes ('.' ok, 'x' error) at t = 1, 2, ...

    Returns the (index, new state) of each transition, and the health.
    """
    health = Health(T)
    health.record(True, 0.0)
    observer = Layer4Observer(policy)
    seen = []
    for i, mark in enumerate(live, start=1):
        tr = observe(observer, health, mark == ".", float(i), "connection refused")
        if tr is not None:
            seen.append((i, tr.new))
    return seen, health


@pytest.mark.parametrize(
    ("policy", "live", "transitions", "counter"),
    [
        # fail-check: every 3 errors count as one failed check; fall 3 → 9 errors
        (PassivePolicy(3, OnError.FAIL_CHECK), "xxxxxxxxx", [(9, DOWN)], 0),
        (PassivePolicy(3, OnError.FAIL_CHECK), "xxx", [], 3),
        # a live success resets the error run
        (PassivePolicy(3, OnError.FAIL_CHECK), "xx.xx.xx.", [], 4),
        # sudden-death: one burst leaves it one failure from down, a second kills it
        (PassivePolicy(2, OnError.SUDDEN_DEATH), "xx", [], 2),
        (PassivePolicy(2, OnError.SUDDEN_DEATH), "xxxx", [(4, DOWN)], 0),
        # mark-down: the first full burst is fatal
        (PassivePolicy(2, OnError.MARK_DOWN), "x.xx", [(4, DOWN)], 0),
        # fastinter: counts nothing
        (PassivePolicy(1, OnError.FASTINTER), "xxxxxxxx", [], 4),
        # the default: 10 errors
        (PassivePolicy(), "x" * 9, [], 4),
        (PassivePolicy(), "x" * 10, [], 3),
    ],
)
def test_penalties_on_tables_of_live_outcomes(
    policy: PassivePolicy, live: str, transitions: list[tuple[int, CheckState]], counter: int
) -> None:
    seen, health = run(policy, live)
    assert seen == transitions
    assert health.counter == counter


def test_penalty_hurries_the_next_check_and_says_why() -> None:
    health = Health(T)
    health.record(True, 0.0)
    observer = Layer4Observer(PassivePolicy(2, OnError.MARK_DOWN))
    assert observe(observer, health, False, 0.25, "reset") is None
    tr = observe(observer, health, False, 0.5, "reset")
    assert tr is not None and tr.reason == "2 consecutive live errors: reset"
    assert health.next_due == 0.5 + T.fast
    assert observer.consecutive_errors == 0


def test_recovery_goes_through_active_checks() -> None:
    _, health = run(PassivePolicy(1, OnError.MARK_DOWN), "x....")
    assert health.state is DOWN
    health.record(True, 10.0)
    assert health.state is DOWN
    health.record(True, 11.0)
    assert health.state is UP


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"error_limit": 0}, "error_limit must be an integer of at least 1, got 0"),
        ({"error_limit": True}, "error_limit must be"),
        ({"on_error": "mark-down"}, "on_error must be an OnError, got 'mark-down'"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PassivePolicy(**kwargs)  # type: ignore[arg-type]
