"""The request and reply values the admin API's pure parts exchange (no I/O here)."""

from __future__ import annotations

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
