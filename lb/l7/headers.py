"""Header rules for a forwarding proxy: hop-by-hop stripping and X-Forwarded-*.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message,
so a proxy must not forward them: `Connection` and every header it names,
`Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer` and `Upgrade`.
`Transfer-Encoding` is kept on purpose: the codec (lb.l7.wire) decodes the
framing on the way in and re-frames on the way out, and it needs the header to
know a request body is chunked. `Content-Length` is kept for the same reason.

Header names arrive from the codec already lowercased; values are bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lowercased header names listed in every `Connection` header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def strip_hop_by_hop(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """`headers` without the hop-by-hop ones (including those `Connection` names).

    The framing headers Content-Length and Transfer-Encoding survive even if a
    `Connection` header names them: dropping them would change the framing.
    """
    tokens = connection_tokens(headers)
    # Most requests name nothing but keep-alive/close: skip building a set per request.
    drop = (HOP_BY_HOP | tokens) - _FRAMING if tokens - HOP_BY_HOP else HOP_BY_HOP
    return [(n, v) for n, v in headers if n not in drop]


def forwarded_request_headers(
    headers: Sequence[tuple[bytes, bytes]], *, client_ip: str, scheme: str,
    keep_chain: bool = False,
) -> Headers:
    """The headers to send upstream for a client request.

    Sets `X-Forwarded-For` to the client (appended to the chain it sent only
    when `keep_chain`, i.e. the client is a trusted proxy), `X-Forwarded-Proto`
    to `scheme` and `X-Forwarded-Host` to the request's Host.

    Args:
        headers: the request's headers as the codec parsed them.
        client_ip: the client's address as the balancer saw it.
        scheme: "https" when the balancer terminated TLS, else "http".
        keep_chain: the client is a proxy whose X-Forwarded-For is believed.
    """
    out: Headers = []
    prior_for: list[bytes] = []
    host: bytes | None = None
    for name, value in strip_hop_by_hop(headers):
        if name == b"x-forwarded-for":
            if keep_chain:
                prior_for.append(value.strip())
        elif name in (b"x-forwarded-proto", b"x-forwarded-host"):
            continue  # ours replace whatever the client claimed
        else:
            if name == b"host" and host is None:
                host = value
            out.append((name, value))
    chain = b", ".join([*(p for p in prior_for if p), client_ip.encode("ascii")])
    out.append((b"x-forwarded-for", chain))
    out.append((b"x-forwarded-proto", scheme.encode("ascii")))
    if host is not None:
        out.append((b"x-forwarded-host", host))
    return out


def forwarded_response_headers(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The headers to send to the client for an upstream response."""
    return strip_hop_by_hop(headers)


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header `name` (lowercase), or None."""
    for n, v in headers:
        if n == name:
            return v
    return None


def declares_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's headers announce a body (non-zero length or chunked)."""
    for name, value in headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() not in (b"0", b""):
            return True
    return False
