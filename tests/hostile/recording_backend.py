"""A backend that records every request it receives and answers each with a fixed response.

It listens on 127.0.0.1:0, reads with the suite's own strict reader
(tests/hostile/strict_reader.py) and keeps, per backend: every request (with
the connection that carried it), every violation of the request grammar, and
how many upstream connections were opened and are still open, so a test can
tell which pool got what, over which connection, and whether the balancer
dropped a connection it should not reuse.

What it answers is a `Responder`: by default a fixed well-formed 200 whose body
names the pool and the target; misbehaving ones live in
tests/hostile/misbehaving_responders.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
import trio.testing

from tests.hostile.strict_reader import ReceivedRequest, StrictReader, Violation


@dataclass
class Exchange:
    """What a responder gets for one request: where to write, and what came in.

    Attributes:
        backend: the backend's name (its pool).
        stream: the upstream connection, to write a response on.
        request: the request just read.
        number: the request's position on its connection (0 for the first).
    """

    backend: str
    stream: trio.abc.Stream
    request: ReceivedRequest
    number: int


Responder = Callable[[Exchange], Awaitable[bool]]
"""responder(exchange) → whether the connection may carry another request."""


def fixed_body(backend: str, request: ReceivedRequest) -> bytes:
    """The body of the fixed answer: enough to tell which pool served which target."""
    return b"%s %s %s\n" % (backend.encode(), request.method, request.target)


def fixed_response(backend: str, request: ReceivedRequest) -> bytes:
    """A well-formed 200 naming the backend in X-Backend and in its body."""
    body = fixed_body(backend, request)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (backend.encode(), len(body), body)
    )


async def answer_fixed(exchange: Exchange) -> bool:
    """The default responder: the fixed 200, keep-alive unless the request said close."""
    await exchange.stream.send_all(fixed_response(exchange.backend, exchange.request))
    return b"close" not in b",".join(exchange.request.values(b"connection")).lower()


@dataclass
class RecordingBackend:
    """One recording backend (start it with `start`).

    Attributes:
        name: the pool it serves (shown in X-Backend).
        port: its listening port, once started.
        requests: every request read, complete or cut short, in arrival order.
        violations: every grammar violation seen, as "connection N: why".
        opened: upstream connections accepted so far.
        open_now: upstream connections not yet closed.
    """

    name: str
    responder: Responder = answer_fixed
    port: int = 0
    requests: list[ReceivedRequest] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    opened: int = 0
    open_now: int = 0
    closed_connections: list[int] = field(default_factory=list)

    @property
    def complete(self) -> list[ReceivedRequest]:
        """The requests that arrived whole."""
        return [r for r in self.requests if r.complete]

    async def start(self, nursery: trio.Nursery) -> RecordingBackend:
        """Listen and serve in `nursery` until it is cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, self._serve, listeners)
        return self

    async def _serve(self, stream: trio.SocketStream) -> None:
        number = self.opened
        self.opened += 1
        self.open_now += 1
        reader = StrictReader(stream, number)
        try:
            for position in range(1_000_000):
                try:
                    request = await reader.next_request()
                except Violation as exc:
                    self.violations.append(f"connection {number}: {exc}")
                    return
                if request is None:
                    return
                self.requests.append(request)
                if not request.complete:
                    return
                try:
                    keep = await self.responder(Exchange(self.name, stream, request, position))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not keep:
                    return
        finally:
            self.open_now -= 1
            self.closed_connections.append(number)
            await trio.aclose_forcefully(stream)


async def settle(*backends: RecordingBackend, bound: float = 5.0) -> None:
    """Wait until every upstream connection to `backends` has ended.

    The balancer closes a client's upstream connections when the client's
    connection ends, so once the test's client is done this is the moment
    every byte the balancer forwarded has been read and recorded. Waiting for
    all tasks to block first lets a connection still in the accept queue be
    accepted (and counted) before the count is read.
    """
    with trio.fail_after(bound):
        while True:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            if all(b.open_now == 0 for b in backends):
                return
            await trio.sleep(0.01)
