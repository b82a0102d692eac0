"""Hypothesis over real sockets: mutated Exchange request heads against one live frontend.

The frontend, its backends and a well-behaved client run in the test's trio
loop for the whole fuzz; hypothesis runs in a worker thread and talks to the
frontend with blocking sockets, one fresh connection per example (sent in
one write, then half-closed, so a truncated head ends instead of waiting for
the header timeout). For every example:

- the answer is a well-formed HTTP/1.1 response stream (h11 client) or a close;
- no backend ever reads a malformed request (the strict reader: which
  includes both Content-Length and Transfer-Encoding) or a target that is
  not normalised;
- the well-behaved client, a loop of GETs on its own keep-alive connection,
  keeps being served: it completes another request during every example,
  and every one of its answers is a 200.
And after the whole run, nothing was logged at ERROR and no traceback.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field

import pytest
import trio
from hypothesis import HealthCheck, Phase, given, settings

from tests.farmclient import HttpClient
from tests.hostile.frontend_rig import NAMESPACE, HostileFront, hostile_front
from tests.hostile.head_mutations import hostile_requests
from tests.hostile.judge import assert_quiet_logs
from tests.hostile.normalised import normalisation_problems
from tests.hostile.wire import HANG_BOUND, Reply, ResponseStream

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class WellBehavedClient:
    """A loop of valid GETs on one connection, counting what it got back."""

    port: int
    statuses: list[int] = field(default_factory=list)
    failure: str | None = None

    async def run(self) -> None:
        client = HttpClient(await trio.open_tcp_stream("127.0.0.1", self.port), NAMESPACE)
        try:
            while self.failure is None:
                response = await client.request("GET", "/owa/well-behaved")
                self.statuses.append(response.status)
                if response.status != 200:
                    self.failure = f"answered {response.status}: {response.body[:200]!r}"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.failure = f"connection failed: {exc!r}"
        finally:
            await client.aclose()


def exchange_blocking(port: int, data: bytes) -> Reply:
    """Send `data`, half-close, read to the end; the reply as the strict parser saw it."""
    parser = ResponseStream()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(HANG_BOUND)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused early: what it answered is still readable
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                parser.reply.ending = "hung"
                break
            except OSError:
                parser.reply.ending = "reset"
                break
            if not chunk:
                parser.feed(b"")
                parser.reply.ending = "eof"
                break
            parser.feed(chunk)
    return parser.reply


def served_again(client: WellBehavedClient, before: int) -> bool:
    """Wait (bounded) until the well-behaved client completes one more request."""
    until = time.monotonic() + HANG_BOUND
    while len(client.statuses) <= before:
        if client.failure is not None or time.monotonic() > until:
            return False
        time.sleep(0.001)
    return True


class ErrorLines(logging.Handler):
    """Collects caslb's ERROR lines, so each can be tied to the example that caused it."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Findings:
    """Every broken invariant, with the inputs that broke it.

    The fuzz records instead of stopping at the first failure, so one run
    shows every class of defect (a normalisation gap must not hide a crash).
    """

    found: dict[str, list[tuple[bytes, str]]] = field(default_factory=dict)
    backend_seen: dict[str, int] = field(default_factory=dict)
    errors: ErrorLines = field(default_factory=lambda: ErrorLines(logging.ERROR))

    def add(self, invariant: str, data: bytes, detail: str) -> None:
        self.found.setdefault(invariant, []).append((data, detail))

    def report(self) -> str:
        lines = []
        for invariant, cases in self.found.items():
            lines.append(f"{invariant}: {len(cases)} examples, e.g.")
            lines += [f"    {data!r}\n      -> {detail[:300]}" for data, detail in cases[:3]]
        return "\n".join(lines)


def check_example(
    front: HostileFront, client: WellBehavedClient, findings: Findings, data: bytes
) -> None:
    """Send one mutated request and record every invariant it breaks."""
    before = len(client.statuses)
    reply = exchange_blocking(front.port, data)
    if reply.malformed is not None or not all(a.complete for a in reply.answers):
        findings.add("answer not a well-formed response stream", data, reply.describe())
    if reply.ending == "hung":
        findings.add("neither answered nor closed", data, reply.describe())
    for name, backend in front.backends.items():
        seen = findings.backend_seen.get(name, 0)
        findings.backend_seen[name] = len(backend.requests)
        for got in backend.requests[seen:]:
            for problem in normalisation_problems(got.target):
                findings.add(
                    "backend got a target that is not normalised", data, f"{name}: {problem}"
                )
        for violation in backend.violations:
            findings.add("backend read a malformed request", data, f"{name}: {violation}")
        backend.violations.clear()
    if "well-behaved client starved" not in findings.found and not served_again(client, before):
        findings.add("well-behaved client starved", data, str(client.failure))
    # Read last: the error, if any, was logged before the connection closed.
    for line in findings.errors.lines:
        findings.add("logged at ERROR", data, line)
    findings.errors.lines.clear()


def fuzz(front: HostileFront, client: WellBehavedClient) -> Findings:
    """Run the hypothesis fuzz (blocking; called in a worker thread)."""
    findings = Findings()
    caslb_log = logging.getLogger("caslb")
    caslb_log.addHandler(findings.errors)

    @FUZZ
    @given(data=hostile_requests())
    def one_example(data: bytes) -> None:
        check_example(front, client, findings, data)

    try:
        one_example()
    finally:
        caslb_log.removeHandler(findings.errors)
    return findings


async def test_mutated_heads_never_reach_a_backend_malformed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    async with hostile_front(default_pool=True) as front, trio.open_nursery() as nursery:
        client = WellBehavedClient(front.port)
        nursery.start_soon(client.run)
        findings = await trio.to_thread.run_sync(fuzz, front, client)
        nursery.cancel_scope.cancel()
    assert not findings.found, findings.report()
    assert client.failure is None, client.failure
    assert client.statuses and set(client.statuses) == {200}
    assert_quiet_logs(caplog)
