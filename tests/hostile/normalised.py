"""What a normalised request target looks like, as a backend must receive it.

The balancer routes on the normalised path and forwards that path, so every
target a backend receives is origin-form with: no "." or ".." segment
(RFC 3986 §5.2.4), no empty segment but a trailing one, no "\\", no
percent-encoded unreserved character (§2.3) or slash/backslash, and
uppercase hex in what stays encoded (§6.2.2.1). The query is not looked at.
"""

from __future__ import annotations

import re

_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def normalisation_problems(target: bytes) -> list[str]:
    """Why `target` is not a normalised origin-form target (empty when it is)."""
    path = target.split(b"?", 1)[0]
    if not path.startswith(b"/"):
        return [f"not origin-form: {target[:80]!r}"]
    found = []
    segments = path.split(b"/")[1:]
    if b"" in segments[:-1]:
        found.append("empty segment")
    if any(s in (b".", b"..") for s in segments):
        found.append("dot segment")
    if b"\\" in path:
        found.append("backslash")
    for match in _PERCENT.finditer(path):
        hex_digits = match[1]
        byte = int(hex_digits, 16)
        if byte in _UNRESERVED:
            found.append(f"encoded unreserved {match[0]!r}")
        elif byte in (0x2F, 0x5C):
            found.append(f"encoded separator {match[0]!r}")
        elif hex_digits != hex_digits.upper():
            found.append(f"lowercase hex {match[0]!r}")
    return [f"{p} in {target[:80]!r}" for p in found]
