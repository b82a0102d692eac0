"""Passive health from live traffic: HAProxy's ``observe layer4``, pure.

Every connection the balancer opens to a server is an observation: success, or
a connect failure (refused, reset, timeout). Consecutive failures are counted
per server; when the count reaches ``error_limit`` the policy's ``on_error``
penalty is applied to the same :class:`~probes.state.Health` the active checks
feed, and the count starts again. Any live success resets the count, so only an
unbroken run of errors moves a server, never errors spread among successes.

Penalties (see :class:`~probes.state.OnError`): ``fail-check`` counts as one
failed check and hurries the next one (fastinter), ``sudden-death`` leaves the
server one failed check from DOWN, ``mark-down`` takes it DOWN at once, and
``fastinter`` only hurries the next check. Recovery always goes through the
active checks (``rise`` successes), as in HAProxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from probes.state import Health, OnError, Transition

__all__ = ["Layer4Observer", "OnError", "PassivePolicy", "observe"]


@dataclass(frozen=True)
class PassivePolicy:
    """How live-traffic errors count (HAProxy ``error-limit`` and ``on-error``).

    Attributes:
        error_limit: consecutive errors that trigger the penalty.
        on_error: the penalty.
    """

    error_limit: int = 10
    on_error: OnError = OnError.FAIL_CHECK

    def __post_init__(self) -> None:
        limit = self.error_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"error_limit must be an integer of at least 1, got {limit!r}")
        if not isinstance(self.on_error, OnError):
            raise ValueError(f"on_error must be an OnError, got {self.on_error!r}")


class Layer4Observer:
    """Counts consecutive live-traffic errors for one server.

    Args:
        policy: the error limit and the penalty.
    """

    def __init__(self, policy: PassivePolicy) -> None:
        self.policy = policy
        self.consecutive_errors = 0

    def observe(self, ok: bool) -> OnError | None:
        """Count one live outcome; returns the penalty to apply now, or None."""
        if ok:
            self.consecutive_errors = 0
            return None
        self.consecutive_errors += 1
        if self.consecutive_errors < self.policy.error_limit:
            return None
        self.consecutive_errors = 0
        return self.policy.on_error

    def __repr__(self) -> str:
        return (
            f"<Layer4Observer {self.consecutive_errors}/{self.policy.error_limit} "
            f"on_error={self.policy.on_error.value}>"
        )


def observe(
    observer: Layer4Observer, health: Health, ok: bool, now: float, reason: str = ""
) -> Transition | None:
    """Count one live outcome and apply any penalty it triggers to ``health``.

    Returns:
        The check-state transition the penalty caused, or None.
    """
    penalty = observer.observe(ok)
    if penalty is None:
        return None
    detail = f"{observer.policy.error_limit} consecutive live errors"
    return health.penalize(penalty, now, f"{detail}: {reason}" if reason else detail)
