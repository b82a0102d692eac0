"""Passive outlier detection: eject a server whose real requests fail while its peers' succeed.

Theory of operation. A health probe can stay green while real requests fail
(docs/exchange.md §6, fault 11: AD, Kerberos or the back-end proxy broken). The proxy
reports every request's outcome here, per pool, and this module decides when a
server must leave that pool for a while, in the manner of Envoy's outlier
detection:

* A server is a candidate when it has `consecutive_errors` failures in a row
  (any 5xx or gateway failure), or `consecutive_gateway_failures` gateway
  failures in a row (connect refused, reset, timeout: the balancer's own 502,
  503 and 504).
* A candidate is ejected only when its errors stand out from the rest of the
  pool: the other servers' failure rate over the same span of time (since the
  candidate's streak began) must sit at least `stand_out_margin` below the
  candidate's. A mailbox database failover fails requests on *every* server at
  once (fault 12); the rates then match and nobody is ejected.
* At most `max_ejection_percent` of the pool is ejected at once, but always at
  least one server may be.
* An ejection lasts `base_ejection_time` × the number of times that server was
  ejected, capped at `max_ejection_time`; the multiplier is forgotten after a
  quiet `max_ejection_time` with no new ejection.

Outcomes are counted in one-second buckets kept for `window` seconds, so memory
per server is bounded whatever the request rate. The detector is pure: it does
no I/O and reads no clock; every call takes `now`.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field


class Outcome(enum.Enum):
    """How one request to a server ended, as far as outlier detection cares."""

    SUCCESS = "success"
    SERVER_ERROR = "server_error"  # the server answered 5xx (other than a gateway status)
    GATEWAY_FAILURE = "gateway_failure"  # connect failure, reset, timeout, or 502/503/504


@dataclass(frozen=True)
class OutlierSettings:
    """Knobs of the detector (defaults follow Envoy's where Envoy has one).

    Attributes:
        consecutive_errors: failures in a row (5xx or gateway) that make a candidate.
        consecutive_gateway_failures: gateway failures in a row that make a candidate.
        base_ejection_time: seconds of the first ejection.
        max_ejection_time: cap on one ejection, in seconds.
        max_ejection_percent: at most this share of the pool ejected at once
            (at least one server is always allowed).
        stand_out_margin: the candidate's failure rate must exceed the rest of
            the pool's by at least this much (0..1) over the candidate's streak.
        window: seconds of per-second outcome buckets kept per server.
    """

    consecutive_errors: int = 5
    consecutive_gateway_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 10.0
    stand_out_margin: float = 0.5
    window: float = 10.0

    def __post_init__(self) -> None:
        for name in ("consecutive_errors", "consecutive_gateway_failures"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        for name in ("base_ejection_time", "max_ejection_time", "window"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError(
                f"max_ejection_percent must be within 0..100, not {self.max_ejection_percent!r}"
            )
        if not 0 <= self.stand_out_margin <= 1:
            raise ValueError(f"stand_out_margin must be within 0..1, not {self.stand_out_margin!r}")


@dataclass(frozen=True)
class Ejection:
    """A decision to take `server` out of the pool until `until`.

    Attributes:
        server: the ejected server's name.
        until: the time the ejection ends.
        times_ejected: how many times this server has now been ejected in a row.
        reason: which rule fired ("consecutive_errors" or "consecutive_gateway_failures").
    """

    server: str
    until: float
    times_ejected: int
    reason: str


@dataclass
class _ServerRecord:
    """Mutable bookkeeping for one server (private: callers see only decisions)."""

    consecutive_errors: int = 0
    consecutive_gateway: int = 0
    streak_started: float | None = None
    ejected_until: float | None = None
    times_ejected: int = 0
    last_ejected_at: float = -math.inf
    # (second, successes, failures), oldest first, at most `window` entries.
    buckets: deque[list[int]] = field(default_factory=deque)


class OutlierDetector:
    """Outlier detection for the servers of one pool.

    Args:
        settings: the detector's knobs.
    """

    def __init__(self, settings: OutlierSettings | None = None) -> None:
        self.settings = settings or OutlierSettings()
        self._servers: dict[str, _ServerRecord] = {}

    def __repr__(self) -> str:
        ejected = sorted(n for n, r in self._servers.items() if r.ejected_until is not None)
        return f"<OutlierDetector servers={len(self._servers)} ejected={ejected}>"

    def is_ejected(self, server: str, now: float) -> bool:
        """Whether `server` is ejected at time `now`."""
        record = self._servers.get(server)
        return record is not None and self._still_ejected(record, now)

    def ejected(self, now: float) -> frozenset[str]:
        """The names of the servers ejected at time `now`."""
        return frozenset(n for n, r in self._servers.items() if self._still_ejected(r, now))

    def record(
        self, server: str, outcome: Outcome, now: float, *, pool_size: int
    ) -> Ejection | None:
        """Count one request outcome; return an ejection if this one triggers it.

        Args:
            server: the server the request went to.
            outcome: how it ended.
            now: the current time (any monotonic clock, in seconds).
            pool_size: how many servers the pool has, to apply max_ejection_percent.
        """
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size!r}")
        record = self._servers.setdefault(server, _ServerRecord())
        self._count(record, outcome, now)
        if outcome is Outcome.SUCCESS:
            record.consecutive_errors = record.consecutive_gateway = 0
            record.streak_started = None
            return None
        if record.streak_started is None:
            record.streak_started = now
        record.consecutive_errors += 1
        if outcome is Outcome.GATEWAY_FAILURE:
            record.consecutive_gateway += 1
        else:
            record.consecutive_gateway = 0
        reason = self._tripped_rule(record)
        if reason is None or self._still_ejected(record, now):
            return None
        if not self._stands_out(server, record, now) or not self._room_to_eject(now, pool_size):
            return None
        return self._eject(server, record, now, reason)

    def _tripped_rule(self, record: _ServerRecord) -> str | None:
        if record.consecutive_gateway >= self.settings.consecutive_gateway_failures:
            return "consecutive_gateway_failures"
        if record.consecutive_errors >= self.settings.consecutive_errors:
            return "consecutive_errors"
        return None

    def _still_ejected(self, record: _ServerRecord, now: float) -> bool:
        if record.ejected_until is None:
            return False
        if now < record.ejected_until:
            return True
        # The ejection is over: the server comes back with a clean streak.
        record.ejected_until = None
        record.consecutive_errors = record.consecutive_gateway = 0
        record.streak_started = None
        return False

    def _count(self, record: _ServerRecord, outcome: Outcome, now: float) -> None:
        second = math.floor(now)
        buckets = record.buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
        buckets[-1][1 if outcome is Outcome.SUCCESS else 2] += 1
        horizon = second - self.settings.window
        while buckets and buckets[0][0] <= horizon:
            buckets.popleft()

    def _stands_out(self, server: str, record: _ServerRecord, now: float) -> bool:
        since = math.floor(record.streak_started if record.streak_started is not None else now)
        own = _failure_rate([record], since)
        others = _failure_rate((r for n, r in self._servers.items() if n != server), since)
        return own - others >= self.settings.stand_out_margin

    def _room_to_eject(self, now: float, pool_size: int) -> bool:
        already = len(self.ejected(now))
        allowed = max(1, math.floor(pool_size * self.settings.max_ejection_percent / 100))
        return already < allowed

    def _eject(self, server: str, record: _ServerRecord, now: float, reason: str) -> Ejection:
        if now - record.last_ejected_at > self.settings.max_ejection_time + self._duration(record):
            record.times_ejected = 0  # quiet long enough: start the back-off over
        record.times_ejected += 1
        until = now + self._duration(record)
        record.ejected_until = until
        record.last_ejected_at = now
        return Ejection(server, until, record.times_ejected, reason)

    def _duration(self, record: _ServerRecord) -> float:
        s = self.settings
        return min(s.base_ejection_time * max(record.times_ejected, 1), s.max_ejection_time)


def _failure_rate(records: Iterable[_ServerRecord], since: int) -> float:
    """The failure share of requests counted in buckets from second `since` on (0 if none)."""
    ok = failed = 0
    for record in records:
        for second, good, bad in record.buckets:
            if second >= since:
                ok += good
                failed += bad
    total = ok + failed
    return failed / total if total else 0.0
