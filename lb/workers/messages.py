"""The supervisor ⇄ worker protocol: JSON-line messages, snapshots and filters (pure)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lb.app import Balancer
from lb.pool import Pool
from probes.state import AdminState, CheckState

log = logging.getLogger("caslb.workers")

MAX_LINE_BYTES = 8 * 1024 * 1024
METRICS_INTERVAL = 1.0
SNAPSHOT_TIMEOUT = 30.0
CHANNEL_BUFFER = 100_000
Reloader = Callable[[Balancer, Path], Awaitable[None]]
"""`(balancer, path)`: re-read the config at `path` and apply it (`lb.cli.run.apply_reload`)."""



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
class Synced:
    """The end of a snapshot, supervisor → worker."""


@dataclass(frozen=True)
class PassiveReport:
    """A live-traffic outcome, worker → supervisor."""

    pool: str
    server: str
    ok: bool
    reason: str


@dataclass(frozen=True)
class Reloaded:
    """A worker finished a reload and wants a snapshot."""


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


ControlMessage = CheckChange | AdminChange | Synced
WorkerMessage = PassiveReport | Reloaded | MetricsUpdate


def _line(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def encode_control(message: ControlMessage) -> bytes:
    """One supervisor → worker line."""
    if isinstance(message, Synced):
        return _line({"t": "synced"})
    kind = "check" if isinstance(message, CheckChange) else "admin"
    return _line({"t": kind, "pool": message.pool, "server": message.server,
                  "state": message.state.value})


def encode_worker(message: WorkerMessage) -> bytes:
    """One worker → supervisor line."""
    if isinstance(message, PassiveReport):
        return _line({"t": "report", "pool": message.pool, "server": message.server,
                      "ok": message.ok, "reason": message.reason})
    if isinstance(message, Reloaded):
        return _line({"t": "reloaded"})
    return _line({"t": "metrics", "families": [
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


def decode_control(line: bytes) -> ControlMessage:
    """Parse a supervisor → worker line.

    Raises:
        ValueError: naming the bad line, kind, field or state.
    """
    data = _object(line)
    kind = data.get("t")
    if kind == "synced":
        return Synced()
    if kind not in ("check", "admin"):
        raise ValueError(f"unknown control message kind {kind!r}")
    pool, server, state = _text(data, "pool"), _text(data, "server"), _text(data, "state")
    try:
        if kind == "check":
            return CheckChange(pool, server, CheckState(state))
        return AdminChange(pool, server, AdminState(state))
    except ValueError as exc:
        raise ValueError(f"unknown {kind} state {state!r}") from exc


def decode_worker(line: bytes) -> WorkerMessage:
    """Parse a worker → supervisor line.

    Raises:
        ValueError: naming the bad line, kind or field.
    """
    data = _object(line)
    kind = data.get("t")
    if kind == "reloaded":
        return Reloaded()
    if kind == "report":
        ok = data.get("ok")
        if not isinstance(ok, bool):
            raise ValueError(f"field 'ok' must be a boolean, got {ok!r}")
        return PassiveReport(_text(data, "pool"), _text(data, "server"), ok,
                             _text(data, "reason"))
    if kind == "metrics":
        return MetricsUpdate(_families(data.get("families")))
    raise ValueError(f"unknown worker message kind {kind!r}")


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


def snapshot(pools: Mapping[str, Pool]) -> list[ControlMessage]:
    """Every member's check and admin state, then `Synced`."""
    messages: list[ControlMessage] = []
    for pool in pools.values():
        for member in pool.members:
            messages.append(CheckChange(pool.name, member.name, member.check_state))
            messages.append(AdminChange(pool.name, member.name, member.admin))
    messages.append(Synced())
    return messages


def apply_control(pools: Mapping[str, Pool], message: ControlMessage, now: float) -> None:
    """Apply a state change to the worker's pools; unknown pools or servers are ignored.

    The supervisor and a worker can briefly disagree on the config around a
    reload; the snapshot that follows the worker's reload settles it.
    """
    if isinstance(message, Synced):
        return
    pool = pools.get(message.pool)
    if pool is None:
        return
    try:
        if isinstance(message, CheckChange):
            pool.set_check_state(message.server, message.state, now)
        else:
            pool.set_admin(message.server, message.state, now)
    except KeyError:
        log.debug("state for a server not in pool %s: %s", message.pool, message.server)


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

    Args:
        limit: the longest line accepted, in bytes.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines `data` ends (without their newline).

        Raises:
            ValueError: a line grew past the limit.
        """
        self._buffer += data
        *lines, rest = bytes(self._buffer).split(b"\n")
        self._buffer = bytearray(rest)
        if len(self._buffer) > self._limit:
            raise ValueError(f"line longer than {self._limit} bytes")
        return lines


