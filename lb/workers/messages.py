"""The supervisor ⇄ worker protocol: stamped JSON lines, gap detection and filters (pure).

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

A `Snapshot` is one line holding every member's check and admin state, so it
is applied whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
class Snapshot:
    """Every member's states, supervisor → worker: at start, on request, and periodically."""

    members: tuple[MemberState, ...]


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


ControlMessage = CheckChange | AdminChange | Snapshot
WorkerMessage = PassiveReport | Reloaded | Resync | MetricsUpdate


def _line(kind: str, stamp: Stamp, body: Mapping[str, Any]) -> bytes:
    data = {"t": kind, "seq": stamp.seq, "cfg": stamp.config, **body}
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def encode_control(message: ControlMessage, stamp: Stamp) -> bytes:
    """One supervisor → worker line."""
    if isinstance(message, Snapshot):
        return _line("snapshot", stamp, {"members": [
            [m.pool, m.server, m.check.value, m.admin.value] for m in message.members
        ]})
    kind = "check" if isinstance(message, CheckChange) else "admin"
    return _line(kind, stamp, {"pool": message.pool, "server": message.server,
                               "state": message.state.value})


def encode_worker(message: WorkerMessage, stamp: Stamp) -> bytes:
    """One worker → supervisor line."""
    if isinstance(message, PassiveReport):
        return _line("report", stamp, {"pool": message.pool, "server": message.server,
                                       "ok": message.ok, "reason": message.reason})
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
    if kind not in ("check", "admin", "snapshot"):
        raise ValueError(f"unknown control message kind {kind!r}")
    stamp = _stamp(data)
    if kind == "snapshot":
        return stamp, Snapshot(_members(data.get("members")))
    pool, server, state = _text(data, "pool"), _text(data, "server"), _text(data, "state")
    if kind == "check":
        return stamp, CheckChange(pool, server, _state(kind, CheckState, state))
    return stamp, AdminChange(pool, server, _state(kind, AdminState, state))


def _members(raw: Any) -> tuple[MemberState, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"field 'members' must be a list, got {type(raw).__name__}")
    members = []
    for entry in raw:
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
    if kind not in ("reloaded", "resync", "report", "metrics"):
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
    return stamp, MetricsUpdate(_families(data.get("families")))


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


class ReportFilter:
    """Which passive outcomes a worker sends: failures, and the first success after one."""

    def __init__(self) -> None:
        self._failing: set[tuple[str, str]] = set()

    def should_send(self, pool: str, server: str, ok: bool) -> bool:
        """True when this outcome must go to the supervisor."""
        key = (pool, server)
        if not ok:
            self._failing.add(key)
            return True
        if key in self._failing:
            self._failing.discard(key)
            return True
        return False


class LineSplitter:
    """Cuts a byte stream into lines.

    The unread tail stays in one bytearray with a read offset: each feed scans
    only the new bytes for newlines, and the consumed head is dropped once it
    is more than half the buffer, so a long line arriving in many reads costs
    linear time, not quadratic.

    Args:
        limit: the longest line accepted, in bytes.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._start = 0  # where the first unfinished line begins

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines `data` ends (without their newline).

        Raises:
            ValueError: a line grew past the limit.
        """
        scan = len(self._buffer)
        self._buffer += data
        lines = []
        while (end := self._buffer.find(b"\n", scan)) >= 0:
            lines.append(bytes(self._buffer[self._start:end]))
            self._start = scan = end + 1
        if self._start > len(self._buffer) // 2:
            del self._buffer[:self._start]
            self._start = 0
        if len(self._buffer) - self._start > self._limit:
            raise ValueError(f"line longer than {self._limit} bytes")
        return lines
