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
  quiet `max_ejection_time` with no new ejection. `lift` ends one early (the
  owner calls it when the active check saw the server come back UP).
* One client alone cannot eject a server: the failures of the streak must come
  from at least `min_clients` distinct client addresses. One client's broken
  requests (a bad EWS call answered with a SOAP fault, a search that times
  out) fail on every server alike, and must not take a healthy one out. Two
  exceptions keep a server that fails everyone out as fast as before: a
  failure no client's request caused (a connect failure, recorded with
  `client=None`) counts as everyone's; and a pool that has only ever seen one
  client (a test rig, a single reverse proxy in front) has no second client
  to wait for, unless `lone_client_5xx` is off, in which case plain 5xx (not
  gateway failures) always need `min_clients` clients: see `for_protocol`.

Outcomes are counted in one-second buckets kept for `window` seconds, so memory
per server is bounded whatever the request rate. The detector is pure: it does
no I/O and reads no clock; every call takes `now`.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace


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
        min_clients: distinct clients whose requests must fail in a streak
            before it ejects (1 turns the rule off).
        lone_client_5xx: whether a pool that has only ever seen one client
            may eject on that client's plain 5xx alone.
    """

    consecutive_errors: int = 5
    consecutive_gateway_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 10.0
    stand_out_margin: float = 0.5
    window: float = 10.0
    min_clients: int = 2
    lone_client_5xx: bool = True

    def __post_init__(self) -> None:
        for name in ("consecutive_errors", "consecutive_gateway_failures", "min_clients"):
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

EJECTION_RULES = ("consecutive_errors", "consecutive_gateway_failures")
"""Every `Ejection.reason`: the rules that can fire."""


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
    # Distinct clients of the streak's failures, at most `min_clients` kept.
    clients: set[str] = field(default_factory=set)
    unattributed: bool = False  # a failure of the streak no client caused
    server_errors: bool = False  # the streak holds a plain 5xx


# Protocols whose servers answer a client's bad request with a 500: EWS returns
# every SOAP fault (a malformed request, a missing item, a throttled caller)
# as HTTP 500, so a 500 from EWS says little about the server by itself.
SOAP_FAULT_PROTOCOLS = frozenset({"ews"})


def for_protocol(settings: OutlierSettings, protocol: str | None) -> OutlierSettings:
    """The settings a pool serving `protocol` runs with.

    For a SOAP-fault protocol, plain 5xx eject only when at least `min_clients`
    clients saw them, even in a pool that has seen one client so far: one
    client's faulting calls must never eject; gateway failures (a connect
    failure, reset, timeout, 502/503/504) still count as for any protocol, so
    a crashed or hung EWS server leaves as fast as any other.
    """
    if protocol is not None and protocol.lower() in SOAP_FAULT_PROTOCOLS:
        return replace(settings, lone_client_5xx=False)
    return settings


class OutlierDetector:
    """Outlier detection for the servers of one pool.

    Args:
        settings: the detector's knobs.
    """

    def __init__(self, settings: OutlierSettings | None = None) -> None:
        self.settings = settings or OutlierSettings()
        self._servers: dict[str, _ServerRecord] = {}
        self._first_client: str | None = None
        self._many_clients = False  # a second distinct client was ever seen

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

    def ejection_end(self, server: str) -> float | None:
        """When `server`'s current or last ejection ends, None if it was never ejected."""
        record = self._servers.get(server)
        return None if record is None else record.ejected_until

    def lift(self, server: str) -> bool:
        """End `server`'s ejection now, with a clean streak; whether it was ejected.

        The back-off multiplier is kept: a server that keeps failing its real
        requests after each recovery is ejected for longer each time.
        """
        record = self._servers.get(server)
        if record is None or record.ejected_until is None:
            return False
        record.ejected_until = None
        _clear_streak(record)
        return True

    def forget(self, server: str) -> None:
        """Drop everything known about `server` (it left the pool)."""
        self._servers.pop(server, None)

    def record(
        self,
        server: str,
        outcome: Outcome,
        now: float,
        *,
        pool_size: int,
        client: str | None = None,
        count: int = 1,
    ) -> Ejection | None:
        """Count one request outcome; return an ejection if this one triggers it.

        Args:
            server: the server the request went to.
            outcome: how it ended.
            now: the current time (any monotonic clock, in seconds).
            pool_size: how many servers the pool has, to apply max_ejection_percent.
            client: the address of the client whose request it was; None when
                no client's request could have caused it (a connect failure).
            count: how many such outcomes at once (a batch of successes that a
                worker process sends as one line); failures come one by one.
        """
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size!r}")
        if count < 1 or (count > 1 and outcome is not Outcome.SUCCESS):
            raise ValueError(f"only successes come in batches, not {count!r} x {outcome.value}")
        record = self._servers.setdefault(server, _ServerRecord())
        self._count(record, outcome, now, count)
        self._see_client(client)
        if outcome is Outcome.SUCCESS:
            _clear_streak(record)
            return None
        if record.streak_started is None:
            record.streak_started = now
        record.consecutive_errors += 1
        if outcome is Outcome.GATEWAY_FAILURE:
            record.consecutive_gateway += 1
        else:
            record.consecutive_gateway = 0
            record.server_errors = True
        if client is None:
            record.unattributed = True
        elif len(record.clients) < self.settings.min_clients:
            record.clients.add(client)
        reason = self._tripped_rule(record)
        if reason is None or self._still_ejected(record, now):
            return None
        if not self._enough_clients(record, reason):
            return None
        if not self._stands_out(server, record, now) or not self._room_to_eject(now, pool_size):
            return None
        return self._eject(server, record, now, reason)

    def _see_client(self, client: str | None) -> None:
        if client is None or self._many_clients:
            return
        if self._first_client is None:
            self._first_client = client
        elif client != self._first_client:
            self._many_clients = True

    def _enough_clients(self, record: _ServerRecord, reason: str) -> bool:
        if record.unattributed or len(record.clients) >= self.settings.min_clients:
            return True
        if self._many_clients:
            return False
        # Only one client ever: waiting for a second would never end.
        plain_5xx = reason == "consecutive_errors" and record.server_errors
        return self.settings.lone_client_5xx or not plain_5xx

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
        _clear_streak(record)
        return False

    def _count(self, record: _ServerRecord, outcome: Outcome, now: float, count: int) -> None:
        second = math.floor(now)
        buckets = record.buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
        buckets[-1][1 if outcome is Outcome.SUCCESS else 2] += count
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


def _clear_streak(record: _ServerRecord) -> None:
    record.consecutive_errors = record.consecutive_gateway = 0
    record.streak_started = None
    record.clients.clear()
    record.unattributed = record.server_errors = False


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
