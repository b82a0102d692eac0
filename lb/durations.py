"""Durations as people write them in configs: "2s", "500ms", "30m", "1h", "1m30s".

Only strings with units are accepted: a bare number is ambiguous (seconds for
HAProxy's `timeout`, milliseconds for its `inter`), so the config makes the unit
explicit everywhere.
"""

from __future__ import annotations

import math
import re

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
