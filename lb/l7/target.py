"""The request target, normalised before routing: route on exactly what is forwarded.

Why. Routing compares the path with virtual directories, but the server
resolves the path itself. If the two read it differently, a route can be
dodged: `/owa/../ecp/` matches `/owa` here and is `/ecp/` to IIS, so leaving
`/ecp` out of the routes would not keep ECP off the frontend. So the target
is normalised once, the route is chosen on the normalised path, and the
normalised target is what goes upstream.

What normalising does (RFC 3986 §6.2.2, §5.2.4):
- percent-encoded unreserved characters (`%65` → `e`) are decoded, other
  percent-encodings are kept with uppercase hex (`%3f` → `%3F`);
- `.` and `..` segments are removed, repeated slashes collapse into one;
- the query string is kept byte for byte and never looked at.

What is refused, because no reading of it is safe:
- an encoded slash, backslash or NUL (`%2F`, `%5C`, `%00`) or a raw backslash:
  servers disagree on whether they separate segments;
- a `..` that would climb above the root, or a dot segment with parameters
  (`..;x`, which some servers treat as `..`);
- bytes outside visible ASCII, a fragment, a malformed percent-encoding;
- targets that are not a path: asterisk-form (`OPTIONS *`, 400), and
  authority-form or CONNECT (405: the balancer is not a tunnel).

Absolute-form (`GET http://mail.contoso.com/owa/ HTTP/1.1`) is accepted as
RFC 9112 §3.2.2 requires: its authority replaces the Host field and the
server receives the origin form.

Routing ignores path parameters: `/ecp;x/` routes on `ecp` (the segment before
`;`), because that is the segment IIS matches; the parameters are forwarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_NEVER_DECODED = frozenset({0x2F, 0x5C, 0x00})  # "/", "\\", NUL
_ABSOLUTE = re.compile(rb"(?i)(https?)://([^/?#]*)(.*)")
_AUTHORITY = re.compile(rb"[A-Za-z0-9.\-\[\]:]+:[0-9]+")
_NOT_VISIBLE = re.compile(rb"[^\x21-\x7e]")  # outside visible ASCII (per byte in C, not Python)


@dataclass(frozen=True)
class Target:
    """A request target after normalisation.

    Attributes:
        path: the normalised path (no query), as forwarded.
        route_path: the path routing looks at: `path` without `;` parameters.
        forward: the target to send upstream (origin form: path and query).
        host: the authority of an absolute-form target (replaces Host), else None.
    """

    path: str
    route_path: str
    forward: bytes
    host: bytes | None = None


@dataclass(frozen=True)
class Refusal:
    """A target the balancer answers itself.

    Attributes:
        status: 400 or 405.
        reason: what was wrong, for the response body and the log.
    """

    status: int
    reason: str


def parse_target(method: bytes, target: bytes) -> Target | Refusal:
    """The normalised form of `target`, or why it is refused."""
    if method.upper() == b"CONNECT":
        return Refusal(405, "CONNECT is not supported")
    if _NOT_VISIBLE.search(target):
        return Refusal(400, "request target has bytes outside visible ASCII")
    if b"#" in target:
        return Refusal(400, "request target has a fragment")
    host: bytes | None = None
    if not target.startswith(b"/"):
        if target == b"*":
            return Refusal(400, "asterisk-form target is not supported")
        absolute = _ABSOLUTE.fullmatch(target)
        if absolute is None:
            if _AUTHORITY.fullmatch(target):
                return Refusal(405, "authority-form target is not supported")
            return Refusal(400, "request target is not a path")
        host, target = absolute.group(2), absolute.group(3) or b"/"
        if not host or b"@" in host:
            return Refusal(400, "absolute-form target has no usable host")
        if not target.startswith((b"/", b"?")):
            return Refusal(400, "request target is not a path")
        if target.startswith(b"?"):
            target = b"/" + target
    raw_path, sep, query = target.partition(b"?")
    path = normalise_path(raw_path)
    if isinstance(path, Refusal):
        return path
    route = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    return Target(path, route, path.encode("ascii") + sep + query, host)


def normalise_path(raw: bytes) -> str | Refusal:
    """`raw` (a path starting with "/") decoded and with dot segments removed."""
    if b"\\" in raw:
        return Refusal(400, "backslash in path")
    decoded = _decode_unreserved(raw)
    if isinstance(decoded, Refusal):
        return decoded
    segments = decoded.split("/")[1:]
    kept: list[str] = []
    for segment in segments:
        name = segment.split(";", 1)[0]
        if name in (".", "..") and name != segment:
            return Refusal(400, f"dot segment with parameters {segment!r}")
        if segment == "..":
            if not kept:
                return Refusal(400, "path climbs above the root")
            kept.pop()
        elif segment not in (".", ""):
            kept.append(segment)
    # A trailing slash, or a final dot segment, leaves the path ending in "/".
    trailing = bool(kept) and segments[-1] in ("", ".", "..")
    return "/" + "/".join(kept) + ("/" if trailing else "")


def _decode_unreserved(raw: bytes) -> str | Refusal:
    if b"%" not in raw:  # most paths: nothing to decode (visible ASCII is checked already)
        return raw.decode("ascii")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte != 0x25:  # "%"
            out.append(byte)
            i += 1
            continue
        pair = raw[i + 1 : i + 3]
        if len(pair) != 2 or not all(c in _HEX for c in pair):
            return Refusal(400, "malformed percent-encoding in path")
        value = int(pair, 16)
        if value in _NEVER_DECODED:
            return Refusal(400, f"encoded %{value:02X} in path")
        if value in _UNRESERVED:
            out.append(value)
        else:
            out += b"%" + pair.upper()
        i += 3
    return out.decode("ascii")
