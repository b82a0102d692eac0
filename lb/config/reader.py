"""Typed reads from TOML tables, and the value syntaxes a config writes.

A `Table` wraps a mapping at a key path (e.g. "pools.ews.check"). Each read
either returns a validated value or records "path.key: problem" and returns the
default, so one pass over a config reports every mistake at once instead of
stopping at the first. `finish()` reports the keys nobody read: unknown keys
are errors, which catches typos such as `fal = 3`.

Durations are strings with units ("2s", "500ms", "30m", "1h", "1m30s"): a bare
number is ambiguous (seconds for HAProxy's `timeout`, milliseconds for its
`inter`), so the config makes the unit explicit everywhere. Addresses are
"host[:port]" or "[v6]:port"; file names are relative to the config's directory.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")

Errors = list[tuple[str, str]]


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def join(path: str, key: str | int) -> str:
    """The key path of `key` inside `path` ("pools.ews" + "check" → "pools.ews.check").

    Array indexes are written `[0]`; keys TOML would quote ("owa.mail.local",
    "/owa") are quoted, as the user wrote them.
    """
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _BARE_KEY.fullmatch(key):
        key = show(key)
    return f"{path}.{key}" if path else key


def show(value: object) -> str:
    """A value as the error message quotes it: TOML-like, strings in double quotes."""
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class Table:
    """Reads of one table; see the module docstring.

    Args:
        data: the table as tomllib parsed it.
        path: its key path, "" for the document root.
        errors: the shared list every problem is appended to.
    """

    def __init__(self, data: Mapping[str, Any], path: str, errors: Errors) -> None:
        self.data = data
        self.path = path
        self.errors = errors
        self._seen: set[str] = set()

    def error(self, key: str | int | None, problem: str) -> None:
        """Record a problem with `key` (None: with the table itself)."""
        self.errors.append((self.path if key is None else join(self.path, key), problem))

    def has(self, key: str) -> bool:
        """Whether the table sets `key` (marks it as known)."""
        self._seen.add(key)
        return key in self.data

    def raw(self, key: str) -> Any:
        """The value of `key` unchecked, None when absent (marks it as known)."""
        self._seen.add(key)
        return self.data.get(key)

    def ignore(self, *keys: str) -> None:
        """Mark keys as known without reading them (handled elsewhere)."""
        self._seen.update(keys)

    def finish(self) -> None:
        """Report every key that no read asked for."""
        for key in self.data:
            if key not in self._seen:
                self.error(key, "unknown key")

    def _get(self, key: str, default: T, required: bool) -> tuple[bool, Any]:
        self._seen.add(key)
        if key not in self.data:
            if required:
                self.error(key, "is required")
            return False, default
        return True, self.data[key]

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        """A non-empty string."""
        present, value = self._get(key, default, required)
        if not present:
            return default
        if not isinstance(value, str) or not value.strip():
            self.error(key, f"must be a non-empty string, got {show(value)}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """true or false."""
        present, value = self._get(key, default, False)
        if present and not isinstance(value, bool):
            self.error(key, f"must be true or false, got {show(value)}")
            return default
        return bool(value)

    def integer(
        self, key: str, default: Any, *, low: int, high: int | None = None, required: bool = False
    ) -> Any:
        """An integer in [low, high]."""
        present, value = self._get(key, default, required)
        if not present:
            return default
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or value < low or (high is not None and value > high):
            bound = f"≥ {low}" if high is None else f"from {low} to {high}"
            self.error(key, f"must be an integer {bound}, got {show(value)}")
            return default
        return value

    def fraction(self, key: str, default: float) -> float:
        """A number in [0, 1]."""
        present, value = self._get(key, default, False)
        if not present:
            return default
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not 0 <= value <= 1:
            self.error(key, f"must be a number from 0 to 1, got {show(value)}")
            return default
        return float(value)

    def duration(
        self, key: str, default: Any, *, positive: bool = False, required: bool = False
    ) -> Any:
        """A duration string in seconds (see parse_duration); `positive` rejects 0."""
        present, value = self._get(key, default, required)
        if not present:
            return default
        if not isinstance(value, str):
            self.error(key, f'must be a duration like "2s" or "500ms", got {show(value)}')
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(key, str(exc))
            return default
        if positive and seconds <= 0:
            self.error(key, f"must be longer than 0s, got {show(value)}")
            return default
        return seconds

    def choice(self, key: str, kind: type[E], default: Any) -> Any:
        """One of an enum's values, by its string value."""
        present, value = self._get(key, default, False)
        if not present:
            return default
        for member in kind:
            if member.value == value:
                return member
        allowed = ", ".join(f'"{m.value}"' for m in kind)
        self.error(key, f"must be one of {allowed}, got {show(value)}")
        return default

    def table(self, key: str, *, required: bool = False) -> Table | None:
        """A sub-table, or None when absent or not a table."""
        present, value = self._get(key, None, required)
        if not present:
            return None
        if not isinstance(value, Mapping):
            self.error(key, f"must be a table, got {show(value)}")
            return None
        return Table(value, join(self.path, key), self.errors)

    def tables(self, key: str) -> Iterator[tuple[str, Table]]:
        """The named sub-tables of table `key` ([pools.NAME] style)."""
        outer = self.table(key)
        if outer is None:
            return
        for name in list(outer.data):
            inner = outer.table(name)
            if inner is not None:
                yield name, inner

    def array(self, key: str, *, required: bool = False) -> list[Any] | None:
        """An array, or None when absent or not an array."""
        present, value = self._get(key, None, required)
        if not present:
            return None
        if not isinstance(value, list):
            self.error(key, f"must be an array, got {show(value)}")
            return None
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        """A string or an array of non-empty strings, as a tuple."""
        present, value = self._get(key, None, False)
        if not present:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
            self.error(key, f"must be a string or an array of strings, got {show(value)}")
            return None
        return tuple(items)


_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a duration string into seconds.

    Args:
        text: one or more `<number><unit>` parts, units ms, s, m or h, e.g. "1m30s".

    Returns:
        The duration in seconds (finite and ≥ 0).

    Raises:
        ValueError: naming the bad text when it is not a duration.
    """
    compact = text.strip()
    pos = 0
    total = 0.0
    for match in _PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(compact) or not math.isfinite(total):
        raise ValueError(f'must be a duration like "2s", "500ms", "30m" or "1h", got {text!r}')
    return total


def format_duration(seconds: float) -> str:
    """Render seconds the way a person would write them back in a config.

    Whole hours, minutes and seconds use the largest exact unit ("90s" stays
    "90s", "1800s" becomes "30m"); anything below a second or fractional is
    given in milliseconds or as decimal seconds.
    """
    if seconds == 0:
        return "0s"
    millis = round(seconds * 1000)
    if abs(seconds * 1000 - millis) < 1e-6:
        for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if millis % size == 0:
                return f"{millis // size}{unit}"
        if millis < 1000:
            return f"{millis}ms"
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


def parse_address(text: str, *, default_port: int | None = None) -> tuple[str, int | None]:
    """Split "host:port", "[v6]:port" or a bare host.

    Raises:
        ValueError: naming the text when the port is not 1..65535 or the host empty.
    """
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ValueError(f"not a host[:port] address: {text!r}")
        port_text = rest[1:] or None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"not a host[:port] address: {text!r}")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 1 to 65535 in {text!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether a bind host is on loopback (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_address(
    table: Table, key: str, default: str | None = None, *, required: bool = False
) -> tuple[str, str, int | None] | None:
    """A "host[:port]" string setting as (text, host, port); None when absent or malformed.

    A malformed address is reported on `key`; callers word their own port rules with `text`.
    """
    text = table.string(key, default, required=required)
    if text is None:
        return None
    try:
        host, port = parse_address(text)
    except ValueError as exc:
        table.error(key, str(exc))
        return None
    return text, host, port


def read_bind(table: Table, key: str, default: str | None) -> tuple[str, int] | None:
    """A required-port "host:port" listen address."""
    address = read_address(table, key, default, required=default is None)
    if address is None:
        return None
    text, host, port = address
    if port is None:
        table.error(key, f"needs a port (host:port), got {show(text)}")
        return None
    return host, port


def resolve_file(name: str, base_dir: Path | None) -> str:
    """A file name from the config, relative ones against the config's directory."""
    path = Path(name).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return str(path)
