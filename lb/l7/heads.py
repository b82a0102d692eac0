"""What the proxy refuses in a message head, before any of it is forwarded.

Pure checks over the codec's parsed heads (lb.l7.wire); the proxy turns a
verdict into a response (request heads: 400 or 431 and a close) or a failed
attempt (response heads: 502, and the upstream connection is dropped).

The codec already refuses a Transfer-Encoding other than one `chunked`, a
repeated Transfer-Encoding, Content-Length values that differ or are not
digits, two Host fields, no Host in HTTP/1.1, whitespace before a colon, NUL,
bare CR, obs-fold and over-long chunk sizes (lb.l7.wire.bodies.MAX_CHUNK).
It parses, and caslb refuses here:
- a message with both Content-Length and Transfer-Encoding. The codec frames it by
  the latter; a hop that frames by Content-Length instead would read the rest
  of the body as a request of its own that the balancer never routed (CL.TE
  smuggling). RFC 9112 §6.1 lets an intermediary reject it: caslb does, both
  ways;
- Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1: faulty framing);
- HTTP versions other than 1.0 and 1.1 (the codec reads any digit.digit);
- an empty Host, or one that is not a host name or address with an optional
  port (RFC 9112 §3.2: a space or a path in it is a 400);
- control characters in field values (RFC 9110 §5.5), which some servers and
  log pipelines split lines on;
- heads over the field-count or byte limits. The codec bounds only heads that
  are incomplete, so a whole head read at once is measured here; response
  heads get the same limits as requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lb.l7.target import Refusal
from lb.l7.wire.events import UNREAD, Fields, LocalWireError, Request, Response
from lb.l7.wire.parse import CONTROL_CHARS

_VERSIONS = frozenset({b"1.0", b"1.1"})
# uri-host [":" port]: a reg-name (unreserved, sub-delims, pct-encoded) or an IP literal.
_FIELD_VALUE = re.compile(rb"[^\x00\s]+(?:[ \t]+[^\x00\s]+)*")  # as lb.l7.wire.parse reads
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")


@dataclass(frozen=True)
class HeadLimits:
    """How big a head may be.

    Attributes:
        max_bytes: the most bytes of target (or reason) and fields together.
        max_fields: the most header fields.
    """

    max_bytes: int
    max_fields: int


def ambiguous_framing(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a message's framing is ambiguous, or None when it is not.

    Args:
        fields: the header fields, names in any case.
    """
    names = {name.lower() for name, _ in fields}
    if b"content-length" in names and b"transfer-encoding" in names:
        return "both Content-Length and Transfer-Encoding"
    return None


def request_refusal(request: Request, limits: HeadLimits) -> Refusal | None:
    """Why a request head is refused (431 for size, else 400), or None."""
    fields = request.headers
    problem = _size_problem(len(request.target), fields, limits)
    if problem is not None:
        return Refusal(431, problem)
    if request.http_version not in _VERSIONS:
        return Refusal(400, f"HTTP/{request.http_version.decode('ascii', 'replace')} not supported")
    problem = _field_problem(fields)
    if problem is not None:
        return Refusal(400, problem)
    if request.http_version == b"1.0" and any(
        name.lower() == b"transfer-encoding" for name, _ in fields
    ):
        return Refusal(400, "Transfer-Encoding in an HTTP/1.0 request")
    for name, value in fields:
        if name.lower() == b"host" and not _HOST.fullmatch(value.strip()):
            return Refusal(400, "empty Host" if not value.strip() else "malformed Host")
    return None


def forwarded_request(
    method: bytes, target: bytes, fields: Fields, *, parsed: bool, length: int | None = UNREAD
) -> Request:
    """The request head to send upstream.

    `length` is the framing the client's head declared (its `length`): the
    forwarded fields keep its framing fields as they are (lb.l7.headers), so
    they need not be read again.

    `parsed` says every field is one the codec parsed from the client's head
    (names lowercase, values validated) or one caslb derived from those and
    from a value it validated itself; otherwise every value is checked here,
    so that a value caslb made up (a server's FQDN as Host, a client address)
    can never split the head it is written into.

    Raises:
        LocalWireError: a value that is not a field value.
    """
    if not parsed:
        for name, value in fields:
            if value and not valid_field_value(value):
                raise LocalWireError(f"invalid value for {name.decode('ascii', 'replace')}")
    return Request(method, target, fields, length=length)


def valid_field_value(value: bytes) -> bool:
    """Whether `value` is a field value the codec would read back (for values caslb writes)."""
    return _FIELD_VALUE.fullmatch(value) is not None


def response_problem(response: Response, limits: HeadLimits) -> str | None:
    """Why a server's response head cannot be relayed (the client gets 502), or None."""
    fields = response.headers
    problem = _size_problem(len(response.reason), fields, limits)
    if problem is None:
        problem = _field_problem(fields)
    return None if problem is None else f"server sent {problem}"


def _size_problem(
    first_line: int, fields: list[tuple[bytes, bytes]], limits: HeadLimits
) -> str | None:
    if len(fields) > limits.max_fields:
        return f"{len(fields)} header fields, limit {limits.max_fields}"
    size = first_line + sum(len(n) + len(v) + 4 for n, v in fields)
    if size > limits.max_bytes:
        return f"a {size}-byte head, limit {limits.max_bytes}"
    return None


def _field_problem(fields: list[tuple[bytes, bytes]]) -> str | None:
    framing = ambiguous_framing(fields)
    if framing is not None:
        return framing
    # One scan of every value at once (a tab, which joins them, is allowed);
    # the field is looked for only when there is something to name.
    if CONTROL_CHARS.search(b"\t".join([value for _, value in fields])):
        for name, value in fields:
            if CONTROL_CHARS.search(value):
                return f"a control character in {name.decode('ascii', 'replace')}"
    return None
