"""The pure health state machine: HAProxy's counter, intervals, penalties, formulas."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.state import (
    AdminState,
    CheckState,
    Health,
    OnError,
    Timing,
    Transition,
    worst_case_down,
    worst_case_up,
)

UP, DOWN = CheckState.UP, CheckState.DOWN
T = Timing(inter=2.0, fastinter=0.5, downinter=5.0, rise=2, fall=3, timeout=1.0)


def feed(health: Health, results: list[tuple[bool, float]]) -> list[tuple[CheckState, float]]:
    """Feed (ok, completed_at) pairs; return (new state, time) of each transition."""
    seen = []
    for ok, now in results:
        tr = health.record(ok, now)
        if tr is not None:
            seen.append((tr.new, tr.at))
    return seen


@pytest.mark.parametrize(
    ("initial", "results", "expected"),
    [
        # a started server sits at the UP threshold: the first failure marks it down
        (UP, [(False, 1.0)], [(DOWN, 1.0)]),
        # one success first brings it to the top: then it takes `fall` failures
        (UP, [(True, 0), (False, 2), (False, 2.5), (False, 3)], [(DOWN, 3)]),
        # a success in the middle of a fall restores the top
        (UP, [(True, 0), (False, 1), (False, 2), (True, 3), (False, 4), (False, 5)], []),
        # DOWN needs `rise` consecutive successes; a failure restarts the count
        (DOWN, [(True, 1), (False, 2), (True, 3), (True, 4)], [(UP, 4)]),
        # flapping with rise 2 / fall 3 never moves a fully-UP server
        (UP, [(True, 0)] + [(i % 2 == 0, float(i)) for i in range(1, 20)], []),
        # down, up, down again
        (
            DOWN,
            [(True, 1), (True, 2), (False, 3), (False, 4), (False, 5), (True, 6), (True, 7)],
            [(UP, 2), (DOWN, 5), (UP, 7)],
        ),
    ],
)
def test_transitions_happen_at_the_exact_result_times(
    initial: CheckState, results: list[tuple[bool, float]], expected: list[tuple[CheckState, float]]
) -> None:
    assert feed(Health(T, initial=initial), results) == expected


@pytest.mark.parametrize(
    ("results", "interval"),
    [
        ([], 5.0),  # fresh DOWN server: fully down → downinter
        ([True], 0.5),  # rising → fastinter
        ([True, True], 2.0),  # fully up → inter
        ([True, True, False], 0.5),  # falling → fastinter
        ([True, True, False, False, False], 5.0),  # down again → downinter
    ],
)
def test_next_interval_follows_the_counter(results: list[bool], interval: float) -> None:
    health = Health(T, initial=DOWN)
    for i, ok in enumerate(results):
        health.record(ok, float(i))
    assert health.next_interval() == interval


def test_next_check_is_due_an_interval_after_the_check_completes() -> None:
    health = Health(T)
    assert health.next_due is None
    health.record(True, 10.25)
    assert health.next_due == 10.25 + 2.0
    health.record(False, 12.5)
    assert health.next_due == 12.5 + 0.5


def test_intervals_fall_back_to_inter() -> None:
    t = Timing(inter=3.0)
    assert (t.fast, t.down) == (3.0, 3.0)


@pytest.mark.parametrize(
    ("penalty", "results_before", "state_after", "failures_left"),
    [
        # fail-check: one failure off the top, still UP, two to go
        (OnError.FAIL_CHECK, [True], UP, 2),
        # sudden-death: one failure from DOWN
        (OnError.SUDDEN_DEATH, [True], UP, 1),
        # mark-down: immediately DOWN
        (OnError.MARK_DOWN, [True], DOWN, 0),
        # fastinter: nothing counted
        (OnError.FASTINTER, [True], UP, 3),
        # a started server at the threshold dies on any counting penalty
        (OnError.FAIL_CHECK, [], DOWN, 0),
    ],
)
def test_passive_penalties(
    penalty: OnError, results_before: list[bool], state_after: CheckState, failures_left: int
) -> None:
    health = Health(T)
    for ok in results_before:
        health.record(ok, 0.0)
    health.penalize(penalty, 1.0, "3 connect errors")
    assert health.state is state_after
    for i in range(failures_left):
        assert health.state is UP
        health.record(False, 2.0 + i)
    assert health.state is DOWN


def test_penalty_pulls_the_next_check_forward_never_back() -> None:
    health = Health(T)
    health.record(True, 0.0)  # next due at 2.0
    health.penalize(OnError.FAIL_CHECK, 1.0)
    assert health.next_due == 1.5
    health.record(True, 1.5)  # back at the top: due 3.5
    health.penalize(OnError.FASTINTER, 3.4)
    assert health.next_due == 3.5


def test_penalty_transition_carries_reason_and_time() -> None:
    health = Health(T)
    assert health.penalize(OnError.MARK_DOWN, 7.0, "reset") == Transition(UP, DOWN, 7.0, "reset")
    assert health.last_change == 7.0


def test_admin_state_is_apart_from_check_state() -> None:
    health = Health(T)
    assert health.eligible
    change = health.set_admin(AdminState.DRAIN, 1.0, "operator")
    assert change is not None and (change.old, change.new) == (AdminState.READY, AdminState.DRAIN)
    assert health.state is UP and not health.eligible
    assert health.set_admin(AdminState.DRAIN, 2.0) is None
    health.record(False, 3.0)
    health.set_admin(AdminState.READY, 4.0)
    assert health.state is DOWN and not health.eligible


def test_errors_leave_state_untouched() -> None:
    health = Health(T)
    health.record(True, 5.0)
    before = (health.counter, health.next_due, health.admin)
    with pytest.raises(ValueError, match=r"time 4\.0 is before"):
        health.record(False, 4.0)
    with pytest.raises(ValueError, match="penalty must be an OnError"):
        health.penalize("mark-down", 6.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="admin state must be"):
        health.set_admin("DRAIN", 6.0)  # type: ignore[arg-type]
    assert (health.counter, health.next_due, health.admin) == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"inter": 0}, "inter"),
        ({"fastinter": -1.0}, "fastinter"),
        ({"downinter": float("nan")}, "downinter"),
        ({"timeout": float("inf")}, "timeout"),
        ({"rise": 0}, "rise"),
        ({"fall": 2.5}, "fall"),
        ({"rise": True}, "rise"),
    ],
)
def test_timing_rejects_bad_values_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be"):
        Timing(**kwargs)  # type: ignore[arg-type]


def test_worst_case_formulas_match_the_anchors_worked_examples() -> None:
    # docs/configuration.md, detection times: inter 5 s, fast 250 ms, threshold 3, timeout 1 s
    t = Timing(inter=5.0, fastinter=0.25, rise=3, fall=3, timeout=1.0)
    assert worst_case_down(t, fail_duration=0) == pytest.approx(5.5)
    assert worst_case_down(t) == pytest.approx(8.5)
    assert worst_case_down(Timing(inter=5.0, fall=3, timeout=1.0), fail_duration=0) == 15.0
    # HAProxy defaults, black hole with the check bounded by inter: 2+2+2×4 = 12 s
    assert worst_case_down(Timing(timeout=2.0)) == 12.0
    # recovery: downinter + (rise-1)×fastinter + rise×check
    assert worst_case_up(T, check_duration=0) == 5.5
    assert worst_case_up(T) == 7.5
    assert worst_case_down(T, fail_duration=0, jitter=0.1) == pytest.approx(2.2 + 2 * 0.55)


def simulate_down_time(t: Timing, phase: float, fail_duration: float) -> float:
    """Drive Health on a virtual clock: fully UP, fails at a moment `phase` into an inter."""
    health = Health(t)
    health.record(True, 0.0)
    fail_at = phase * t.inter
    now = 0.0
    while health.state is UP:
        start = health.next_due
        assert start is not None
        ok = start < fail_at
        now = start + (0.0 if ok else fail_duration)
        health.record(ok, now)
    return now - fail_at


timings = st.builds(
    Timing,
    inter=st.floats(0.1, 10),
    fastinter=st.none() | st.floats(0.1, 10),
    downinter=st.none() | st.floats(0.1, 10),
    rise=st.integers(1, 6),
    fall=st.integers(1, 6),
    timeout=st.floats(0.1, 5),
)


@given(timings, st.floats(0, 1), st.booleans())
def test_detection_never_exceeds_the_formula(t: Timing, phase: float, black_hole: bool) -> None:
    fail = t.timeout if black_hole else 0.0
    took = simulate_down_time(t, phase, fail)
    assert took <= worst_case_down(t, fail_duration=fail) + 1e-9
    if phase == 0:  # broke right after a passing check: the worst case, reached exactly
        assert took == pytest.approx(worst_case_down(t, fail_duration=fail))


@given(timings, st.booleans(), st.lists(st.booleans(), max_size=40))
def test_no_sequence_flips_state_faster_than_rise_and_fall(
    t: Timing, start_up: bool, results: list[bool]
) -> None:
    health = Health(t, initial=UP if start_up else DOWN)
    fully_up = False  # the started server sits at the threshold, not at the top
    run_ok = run_fail = 0
    for i, ok in enumerate(results):
        before = health.state
        transition = health.record(ok, float(i))
        run_ok, run_fail = (run_ok + 1, 0) if ok else (0, run_fail + 1)
        if transition is None:
            assert health.state is before
        elif transition.new is UP:
            assert ok and run_ok >= t.rise
        else:
            assert not ok and (run_fail >= t.fall or not fully_up)
        fully_up = health.counter == t.top
        assert 0 <= health.counter <= t.top
