"""Scheduling checks on trio and publishing what they find.

Theory of operation
-------------------
Each registered (key, check) gets one task. The task sleeps until its check is
due, takes a slot from a shared :class:`trio.CapacityLimiter` (so a farm-wide
outage cannot start hundreds of TLS handshakes at once, haproxy #1902), runs
the check under the timing's timeout, and feeds the verdict to its
:class:`~probes.state.Health` with ``trio.current_time()``. Health decides the
next due time (completion + inter / fastinter / downinter, as HAProxy does);
the runner adds jitter, a uniform ±``jitter`` fraction of that interval, so
that servers drift apart, and lets the checks of one server share their due
times (probes.beats), so that they run together. The very first check of
each key starts within ``jitter × inter`` of the runner starting.

Live-traffic outcomes come in through :meth:`ProbeRunner.report`, synchronously,
from the data path. They go through the key's :class:`~probes.passive.Layer4Observer`
into the same Health; a penalty may pull the next check forward, so the task
is woken to re-read its due time.

A check's timeout counts only the time this process could run (probes.lag):
a check that timed out while the balancer itself stole so much that it never
had its timeout's worth of time is inconclusive. It is not fed to Health (a
busy balancer never marks a healthy server down), it is checked again after
``fastinter``, and the overload is logged once per interval and reported
through ``on_inconclusive``.

A check that could not run because the balancer itself is out of fds or
memory (``CheckResult.skipped``, see probes/local_resources.py) is neither a
pass nor a failure: Health is not fed, subscribers are not told, the check is
simply due again one interval later, and the condition is logged once per
interval with a count.

The runner owns the healthcheck connections its checks keep between GETs
(probes.kept): a connection carries checks to its endpoint for one interval
after it was opened, and is closed when the runner stops.

The runner is generic over its key type (`ProbeRunner[K]`; lb uses
`lb.health.ProbeKey`), so probes/ needs nothing from its callers. Subscribers
are plain callables run synchronously after every check result and every
transition; one that raises is logged and skipped, never allowed to stop
health checking. Time is trio's clock throughout, so tests drive all of this on
``autojump_clock`` and assert exact virtual times.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from probes.beats import Beats
from probes.checks import CheckResult, CheckSpec, Reason, Target, run_check
from probes.kept import KeptConnections
from probes.lag import LagMeter, overloaded, run_within
from probes.local_resources import OncePerInterval
from probes.passive import Layer4Observer, PassivePolicy, observe
from probes.state import AdminState, AdminTransition, CheckState, Health, Timing, Transition

__all__ = ["AdminSubscriber", "Check", "K", "ProbeRunner", "Subscriber"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
"""The type of the keys a runner's checks are registered under."""

Check = Callable[[CheckSpec, Target], Awaitable[CheckResult]]
Subscriber = Callable[[K, CheckResult | None, Transition | None], None]
AdminSubscriber = Callable[[K, AdminTransition], None]


@dataclass(eq=False)
class _Entry(Generic[K]):
    key: K
    spec: CheckSpec
    target: Target
    timing: Timing
    check: Check
    health: Health
    observer: Layer4Observer
    jitter: float  # the timing's own, else the runner's
    beats: Beats  # the due times its server's checks share (probes.beats)
    due: float | None = None  # jittered due time; None until the task first runs
    wake: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    checks_run: int = 0
    # run_check keeps its own (lag-aware) deadline; a second one around it is waste
    self_timed: bool = False


def _ignore(*_: object) -> None:
    """The default internal-error and inconclusive-check hook: the log line is all."""


_TIMEOUTS = frozenset({Reason.TIMEOUT, Reason.CONNECT_TIMEOUT})
OVERLOAD_LOG_INTERVAL = 10.0


class ProbeRunner(Generic[K]):
    """Runs health checks on schedule and publishes results and transitions.

    Args:
        max_concurrent: most checks in flight at once.
        jitter: fraction of each interval added or taken at random, in [0, 1) (a timing's own wins).
        seed: seed for the jitter, for reproducible schedules.
    """

    def __init__(
        self,
        *,
        max_concurrent: int = 32,
        jitter: float = 0.1,
        seed: int | None = None,
        on_internal_error: Callable[[str], None] = _ignore,
        on_inconclusive: Callable[[K, float], None] = _ignore,
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ValueError(f"max_concurrent must be an integer, got {max_concurrent!r}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent!r}")
        if not (isinstance(jitter, int | float) and 0 <= jitter < 1):
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        self._limiter = trio.CapacityLimiter(max_concurrent)
        self._jitter = float(jitter)
        self._rng = random.Random(seed)
        self._entries: dict[K, _Entry[K]] = {}
        self._beats: dict[tuple[str, str], Beats] = {}  # by server: (fqdn, address)
        self._subscribers: list[Subscriber[K]] = []
        self._admin_subscribers: list[AdminSubscriber[K]] = []
        self._nursery: trio.Nursery | None = None
        self._on_internal_error = on_internal_error
        self._on_inconclusive = on_inconclusive
        self.lag = LagMeter()
        self.kept = KeptConnections()
        self.inconclusive = 0
        self._overloads = OncePerInterval(OVERLOAD_LOG_INTERVAL, clock=trio.current_time)
        self._skips = OncePerInterval()

    # --- registration -------------------------------------------------------------

    def add(
        self,
        key: K,
        spec: CheckSpec,
        target: Target,
        timing: Timing,
        *,
        check: Check = run_check,
        initial: CheckState = CheckState.UP,
        passive: PassivePolicy | None = None,
    ) -> Health:
        """Register a check; it starts at once if the runner is running.

        Args:
            key: any hashable naming this (server, check), e.g. ("cas1", "owa").
            spec: what to check.
            target: where.
            timing: rise/fall, intervals and the timeout the runner enforces
                around ``check`` (keep ``spec.timeout`` at or below it, so the
                check reports its own, more precise, timeout reason first).
            check: the coroutine that checks (tests inject fakes).
            initial: the starting check state (see :class:`~probes.state.Health`).
            passive: how live-traffic errors count (default: HAProxy's 10, fail-check).

        Returns:
            The Health the runner feeds, to read state from.

        Raises:
            ValueError: the key is already registered, or the spec's CA file is bad.
        """
        if key in self._entries:
            raise ValueError(f"check {key!r} is already registered")
        self_timed = check is run_check and spec.timeout <= timing.timeout
        if check is run_check:
            spec.tls_context()  # a bad CA file fails here, at configuration time
            check = functools.partial(
                run_check, lag=self.lag, kept=self.kept, reuse_for=timing.inter
            )
        entry = _Entry(
            key,
            spec,
            target,
            timing,
            check,
            Health(timing, initial=initial),
            Layer4Observer(passive or PassivePolicy()),
            self._jitter if timing.jitter is None else timing.jitter,
            self._beats.setdefault((target.fqdn, target.host), Beats()),
            self_timed=self_timed,
        )
        self._entries[key] = entry
        if self._nursery is not None:
            self._nursery.start_soon(self._loop, entry)
        return entry.health

    def remove(self, key: K) -> None:
        """Stop and forget a check.

        Raises:
            KeyError: naming the unknown key.
        """
        entry = self._entry(key)
        entry.scope.cancel()
        del self._entries[key]
        if not any(other.beats is entry.beats for other in self._entries.values()):
            self._beats.pop((entry.target.fqdn, entry.target.host), None)

    def health(self, key: K) -> Health:
        """The Health of a registered check."""
        return self._entry(key).health

    def checks_run(self, key: K) -> int:
        """How many active checks have completed for a key."""
        return self._entry(key).checks_run

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    def subscribe(self, callback: Subscriber[K]) -> None:
        """Call ``callback(key, result, transition)`` after every result and transition.

        ``result`` is None for transitions made by passive observation.
        """
        self._subscribers.append(callback)

    def subscribe_admin(self, callback: AdminSubscriber[K]) -> None:
        """Call ``callback(key, admin_transition)`` after every admin state change."""
        self._admin_subscribers.append(callback)

    # --- synchronous inputs ------------------------------------------------------

    def report(self, key: K, ok: bool, reason: str) -> Transition | None:
        """Record a live-traffic outcome (layer 4: connect refused, reset, timeout).

        Must be called from within trio (it reads ``trio.current_time()``).

        Raises:
            KeyError: naming the unknown key.
        """
        entry = self._entry(key)
        if ok and entry.observer.consecutive_errors == 0:
            # The common case on every request: a success with no error streak to
            # reset changes nothing, so skip the clock read and the state update.
            return None
        before = entry.health.next_due
        transition = observe(entry.observer, entry.health, ok, trio.current_time(), reason)
        due = entry.health.next_due
        if due is not None and due != before and (entry.due is None or due < entry.due):
            entry.due = due
            entry.wake.set()
        if transition is not None:
            self._publish(key, None, transition)
        return transition

    def set_admin(self, key: K, admin: AdminState, reason: str = "") -> AdminTransition | None:
        """Set a check's admin state (READY, DRAIN, MAINT); publishes the change.

        Raises:
            KeyError: naming the unknown key; ValueError: not an AdminState.
        """
        change = self._entry(key).health.set_admin(admin, trio.current_time(), reason)
        if change is not None:
            for callback in list(self._admin_subscribers):
                self._call(callback, key, change)
        return change

    # --- the tasks ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every registered check, and those added later, until cancelled."""
        if self._nursery is not None:
            raise RuntimeError("this ProbeRunner is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.lag.run)
                for entry in self._entries.values():
                    nursery.start_soon(self._loop, entry)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.kept.close_all()

    async def _loop(self, entry: _Entry[K]) -> None:
        entry.scope = trio.CancelScope()  # fresh each run: a scope is entered only once
        if self._entries.get(entry.key) is not entry:
            return  # removed before its task began
        with entry.scope:
            if entry.due is None:
                now, reach = trio.current_time(), entry.jitter * entry.timing.inter
                drawn = now + self._rng.uniform(0, reach)
                entry.due = entry.beats.due(now, now + reach, drawn, now)
            while True:
                await self._sleep_until_due(entry)
                async with self._limiter:
                    started = trio.current_time()
                    with self.lag.measuring():
                        result = await self._check_once(entry)
                elapsed = trio.current_time() - started
                stolen = self.lag.stolen(started, started + elapsed)
                if result.skipped:
                    self._skip(entry, result)
                elif result.reason in _TIMEOUTS and overloaded(
                    entry.timing.timeout, stolen, elapsed
                ):
                    self._inconclusive(entry, stolen)
                else:
                    self._feed(entry, result)

    async def _sleep_until_due(self, entry: _Entry[K]) -> None:
        assert entry.due is not None
        while trio.current_time() < entry.due:
            with trio.move_on_at(entry.due):
                await entry.wake.wait()
            if entry.wake.is_set():
                entry.wake = trio.Event()

    async def _check_once(self, entry: _Entry[K]) -> CheckResult:
        timeout = entry.timing.timeout
        started = trio.current_time()
        result: CheckResult | None = None
        try:
            if entry.self_timed:
                result = await entry.check(entry.spec, entry.target)
            else:
                result = await run_within(
                    self.lag, timeout, lambda: entry.check(entry.spec, entry.target)
                )
        except Exception as exc:  # a broken check must not stop the others
            self._internal_error(f"check {entry.key!r}", exc)
            return CheckResult(False, Reason.CHECK_ERROR, repr(exc), trio.current_time() - started)
        if result is None:
            return CheckResult(False, Reason.TIMEOUT, f"no verdict within {timeout:g}s", timeout)
        return result

    def _feed(self, entry: _Entry[K], result: CheckResult) -> None:
        health = entry.health
        transition = health.record(result.ok, trio.current_time(), str(result))
        entry.checks_run += 1
        base, reach = health.next_due, health.next_interval() * entry.jitter
        assert base is not None
        drawn = base + self._rng.uniform(-reach, reach)
        entry.due = entry.beats.due(base - 2 * reach, base + reach, drawn, trio.current_time())
        self._publish(entry.key, result, transition)

    def _inconclusive(self, entry: _Entry[K], stolen: float) -> None:
        """A timeout the balancer caused: not the server's fault, so not fed to Health."""
        now = trio.current_time()
        entry.due = now + (entry.timing.fastinter or entry.timing.inter)
        self.inconclusive += 1
        line = self._overloads.line(f"caslb is overloaded: checks late by {stolen * 1000:.0f} ms")
        if line is not None:
            log.warning("%s", line)
        self._call(self._on_inconclusive, entry.key, stolen)
    def _skip(self, entry: _Entry[K], result: CheckResult) -> None:
        """No verdict: the balancer, not the server, lacked fds or memory."""
        line = self._skips.line(f"checks skipped: {result}")
        if line is not None:
            log.warning("%s", line)
        interval = entry.health.next_interval()
        entry.due = trio.current_time() + interval * (1 + self._rng.uniform(0, entry.jitter))

    # --- helpers -----------------------------------------------------------------

    def _publish(self, key: K, result: CheckResult | None, transition: Transition | None) -> None:
        for callback in list(self._subscribers):
            self._call(callback, key, result, transition)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception as exc:
            self._internal_error(f"probe subscriber {callback!r}", exc)

    def _internal_error(self, what: str, exc: Exception) -> None:
        """The failure boundary of one check or subscriber: one line, counted, nothing stops."""
        log.error("%s raised %s: %s", what, type(exc).__name__, exc)
        log.debug("%s raised", what, exc_info=exc)
        self._on_internal_error("probe")

    def _entry(self, key: K) -> _Entry[K]:
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(f"no check registered as {key!r}") from None

    def __repr__(self) -> str:
        states = [e.health.state for e in self._entries.values()]
        up = sum(s is CheckState.UP for s in states)
        running = "running" if self._nursery is not None else "idle"
        return f"<ProbeRunner {running} {up}/{len(states)} UP>"
