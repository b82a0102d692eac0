"""Faults a simulated CAS server can suffer, and what each means on the wire.

Theory of operation: a server carries an immutable `FaultSet`. Injecting a fault
replaces any fault of the same kind (and vdir, for per-vdir kinds); clearing
removes them. The decision functions here are pure: given the component states
the health responder sees, the faults and the current time, they say how a
health check or a real request is answered. The I/O side (closing listeners,
resetting connections, picking a certificate) reads the same `FaultSet`.

Kinds (docs/exchange.md §6): crash (#1), blackhole (#2), hang and hang_tls (#3),
slow (#4), app_pool_stopped (#6), errors (#11), flap (#10), wrong_body (#13),
bad_cert (#9).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

from casfarm.components import ComponentStates
from casfarm.vdirs import Vdir, vdir_named


class FaultKind(enum.Enum):
    """Every fault kind the farm can inject."""

    CRASH = "crash"
    BLACKHOLE = "blackhole"
    HANG = "hang"
    HANG_TLS = "hang_tls"
    SLOW = "slow"
    APP_POOL_STOPPED = "app_pool_stopped"
    ERRORS = "errors"
    FLAP = "flap"
    WRONG_BODY = "wrong_body"
    BAD_CERT = "bad_cert"

    @classmethod
    def parse(cls, value: str | FaultKind) -> FaultKind:
        """Parse a fault name case-insensitively ('-' may stand for '_').

        Raises:
            ValueError: naming the bad value and the known ones.
        """
        if isinstance(value, FaultKind):
            return value
        wanted = str(value).lower().replace("-", "_")
        for kind in cls:
            if kind.value == wanted:
                return kind
        known = ", ".join(k.value for k in cls)
        raise ValueError(f"unknown fault {value!r} (known: {known})")


_PER_VDIR = frozenset({FaultKind.APP_POOL_STOPPED, FaultKind.ERRORS})
_CERT_MODES = ("wrong_name", "expired")
DEFAULT_SLOW_SECONDS = 2.0
DEFAULT_FLAP_PERIOD = 1.0
DEFAULT_ERROR_STATUS = 500


@dataclass(frozen=True)
class Fault:
    """One injected fault.

    Attributes:
        kind: what goes wrong.
        vdir: for app_pool_stopped (required) and errors (optional, None = all).
        seconds: added latency for slow, half-period for flap.
        mode: for bad_cert, "wrong_name" or "expired".
        status: the 5xx status of the errors fault.
        since: when it was injected (flap phases count from here).
    """

    kind: FaultKind
    vdir: str | None = None
    seconds: float | None = None
    mode: str | None = None
    status: int = DEFAULT_ERROR_STATUS
    since: float = 0.0

    def __post_init__(self) -> None:
        if self.vdir is not None:
            if self.kind not in _PER_VDIR:
                raise ValueError(f"fault {self.kind.value!r} takes no vdir (got {self.vdir!r})")
            object.__setattr__(self, "vdir", vdir_named(self.vdir).name)
        elif self.kind is FaultKind.APP_POOL_STOPPED:
            raise ValueError("fault 'app_pool_stopped' needs a vdir")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"fault seconds must be a finite number >= 0, got {self.seconds!r}")
        if self.kind is FaultKind.FLAP and self.seconds == 0:
            raise ValueError("flap period must be > 0, got 0")
        if self.kind is FaultKind.BAD_CERT:
            if self.mode is None:
                object.__setattr__(self, "mode", "wrong_name")
            elif self.mode not in _CERT_MODES:
                raise ValueError(
                    f"unknown bad_cert mode {self.mode!r} (known: wrong_name, expired)"
                )
        elif self.mode is not None:
            raise ValueError(f"fault {self.kind.value!r} takes no mode (got {self.mode!r})")
        if not 500 <= self.status <= 599:
            raise ValueError(f"errors status must be 5xx, got {self.status!r}")

    @property
    def key(self) -> tuple[FaultKind, str | None]:
        """Identity within a FaultSet: kind, and vdir for per-vdir kinds."""
        return (self.kind, self.vdir)

    def applies_to(self, vdir: Vdir | None) -> bool:
        """True when this fault covers requests to `vdir` (None: not a vdir)."""
        return self.vdir is None or (vdir is not None and vdir.name == self.vdir)

    def describe(self) -> dict[str, object]:
        """A JSON-ready view of the fault."""
        out: dict[str, object] = {"fault": self.kind.value}
        if self.vdir is not None:
            out["vdir"] = self.vdir
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if self.mode is not None:
            out["mode"] = self.mode
        if self.kind is FaultKind.ERRORS:
            out["status"] = self.status
        return out


@dataclass(frozen=True)
class FaultSet:
    """The faults in force on one server; immutable."""

    faults: tuple[Fault, ...] = ()

    def with_fault(self, fault: Fault) -> FaultSet:
        """A copy with `fault` added, replacing one with the same key."""
        kept = tuple(f for f in self.faults if f.key != fault.key)
        return FaultSet((*kept, fault))

    def without(self, kind: FaultKind | None = None, vdir: str | None = None) -> FaultSet:
        """A copy without faults of `kind` (all when None), of one vdir if given."""
        wanted = None if vdir is None else vdir_named(vdir).name

        def goes(f: Fault) -> bool:
            return (kind is None or f.kind is kind) and (wanted is None or f.vdir == wanted)

        return FaultSet(tuple(f for f in self.faults if not goes(f)))

    def has(self, kind: FaultKind) -> bool:
        """True when a fault of `kind` is in force."""
        return any(f.kind is kind for f in self.faults)

    def find(self, kind: FaultKind, vdir: Vdir | None = None) -> Fault | None:
        """The fault of `kind` covering `vdir`, the vdir-specific one first."""
        matches = [f for f in self.faults if f.kind is kind and f.applies_to(vdir)]
        matches.sort(key=lambda f: f.vdir is None)
        return matches[0] if matches else None

    def added_latency(self) -> float:
        """Seconds of latency the slow fault adds before each answer (0: none)."""
        slow = self.find(FaultKind.SLOW)
        if slow is None:
            return 0.0
        return DEFAULT_SLOW_SECONDS if slow.seconds is None else slow.seconds

    def cert_mode(self) -> str | None:
        """The bad_cert mode in force, or None for the good certificate."""
        fault = self.find(FaultKind.BAD_CERT)
        return None if fault is None else fault.mode

    def describe(self) -> list[dict[str, object]]:
        """A JSON-ready list of the faults."""
        return [f.describe() for f in self.faults]


class HealthAnswer(enum.Enum):
    """How a GET /<vdir>/healthcheck.htm is answered."""

    OK = "ok"  # 200, body "200 OK<br/><fqdn>"
    RESET = "reset"  # request read, then TCP reset (HttpResponse.Close)
    APP_POOL_STOPPED = "app_pool_stopped"  # HTTP.sys 503
    WRONG_BODY = "wrong_body"  # 200 with a foreign page


def healthcheck_answer(
    seen: ComponentStates, faults: FaultSet, vdir: Vdir, now: float
) -> HealthAnswer:
    """Decide the answer to a health check of `vdir` at time `now`.

    Args:
        seen: the component states the health responder currently sees.
        faults: the server's faults.
        vdir: the vdir whose healthcheck.htm was asked for.
        now: current time, for flap phases.
    """
    if faults.find(FaultKind.APP_POOL_STOPPED, vdir) is not None:
        return HealthAnswer.APP_POOL_STOPPED
    if not seen.healthcheck_passes(vdir.component):
        return HealthAnswer.RESET
    flap = faults.find(FaultKind.FLAP)
    if flap is not None and flap_is_down(flap, now):
        return HealthAnswer.RESET
    if faults.find(FaultKind.WRONG_BODY) is not None:
        return HealthAnswer.WRONG_BODY
    return HealthAnswer.OK


def flap_is_down(flap: Fault, now: float) -> bool:
    """True during the odd half-periods of a flap: up first, then down, and so on."""
    period = DEFAULT_FLAP_PERIOD if flap.seconds is None else flap.seconds
    phase = math.floor(max(0.0, now - flap.since) / period)
    return phase % 2 == 1


def request_failure(faults: FaultSet, vdir: Vdir | None) -> int | None:
    """The 5xx a real (non-health) request fails with under `errors`, or None.

    A stopped app pool is not this: HTTP.sys answers for it before the app runs.
    """
    errors = faults.find(FaultKind.ERRORS, vdir)
    return None if errors is None else errors.status


def stamped(fault: Fault, now: float) -> Fault:
    """`fault` with its injection time set to `now`."""
    return replace(fault, since=now)
