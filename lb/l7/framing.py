"""Message framing an intermediary must refuse (RFC 9112 §6.1, §6.3, §11.2).

h11 already refuses a Transfer-Encoding other than one `chunked`, a repeated
Transfer-Encoding, and Content-Length values that differ or are not digits. It
accepts a message that carries both Content-Length and Transfer-Encoding,
frames it by the latter, and keeps both fields. Forwarded as is, a hop that
frames by Content-Length instead reads the rest of the body as a request of
its own that the balancer never routed (CL.TE smuggling). RFC 9112 §6.1 lets
an intermediary reject such a message; caslb always does, in both directions,
so a smuggled request never reaches a server and a server's ambiguous
response never reaches a client.
"""

from __future__ import annotations

from collections.abc import Iterable


def ambiguous_framing(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a message's framing is ambiguous, or None when it is not.

    Args:
        fields: the header fields, names in any case (h11's `raw_items()`).
    """
    names = {name.lower() for name, _ in fields}
    if b"content-length" in names and b"transfer-encoding" in names:
        return "both Content-Length and Transfer-Encoding"
    return None
