"""The shape of a corpus case: the bytes a client sends and what may come of them.

A case is data. `Outcome` is one acceptable result: the status the client
gets (or "close": no answer, just a close) and exactly what the backends may
receive. Most cases have one outcome; where RFC 9112 lets a recipient choose
(obs-fold: reject, or replace with a space) a case lists both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Verdict = int | Literal["close"]
Framing = Literal["none", "length", "chunked"]

HOST = b"mail.lab.local"

# Verdicts after which the connection must close: the balancer refused the
# message, so it cannot know where the next one starts (RFC 9112 §9.3 and §11.2).
CLOSING_VERDICTS = frozenset({400, 405, 408, 414, 431, 501, 502, 505})


@dataclass(frozen=True)
class Forwarded:
    """A request a backend must receive, exactly.

    Attributes:
        pool: the pool whose backend receives it.
        target: the request target as the backend must see it.
        method: the method.
        body: the body after framing is removed.
        framing: how the body must be delimited upstream.
        fields: (lowercase name, value) pairs the request must carry as its only
            field of that name (e.g. the Host of an absolute-form request).
        absent: lowercase names of fields the request must not carry.
    """

    pool: str
    target: bytes
    method: bytes = b"GET"
    body: bytes = b""
    framing: Framing = "none"
    fields: tuple[tuple[bytes, bytes], ...] = ()
    absent: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """One acceptable result of a case.

    Attributes:
        verdict: the status the client gets, or "close".
        forwarded: the complete requests the backends receive, in order; any
            other backend receives nothing.
        partial: a prefix of one request (head, part of a body) may also reach
            the backend of this pool, never completed (a malformed chunked body).
    """

    verdict: Verdict
    forwarded: tuple[Forwarded, ...] = ()
    partial: str | None = None


@dataclass(frozen=True)
class Case:
    """One hostile (or control) input.

    Attributes:
        id: a stable name, the pytest id.
        klass: the class of attack or rule (the report groups by it).
        raw: the bytes the client sends, all at once.
        outcomes: the acceptable results (any one passes).
        default_pool: run against the frontend with a default pool.
        source: the rule or published attack the case comes from.
    """

    id: str
    klass: str
    raw: bytes
    outcomes: tuple[Outcome, ...]
    default_pool: bool = False
    source: str = ""


def request(
    target: bytes,
    *fields: bytes,
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    host: bool = True,
    body: bytes = b"",
) -> bytes:
    """Raw request bytes: request line, Host (unless `host` is False), `fields` lines, body."""
    lines = [method + b" " + target + b" " + version]
    if host:
        lines.append(b"Host: " + HOST)
    lines.extend(fields)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def refused(
    id: str,
    klass: str,
    raw: bytes,
    status: int = 400,
    *,
    source: str = "",
    default_pool: bool = False,
) -> Case:
    """A case the balancer must answer with `status` alone, forwarding nothing."""
    return Case(id, klass, raw, (Outcome(status),), default_pool=default_pool, source=source)


def routed(
    id: str,
    klass: str,
    raw: bytes,
    *forwarded: Forwarded,
    source: str = "",
    default_pool: bool = False,
) -> Case:
    """A case the balancer must forward as `forwarded` and answer 200."""
    return Case(
        id, klass, raw, (Outcome(200, forwarded),), default_pool=default_pool, source=source
    )
