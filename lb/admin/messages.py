"""The request and reply values the admin API's pure parts exchange (no I/O here)."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JSON = "application/json"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request the admin API looks at.

    Attributes:
        method: the request method, e.g. "POST".
        target: the request target as sent.
        headers: lower-cased names → values decoded as latin-1 (so
            `value.encode("latin-1")` gives back the bytes sent); the last one
            wins when a name repeats.
        body: the request body (the server caps its size).
    """

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, content type, body and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, data: Any) -> Reply:
        """A JSON reply."""
        return cls(status, JSON, json.dumps(data, indent=1).encode() + b"\n")

    @classmethod
    def error(cls, status: int, message: str, *headers: tuple[str, str]) -> Reply:
        """A JSON error reply: `{"error": message}`."""
        return cls(status, JSON, json.dumps({"error": message}).encode() + b"\n", headers)


_GZIP_AT_LEAST = 1024  # below this the gzip header costs more than it saves


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (RFC 9110 §12.5.3: `q=0` refuses)."""
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def gzipped(reply: Reply, accept_encoding: str) -> Reply:
    """`reply` compressed when the client accepts gzip and the body is worth it
    (a scrape of 3 servers × 12 pools is about 200 KB of text)."""
    vary = (*reply.headers, ("vary", "Accept-Encoding"))
    if len(reply.body) < _GZIP_AT_LEAST or not accepts_gzip(accept_encoding):
        return dataclasses.replace(reply, headers=vary)
    body = gzip.compress(reply.body, compresslevel=1, mtime=0)
    return dataclasses.replace(reply, body=body, headers=(*vary, ("content-encoding", "gzip")))
