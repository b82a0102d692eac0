"""Canned responses the balancer writes itself, as codec events (lb.l7.wire).

Every error the proxy answers on its own (bad request, header timeout, no
server, upstream failure) is a short plain-text body that names what went
wrong, with `Connection: close` when the connection cannot go on.
"""

from __future__ import annotations

from http import HTTPStatus

from lb.l7.wire.events import Data, EndOfMessage, Response

ErrorEvents = tuple[Response, Data, EndOfMessage]


def error_response(status: int, detail: str, *, close: bool = False) -> ErrorEvents:
    """The events of an error response with a one-line body.

    Args:
        status: the HTTP status (4xx or 5xx).
        detail: the body text, e.g. "no server available in pool 'ews'".
        close: add `Connection: close` (the caller then closes the connection).

    Raises:
        ValueError: for a status outside 400..599.
    """
    if not 400 <= status <= 599:
        raise ValueError(f"error status must be within 400..599, not {status!r}")
    body = (detail.rstrip("\n") + "\n").encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    if close:
        headers.append((b"connection", b"close"))
    try:
        reason = HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        reason = b""
    return Response(status, headers, reason), Data(body), EndOfMessage()


def bad_request(detail: str) -> ErrorEvents:
    """400 for a malformed request; the connection closes."""
    return error_response(400, f"bad request: {detail}", close=True)


def refused(status: int, detail: str) -> ErrorEvents:
    """The balancer's own refusal of a request head (400, 405 or 431); the connection closes."""
    if status == 431:
        return headers_too_large(detail)
    if status == 405:
        return error_response(405, f"method not allowed: {detail}", close=True)
    return bad_request(detail)


def request_timeout() -> ErrorEvents:
    """408 for a client too slow to send its request head; the connection closes."""
    return error_response(408, "request header timeout", close=True)


def headers_too_large(detail: str) -> ErrorEvents:
    """431 for a request head over the size or count limit; the connection closes."""
    return error_response(431, f"request header fields too large: {detail}", close=True)


def no_route(path: str) -> ErrorEvents:
    """404 when no pool serves a path."""
    return error_response(404, f"no pool serves path {path!r}")


def no_server(pool: str) -> ErrorEvents:
    """503 when a pool has no eligible server."""
    return error_response(503, f"no server available in pool {pool!r}")


def bad_gateway(pool: str, detail: str) -> ErrorEvents:
    """502 when the upstream failed before a response could be relayed."""
    return error_response(502, f"bad gateway: pool {pool!r}: {detail}", close=True)


def gateway_timeout(pool: str) -> ErrorEvents:
    """504 when a short request's upstream did not answer in time."""
    return error_response(504, f"gateway timeout: pool {pool!r}", close=True)
