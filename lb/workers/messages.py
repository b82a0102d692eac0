"""The supervisor ⇄ worker protocol: stamped JSON lines and gap detection (pure).

Theory of operation
-------------------
This module is a leaf: it knows the wire format and nothing of pools, apps or
trio, so both ends and the tests share one definition. lb/workers/memberstate.py
turns member states into messages and back; lb/workers/lines.py moves the bytes.

Every line is one JSON object with `t` (the kind), `seq` and `cfg`:

- `seq` counts the sender's lines on one pipe from 1. A sender consumes a
  number even for a line it then fails to queue, so a dropped line leaves a
  gap the receiver sees (`GapDetector`). A worker that sees one asks for a
  snapshot (`Resync`); the supervisor also sends one every `SNAPSHOT_INTERVAL`
  unasked, so even a lost request heals. A worker's own lines are reports
  (the next failure reports again) and metrics (cumulative, sent every
  `METRICS_INTERVAL`), so the supervisor only logs a gap and waits.
- `cfg` is `config_hash` of the config the sender runs. The supervisor keeps
  the last hash each worker sent (lb/workers/agreement.py) and says in the log
  whether every worker runs the supervisor's config after a reload.

A `Snapshot` is one line holding every member's check and admin state, and
every outlier ejection in force, so it is applied whole or not at all.
Ejections travel as seconds left, never as times: each process has its own
clock. What a worker chooses to send is lb/workers/filters.py's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from probes.outlier import Outcome
from probes.state import AdminState, CheckState

MAX_LINE_BYTES = 8 * 1024 * 1024
METRICS_INTERVAL = 1.0
SNAPSHOT_INTERVAL = 5.0
SNAPSHOT_TIMEOUT = 30.0
CHANNEL_BUFFER = 100_000


def config_hash(config: object) -> str:
    """A short digest naming a config: equal configs give equal hashes.

    The config tree is frozen dataclasses, tuples and mappings in file order,
    whose repr holds no addresses, so the same file parsed by the same code in
    two processes gives the same text.
    """
    return hashlib.sha256(repr(config).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stamp:
    """What every line carries besides its message: its place and the sender's config."""

    seq: int
    config: str


class Sequencer:
    """Stamps one sender's lines on one pipe: 1, 2, 3, ... and the config it runs.

    Args:
        config: the `config_hash` the sender runs; `config` is updated after a reload.
    """

    def __init__(self, config: str) -> None:
        self.config = config
        self._last = 0

    def next(self) -> Stamp:
        """The stamp of the next line (its number is used even if the line is dropped)."""
        self._last += 1
        return Stamp(self._last, self.config)


class GapDetector:
    """Notices lines that never arrived, from the sequence numbers of those that did."""

    def __init__(self) -> None:
        self._last = 0

    def missing(self, seq: int) -> int:
        """How many lines were lost just before the line numbered `seq` (0: none).

        A number at or below the last one means the sender started again
        (a new process): counting restarts there, nothing is missing.
        """
        lost = max(0, seq - self._last - 1) if seq > self._last else 0
        self._last = seq
        return lost


@dataclass(frozen=True)
class CheckChange:
    """A member's check state, supervisor → worker."""

    pool: str
    server: str
    state: CheckState


@dataclass(frozen=True)
class AdminChange:
    """A member's admin state, supervisor → worker."""

    pool: str
    server: str
    state: AdminState


@dataclass(frozen=True)
class MemberState:
    """One member's states inside a `Snapshot`."""

    pool: str
    server: str
    check: CheckState
    admin: AdminState


@dataclass(frozen=True)
class EjectionChange:
    """A member's outlier ejection, supervisor → worker: `seconds` more, or None: lifted."""

    pool: str
    server: str
    seconds: float | None


@dataclass(frozen=True)
class Snapshot:
    """Every member's states, supervisor → worker: at start, on request, and periodically."""

    members: tuple[MemberState, ...]
    ejections: tuple[EjectionChange, ...] = ()


@dataclass(frozen=True)
class OutlierOutcome:
    """An L7 attempt's outcome for the pool's outlier detection, worker → supervisor.

    `client` is None when no client's request caused it (a connect failure);
    `count` > 1 only for a batch of successes.
    """

    pool: str
    server: str
    outcome: Outcome
    client: str | None
    count: int = 1


@dataclass(frozen=True)
class PassiveReport:
    """A live-traffic outcome, worker → supervisor."""

    pool: str
    server: str
    ok: bool
    reason: str


@dataclass(frozen=True)
class Reloaded:
    """A worker finished a reload and wants a snapshot (its stamp names its new config)."""


@dataclass(frozen=True)
class Resync:
    """A worker saw `missing` lines lost and wants a snapshot."""

    missing: int


SampleKey = tuple[str, tuple[tuple[str, str], ...]]
"""(sample name, sorted label pairs)."""


@dataclass(frozen=True)
class Family:
    """The samples of one metric family from one worker."""

    type: str
    samples: Mapping[SampleKey, float]


@dataclass(frozen=True)
class MetricsUpdate:
    """A worker's traffic samples by family name, worker → supervisor."""

    families: Mapping[str, Family]


ControlMessage = CheckChange | AdminChange | EjectionChange | Snapshot
WorkerMessage = PassiveReport | OutlierOutcome | Reloaded | Resync | MetricsUpdate


def _line(kind: str, stamp: Stamp, body: Mapping[str, Any]) -> bytes:
    data = {"t": kind, "seq": stamp.seq, "cfg": stamp.config, **body}
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def encode_control(message: ControlMessage, stamp: Stamp) -> bytes:
    """One supervisor → worker line."""
    if isinstance(message, Snapshot):
        return _line("snapshot", stamp, {"members": [
            [m.pool, m.server, m.check.value, m.admin.value] for m in message.members
        ], "ejections": [[e.pool, e.server, e.seconds] for e in message.ejections]})
    if isinstance(message, EjectionChange):
        return _line("eject", stamp, {"pool": message.pool, "server": message.server,
                                      "for": message.seconds})
    kind = "check" if isinstance(message, CheckChange) else "admin"
    return _line(kind, stamp, {"pool": message.pool, "server": message.server,
                               "state": message.state.value})


def encode_worker(message: WorkerMessage, stamp: Stamp) -> bytes:
    """One worker → supervisor line."""
    if isinstance(message, PassiveReport):
        return _line("report", stamp, {"pool": message.pool, "server": message.server,
                                       "ok": message.ok, "reason": message.reason})
    if isinstance(message, OutlierOutcome):
        return _line("outcome", stamp, {"pool": message.pool, "server": message.server,
                                        "outcome": message.outcome.value,
                                        "client": message.client, "n": message.count})
    if isinstance(message, Reloaded):
        return _line("reloaded", stamp, {})
    if isinstance(message, Resync):
        return _line("resync", stamp, {"missing": message.missing})
    return _line("metrics", stamp, {"families": [
        [name, family.type, [[sample, dict(labels), value]
                             for (sample, labels), value in family.samples.items()]]
        for name, family in message.families.items()
    ]})


def _object(line: bytes) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON line: {line[:80]!r}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object: {line[:80]!r}")
    return data


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {value!r}")
    return value


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"field {key!r} must be a count, got {value!r}")
    return value


def _stamp(data: Mapping[str, Any]) -> Stamp:
    return Stamp(_count(data, "seq"), _text(data, "cfg"))


def _state(kind: str, enum: type[CheckState] | type[AdminState], value: Any) -> Any:
    try:
        return enum(value)
    except ValueError as exc:
        raise ValueError(f"unknown {kind} state {value!r}") from exc


def decode_control(line: bytes) -> tuple[Stamp, ControlMessage]:
    """Parse a supervisor → worker line.

    Raises:
        ValueError: naming the bad line, kind, field or state.
    """
    data = _object(line)
    kind = data.get("t")
    if kind not in ("check", "admin", "eject", "snapshot"):
        raise ValueError(f"unknown control message kind {kind!r}")
    stamp = _stamp(data)
    if kind == "snapshot":
        ejections = tuple(_ejection(e) for e in _list(data.get("ejections", []), "ejections"))
        return stamp, Snapshot(_members(data.get("members")), ejections)
    if kind == "eject":
        return stamp, _ejection([data.get("pool"), data.get("server"), data.get("for")])
    pool, server, state = _text(data, "pool"), _text(data, "server"), _text(data, "state")
    if kind == "check":
        return stamp, CheckChange(pool, server, _state(kind, CheckState, state))
    return stamp, AdminChange(pool, server, _state(kind, AdminState, state))


def _list(raw: Any, key: str) -> list[Any]:
    if not isinstance(raw, list):
        raise ValueError(f"field {key!r} must be a list, got {type(raw).__name__}")
    return raw


def _ejection(entry: Any) -> EjectionChange:
    ok = isinstance(entry, list) and len(entry) == 3 and all(isinstance(v, str) for v in entry[:2])
    seconds = entry[2] if ok else None
    if not ok or not (seconds is None or (isinstance(seconds, int | float)
                                          and not isinstance(seconds, bool) and seconds >= 0)):
        raise ValueError(f"malformed ejection {entry!r}")
    return EjectionChange(entry[0], entry[1], None if seconds is None else float(seconds))


def _members(raw: Any) -> tuple[MemberState, ...]:
    members = []
    for entry in _list(raw, "members"):
        if not (isinstance(entry, list) and len(entry) == 4
                and all(isinstance(v, str) for v in entry)):
            raise ValueError(f"malformed snapshot member {entry!r}")
        pool, server, check, admin = entry
        members.append(MemberState(pool, server, _state("check", CheckState, check),
                                   _state("admin", AdminState, admin)))
    return tuple(members)


def decode_worker(line: bytes) -> tuple[Stamp, WorkerMessage]:
    """Parse a worker → supervisor line.

    Raises:
        ValueError: naming the bad line, kind or field.
    """
    data = _object(line)
    kind = data.get("t")
    if kind not in ("reloaded", "resync", "report", "outcome", "metrics"):
        raise ValueError(f"unknown worker message kind {kind!r}")
    stamp = _stamp(data)
    if kind == "reloaded":
        return stamp, Reloaded()
    if kind == "resync":
        return stamp, Resync(_count(data, "missing"))
    if kind == "report":
        ok = data.get("ok")
        if not isinstance(ok, bool):
            raise ValueError(f"field 'ok' must be a boolean, got {ok!r}")
        return stamp, PassiveReport(_text(data, "pool"), _text(data, "server"), ok,
                                    _text(data, "reason"))
    if kind == "outcome":
        return stamp, _outcome(data)
    return stamp, MetricsUpdate(_families(data.get("families")))


def _outcome(data: Mapping[str, Any]) -> OutlierOutcome:
    client = data.get("client")
    if client is not None and not isinstance(client, str):
        raise ValueError(f"field 'client' must be a string or null, got {client!r}")
    try:
        outcome = Outcome(data.get("outcome"))
    except ValueError as exc:
        raise ValueError(f"unknown outcome {data.get('outcome')!r}") from exc
    count = _count(data, "n")
    if count < 1 or (count > 1 and outcome is not Outcome.SUCCESS):
        raise ValueError(f"bad count {count!r} of {outcome.value}")
    return OutlierOutcome(_text(data, "pool"), _text(data, "server"), outcome, client, count)


def _families(raw: Any) -> dict[str, Family]:
    if not isinstance(raw, list):
        raise ValueError(f"field 'families' must be a list, got {type(raw).__name__}")
    families: dict[str, Family] = {}
    try:
        for name, kind, samples in raw:
            parsed: dict[SampleKey, float] = {}
            for sample, labels, value in samples:
                key = (str(sample), tuple(sorted((str(k), str(v)) for k, v in labels.items())))
                parsed[key] = float(value)
            families[str(name)] = Family(str(kind), parsed)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed metrics family in {str(raw)[:80]!r}") from exc
    return families
