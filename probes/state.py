"""The health state machine of one (server, check), pure: no I/O, no clock.

Theory of operation
-------------------
This follows HAProxy's `src/check.c` (`set_server_check_status`,
`check_notify_failure`, `check_notify_success`, `srv_getinter`) exactly, so a
config ported from HAProxy detects and recovers in the same time:

* A *health counter* runs from 0 to ``rise + fall - 1``. The check state is UP
  while the counter is at least ``rise``, DOWN below it.
* A passed check adds one; reaching ``rise`` jumps straight to the top
  (``rise + fall - 1``): one success ends a fall in progress, and ``rise``
  consecutive successes bring a DOWN server UP.
* A failed check takes one away; falling below ``rise`` drops straight to 0:
  one failure ends a rise in progress, and ``fall`` consecutive failures take a
  fully UP server DOWN.
* A (re)started server that begins UP sits *at the UP threshold* (counter =
  ``rise``), so its very first failure marks it DOWN, as HAProxy's default
  ``init-state up`` does. One that begins DOWN sits at 0 and needs ``rise``
  successes.
* The next check is due when the current one *completes*, plus an interval
  chosen by position: ``inter`` at the top, ``downinter`` at 0, ``fastinter``
  anywhere in between (a transition in progress). Each falls back to ``inter``.

Passive observations (``observe layer4``) arrive as an :class:`OnError` penalty
applied like HAProxy's ``__health_adjust``: ``FAIL_CHECK`` counts one failed
check, ``SUDDEN_DEATH`` leaves the server one failure from DOWN then counts one,
``MARK_DOWN`` drops it to DOWN at once and ``FASTINTER`` only hurries the next
check. Every penalty pulls the next check forward to ``now + fastinter`` when it
was due later, so a server that live traffic suspects is re-checked quickly.

The admin state (READY, DRAIN, MAINT) is set by an operator and kept apart from
the check state; a server takes new traffic only when its check state is UP
and its admin state is READY. Checks go on during DRAIN and MAINT so the check
state is current the moment an operator re-enables the server. (HAProxy pauses
checks in MAINT; this is the one deliberate difference.)

Like h11's ``_state.py``, the rules are data (:data:`_COUNTER_RULES`), inputs
are validated before anything changes, and an error leaves the state untouched.

Worst-case times (derivation in :func:`worst_case_down`, :func:`worst_case_up`):

    T_down = inter' + T_fail + (fall - 1) × (fastinter' + T_fail)
    T_up   = downinter' + (rise - 1) × fastinter' + rise × T_check

where ``x'`` is an interval stretched by the scheduler's jitter, ``T_fail`` the
duration of a failing check (the timeout for a black hole, about 0 for a
refused connection) and ``T_check`` that of a passing one (at most the timeout).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass


class CheckState(enum.Enum):
    """What the health checks say about a server."""

    UP = "UP"
    DOWN = "DOWN"


class AdminState(enum.Enum):
    """What an operator says about a server."""

    READY = "READY"
    DRAIN = "DRAIN"  # no new traffic; existing traffic gets a grace
    MAINT = "MAINT"  # out of service


class OnError(enum.Enum):
    """HAProxy's ``on-error``: what a burst of live-traffic errors does."""

    FASTINTER = "fastinter"  # only hurry the next check
    FAIL_CHECK = "fail-check"  # count as one failed check
    SUDDEN_DEATH = "sudden-death"  # leave one check from DOWN, then fail one
    MARK_DOWN = "mark-down"  # DOWN at once


@dataclass(frozen=True)
class Timing:
    """Check settings, with HAProxy's names, defaults and units (seconds).

    Attributes:
        inter: interval between checks while fully UP.
        fastinter: interval while a transition is in progress (None: inter).
        downinter: interval while fully DOWN (None: inter).
        rise: consecutive successes that bring a DOWN server UP.
        fall: consecutive failures that take a fully UP server DOWN.
        timeout: bound on one check; also a black hole's failure time.
        jitter: fraction of each interval the scheduler adds or takes at random,
            in [0, 1), so that checks started together drift apart; None for
            the runner's.
    """

    inter: float = 2.0
    fastinter: float | None = None
    downinter: float | None = None
    rise: int = 2
    fall: int = 3
    timeout: float = 2.0
    jitter: float | None = None

    def __post_init__(self) -> None:
        if self.jitter is not None and not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")
        for name in ("inter", "fastinter", "downinter", "timeout"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("rise", "fall"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")

    @property
    def fast(self) -> float:
        """The interval used during a transition."""
        return self.inter if self.fastinter is None else self.fastinter

    @property
    def down(self) -> float:
        """The interval used while fully DOWN."""
        return self.inter if self.downinter is None else self.downinter

    @property
    def top(self) -> int:
        """The highest value of the health counter: fully UP."""
        return self.rise + self.fall - 1


@dataclass(frozen=True)
class Transition:
    """A change of check state."""

    old: CheckState
    new: CheckState
    at: float
    reason: str


@dataclass(frozen=True)
class AdminTransition:
    """A change of admin state."""

    old: AdminState
    new: AdminState
    at: float
    reason: str


@dataclass(frozen=True)
class CheckProgress:
    """Where a (server, check) stands between UP and DOWN, read off its health counter.

    Attributes:
        state: the check state.
        counter: the health counter, 0 .. ``rise + fall - 1``.
        rise, fall: from the timing.
        last_change: when the check state last changed, None if never.
    """

    state: CheckState
    counter: int
    rise: int
    fall: int
    last_change: float | None

    @property
    def steps(self) -> tuple[int, int] | None:
        """HAProxy's ``n/m`` of a transition in progress, None when settled.

        As HAProxy's stats page counts them: UP going down shows the checks it
        has left before DOWN out of ``fall``; DOWN coming up shows the passes
        counted out of ``rise``.
        """
        if self.state is CheckState.UP:
            if self.counter >= self.rise + self.fall - 1:
                return None
            return self.counter - self.rise + 1, self.fall
        return None if self.counter <= 0 else (self.counter, self.rise)

    @property
    def label(self) -> str:
        """"UP", "UP 1/2", "DOWN" or "DOWN 1/2", as HAProxy writes it."""
        steps = self.steps
        return self.state.value if steps is None else f"{self.state.value} {steps[0]}/{steps[1]}"


def _after_pass(counter: int, t: Timing) -> int:
    if counter >= t.top:
        return counter
    return t.top if counter + 1 >= t.rise else counter + 1


def _after_fail(counter: int, t: Timing) -> int:
    if counter <= 0:
        return 0
    return 0 if counter - 1 < t.rise else counter - 1


def _sudden_death(counter: int, t: Timing) -> int:
    # HAProxy: "simulate a pre-fatal failed health check"
    return _after_fail(min(counter, t.rise + 1), t)


def _mark_down(counter: int, t: Timing) -> int:
    return 0


# The whole rule book: how each event moves the health counter.
_COUNTER_RULES: dict[OnError | bool, Callable[[int, Timing], int]] = {
    True: _after_pass,
    False: _after_fail,
    OnError.FAIL_CHECK: _after_fail,
    OnError.SUDDEN_DEATH: _sudden_death,
    OnError.MARK_DOWN: _mark_down,
    OnError.FASTINTER: lambda counter, _t: counter,
}


def _state_of(counter: int, t: Timing) -> CheckState:
    return CheckState.UP if counter >= t.rise else CheckState.DOWN


class Health:
    """The health of one (server, check): counter, check state, admin state, schedule.

    Mutable but pure: every method takes the time as an argument.

    Args:
        timing: the check settings.
        initial: UP starts at the UP threshold (first failure marks DOWN);
            DOWN starts fully down (``rise`` successes to come UP).
    """

    def __init__(self, timing: Timing, *, initial: CheckState = CheckState.UP) -> None:
        if not isinstance(timing, Timing):
            raise TypeError(f"timing must be a Timing, got {timing!r}")
        if not isinstance(initial, CheckState):
            raise TypeError(f"initial must be a CheckState, got {initial!r}")
        self.timing = timing
        self.counter = timing.rise if initial is CheckState.UP else 0
        self.admin = AdminState.READY
        self.next_due: float | None = None  # None: no check yet, due now
        self.last_change: float | None = None
        self._last_event: float = -math.inf

    @property
    def state(self) -> CheckState:
        """The check state."""
        return _state_of(self.counter, self.timing)

    @property
    def eligible(self) -> bool:
        """True when the server may take new traffic: check UP and admin READY."""
        return self.state is CheckState.UP and self.admin is AdminState.READY

    @property
    def progress(self) -> CheckProgress:
        """The counter and its thresholds, for a status page."""
        t = self.timing
        return CheckProgress(self.state, self.counter, t.rise, t.fall, self.last_change)

    def record(self, ok: bool, now: float, reason: str = "") -> Transition | None:
        """Feed the result of an active check that completed at ``now``.

        Returns:
            The transition it caused, or None.

        Raises:
            ValueError: ``now`` is earlier than a previous event (state untouched).
        """
        self._check_time(now)
        transition = self._apply(_COUNTER_RULES[bool(ok)], now, reason)
        self.next_due = now + self.next_interval()
        return transition

    def penalize(self, penalty: OnError, now: float, reason: str = "") -> Transition | None:
        """Apply a passive penalty (see :class:`OnError`) observed at ``now``.

        The next check is pulled forward to ``now + fastinter`` if due later.

        Raises:
            ValueError: ``now`` goes back in time, or ``penalty`` is not an OnError.
        """
        if not isinstance(penalty, OnError):
            raise ValueError(f"penalty must be an OnError, got {penalty!r}")
        self._check_time(now)
        transition = self._apply(_COUNTER_RULES[penalty], now, reason)
        soon = now + self.timing.fast
        if self.next_due is None or self.next_due > soon:
            self.next_due = soon
        return transition

    def set_admin(self, admin: AdminState, now: float, reason: str = "") -> AdminTransition | None:
        """Set the admin state; returns the change, or None if it was already so.

        Raises:
            ValueError: ``admin`` is not an AdminState (state untouched).
        """
        if not isinstance(admin, AdminState):
            raise ValueError(f"admin state must be an AdminState, got {admin!r}")
        if admin is self.admin:
            return None
        change = AdminTransition(self.admin, admin, now, reason)
        self.admin = admin
        return change

    def next_interval(self) -> float:
        """The wait after a check completes, chosen by the counter (``srv_getinter``)."""
        if self.counter >= self.timing.top:
            return self.timing.inter
        if self.counter == 0:
            return self.timing.down
        return self.timing.fast

    def _check_time(self, now: float) -> None:
        if not math.isfinite(now) or now < self._last_event:
            raise ValueError(f"time {now!r} is before the last event at {self._last_event!r}")

    def _apply(
        self, rule: Callable[[int, Timing], int], now: float, reason: str
    ) -> Transition | None:
        old = self.state
        self.counter = rule(self.counter, self.timing)
        self._last_event = now
        new = self.state
        if new is old:
            return None
        self.last_change = now
        return Transition(old, new, now, reason)

    def __repr__(self) -> str:
        return (
            f"<Health {self.state.value} {self.counter}/{self.timing.top} "
            f"admin={self.admin.value} next_due={self.next_due!r}>"
        )


def _stretch(interval: float, jitter: float) -> float:
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    return interval * (1 + jitter)


def worst_case_down(t: Timing, *, fail_duration: float | None = None, jitter: float = 0.0) -> float:
    """Longest time from a server failing to it being marked DOWN.

    The server was fully UP and its last check had just passed when it broke.
    The next check starts ``inter`` later and fails after ``fail_duration``;
    ``fall - 1`` more each start ``fastinter`` after the previous one ends.

    Args:
        t: the check settings.
        fail_duration: how long a failing check takes; None means ``t.timeout``
            (a black hole), 0 a refused connection.
        jitter: the scheduler's jitter fraction; intervals may stretch by it.
    """
    fail = t.timeout if fail_duration is None else fail_duration
    if fail < 0:
        raise ValueError(f"fail_duration must not be negative, got {fail_duration!r}")
    inter, fast = _stretch(t.inter, jitter), _stretch(t.fast, jitter)
    return inter + fail + (t.fall - 1) * (fast + fail)


def worst_case_up(t: Timing, *, check_duration: float | None = None, jitter: float = 0.0) -> float:
    """Longest time from a server recovering to it being marked UP again.

    The server was fully DOWN and its last check had just failed when it
    recovered. The next check starts ``downinter`` later; ``rise - 1`` more
    each start ``fastinter`` after the previous one ends.

    Args:
        t: the check settings.
        check_duration: how long a passing check takes; None means ``t.timeout``.
        jitter: the scheduler's jitter fraction; intervals may stretch by it.
    """
    check = t.timeout if check_duration is None else check_duration
    if check < 0:
        raise ValueError(f"check_duration must not be negative, got {check_duration!r}")
    down, fast = _stretch(t.down, jitter), _stretch(t.fast, jitter)
    return down + (t.rise - 1) * fast + t.rise * check
