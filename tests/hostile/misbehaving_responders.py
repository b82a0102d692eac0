"""Responders for backends that break HTTP on the response side.

Each is a `Responder` (tests/hostile/recording_backend.py): it reads nothing
itself, it only decides what bytes go back for a request the strict reader
already recorded. Only the first connection misbehaves where a test needs to
tell a fresh upstream connection from a reused one.
"""

from __future__ import annotations

import trio

from tests.hostile.recording_backend import Exchange, Responder, answer_fixed


def raw_answer(data: bytes, *, keep: bool = True) -> Responder:
    """Answer every request with `data`, exactly."""

    async def respond(exchange: Exchange) -> bool:
        await exchange.stream.send_all(data)
        return keep

    return respond


def first_connection_only(bad: Responder) -> Responder:
    """`bad` on the first upstream connection, the fixed 200 on every later one."""

    async def respond(exchange: Exchange) -> bool:
        if exchange.request.connection == 0:
            return await bad(exchange)
        return await answer_fixed(exchange)

    return respond


def in_two_writes(
    first: bytes, second: bytes, *, go: trio.Event, written: trio.Event | None = None
) -> Responder:
    """Write `first`, wait for the test to set `go`, write `second`, then set `written`.

    The test sets `go` once the client has seen `first`, so `second` is known
    to arrive after the balancer relayed what came before it.
    """

    async def respond(exchange: Exchange) -> bool:
        await exchange.stream.send_all(first)
        await go.wait()
        await exchange.stream.send_all(second)
        if written is not None:
            written.set()
        return True

    return respond


def response_head(*fields: bytes, status: bytes = b"200 OK") -> bytes:
    """A response head with `fields`, ending in the blank line."""
    return b"\r\n".join([b"HTTP/1.1 " + status, *fields]) + b"\r\n\r\n"


INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Backend: injected\r\n\r\nINJECTED"
