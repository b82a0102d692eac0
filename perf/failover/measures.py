"""Figures computed from one scenario's raw record. Pure: no I/O, no clock.

Definitions (all times relative to the fault's injection or clearing):

- detection: first balancer reading, after the fault, in which the faulty server
  is no longer chosen for the protocol. None when it never stopped being chosen
  (or, for DNS round robin, when there is no balancer to ask). Readings are
  taken every sampling period, so this is late by at most one period.
- failover: the end of the last client-visible error between the fault and its
  clearing; 0 when clients saw no error at all.
- errors: client-visible errors from the fault to the end of the run.
- faulty_responses: answers from the faulty server to requests begun while the
  fault lasted (seen in X-FEServer or the banner), and faulty_after_detection,
  those begun after the balancer had stopped choosing it.
- faulty_farm_requests: requests the farm itself counted on the faulty server
  between injection and clearing, errors included.
- recovery: clearing -> first reading where it is chosen again (recovery_detect)
  and -> first successful answer from it (recovery_traffic).
- spread: successful answers per server to requests begun after the first
  answer from the recovered server (the slow-start window).
- recovered_share: the recovered server's share of the successful answers to
  requests begun after clearing, to the end of the load; None without any.
  For kept-alive clients it says whether the balancer sends them back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from perf.failover.model import CHOSEN_AS, ChoiceSample, RequestRecord, ScenarioRecord


@dataclass(frozen=True)
class ProtocolFigures:
    """The measures of one (design, fault, protocol)."""

    protocol: str
    requests: int
    baseline_errors: int
    detection: float | None
    failover: float
    errors: int
    error_kinds: dict[str, int]
    faulty_responses: int
    faulty_after_detection: int
    recovery_detect: float | None
    recovery_traffic: float | None
    spread: dict[str, int]
    recovered_share: float | None = None


@dataclass(frozen=True)
class ScenarioFigures:
    """The measures of one (design, fault), per protocol and in total."""

    design: str
    fault: str
    faulty: str
    protocols: tuple[ProtocolFigures, ...]
    faulty_farm_requests: int | None
    sampled: bool = True

    @property
    def errors(self) -> int:
        """Client-visible errors over every protocol."""
        return sum(p.errors for p in self.protocols)

    @property
    def detection(self) -> float | None:
        """The fastest detection over the protocols that detected at all."""
        found = [p.detection for p in self.protocols if p.detection is not None]
        return min(found) if found else None


def first_unchosen(samples: Iterable[ChoiceSample], protocol: str, after: float) -> float | None:
    """When the faulty server was first seen not chosen for `protocol`, or None."""
    protocol = CHOSEN_AS.get(protocol, protocol)
    for s in samples:
        if s.at >= after and not s.chosen.get(protocol, True):
            return s.at
    return None


def first_rechosen(samples: Iterable[ChoiceSample], protocol: str, after: float) -> float | None:
    """When the faulty server was first seen chosen again for `protocol`, or None."""
    protocol = CHOSEN_AS.get(protocol, protocol)
    for s in samples:
        if s.at >= after and s.chosen.get(protocol, False):
            return s.at
    return None


def _since(moment: float | None, origin: float) -> float | None:
    return None if moment is None else round(moment - origin, 3)


def protocol_figures(record: ScenarioRecord, protocol: str) -> ProtocolFigures:
    """Compute every measure of one protocol in one scenario."""
    t = record.timeline
    mine = [r for r in record.requests if r.protocol == protocol]
    before = [r for r in mine if r.finished < t.fault_at]
    after_fault = [r for r in mine if r.finished >= t.fault_at]
    errors = [r for r in after_fault if not r.ok]
    in_fault = [r for r in errors if r.finished < t.clear_at]
    failover = round(max(r.finished for r in in_fault) - t.fault_at, 3) if in_fault else 0.0
    detected_at = first_unchosen(record.samples, protocol, t.fault_at)
    if detected_at is not None and detected_at >= t.clear_at:
        detected_at = None
    faulty = [
        r
        for r in mine
        if r.ok and r.server == record.faulty and t.in_force_at <= r.started < t.clear_at
    ]
    late = [r for r in faulty if detected_at is not None and r.started >= detected_at]
    back_at = first_rechosen(record.samples, protocol, t.clear_at) if detected_at else None
    first_back = _first_answer(mine, record.faulty, t.clear_at)
    spread = Counter(
        r.server for r in mine if r.ok and r.server and first_back and r.started >= first_back
    )
    return ProtocolFigures(
        protocol=protocol,
        requests=len(mine),
        baseline_errors=sum(1 for r in before if not r.ok),
        detection=_since(detected_at, t.fault_at),
        failover=failover,
        errors=len(errors),
        error_kinds=dict(Counter(r.error or "" for r in errors)),
        faulty_responses=len(faulty),
        faulty_after_detection=len(late),
        recovery_detect=_since(back_at, t.clear_at),
        recovery_traffic=_since(first_back, t.clear_at),
        spread={s: spread.get(s, 0) for s in record.servers},
        recovered_share=_share(mine, record.faulty, t.clear_at),
    )


def _share(requests: Iterable[RequestRecord], server: str, after: float) -> float | None:
    answered = [r.server for r in requests if r.ok and r.started >= after]
    return round(answered.count(server) / len(answered), 3) if answered else None


def _first_answer(requests: Iterable[RequestRecord], server: str, after: float) -> float | None:
    starts = [r.started for r in requests if r.ok and r.server == server and r.started >= after]
    return min(starts) if starts else None


def scenario_figures(record: ScenarioRecord) -> ScenarioFigures:
    """Compute the measures of every protocol that carried load in a scenario."""
    protocols = sorted({r.protocol for r in record.requests})
    counts = record.farm_counts
    farm: int | None = None
    if "fault" in counts and "clear" in counts:
        farm = counts["clear"].get(record.faulty, 0) - counts["fault"].get(record.faulty, 0)
    return ScenarioFigures(
        design=record.design,
        fault=record.fault,
        faulty=record.faulty,
        protocols=tuple(protocol_figures(record, p) for p in protocols),
        faulty_farm_requests=farm,
        sampled=bool(record.samples),
    )


def per_second(
    requests: Iterable[RequestRecord], end: float
) -> tuple[dict[str, list[int]], list[int]]:
    """Successful answers per second by server, and failures per second.

    Returns:
        (server -> counts per whole second of finishing time, failures per second).
    """
    # whole seconds only: a partial last second would read as a drop in traffic
    seconds = max(1, round(end))
    ok: dict[str, list[int]] = {}
    failed = [0] * seconds
    for r in requests:
        slot = min(seconds - 1, max(0, int(r.finished)))
        if r.ok:
            ok.setdefault(r.server or "?", [0] * seconds)[slot] += 1
        else:
            failed[slot] += 1
    return ok, failed
