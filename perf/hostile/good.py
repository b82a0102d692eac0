"""The well-behaved clients: `python -m perf.hostile.good SPEC`, a process of their own.

They run beside every attack, in a process apart from the attacker's so that
the attacker's own busy loop never shows up as the balancer's latency. Four
channels, each one request at a time with a short pause between:

- plain: keep-alive HTTP/1.1 to the plain L7 frontend (`GET /owa/good`);
- tls: the same through the TLS-terminating frontend, certificate verified;
- sni: TLS passed through by the sni frontend to a backend server;
- admin: a new connection per request to `GET /status`, which must answer 200
  with every server eligible, so that a probe the balancer failed shows here.

A keep-alive channel retries once on a fresh connection when a reused one was
closed before any answer, as browsers do. SPEC is JSON with the ports, the CA
file, the pause and the per-request timeout. The channels run until stdin
closes, then one JSON line reports, per channel, the count of successes and
failures, latency percentiles and the first few failures.
"""

from __future__ import annotations

import json
import math
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from perf.failover.procs import stdin_closed

NAME = "hostile.test"
_FAILURES_KEPT = 5


class Refused(Exception):
    """An answer that is not what a well-behaved client expects."""


@dataclass
class Tally:
    """What one channel saw."""

    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    first_failures: list[str] = field(default_factory=list)

    def failed(self, why: str) -> None:
        """Count a failure, keeping its text if it is one of the first."""
        self.failures += 1
        if len(self.first_failures) < _FAILURES_KEPT:
            self.first_failures.append(why)

    def summary(self) -> dict[str, Any]:
        """Counts and percentiles in milliseconds."""
        ordered = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(1000 * ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 2)

        return {"ok": len(ordered), "failed": self.failures, "p50_ms": pct(0.5),
                "p99_ms": pct(0.99), "max_ms": pct(1.0), "first_failures": self.first_failures}


Connect = Callable[[], Awaitable[trio.abc.Stream]]


async def _exchange(
    stream: trio.abc.Stream, conn: h11.Connection, host: str, path: str
) -> tuple[int, bytes]:
    """One request and its whole answer; (status, body)."""
    await stream.send_all(conn.send(h11.Request(method="GET", target=path,
                                                headers=[("Host", host)])))
    await stream.send_all(conn.send(h11.EndOfMessage()))
    status, body = 0, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("closed before the answer")


class KeepAlive:
    """HTTP/1.1 over one kept connection, re-opened when the server closes it."""

    def __init__(self, connect: Connect, host: str = NAME) -> None:
        self._connect = connect
        self._host = host
        self._stream: trio.abc.Stream | None = None
        self._conn = h11.Connection(h11.CLIENT)

    async def get(self, path: str) -> bytes:
        """GET `path`; its body when the answer is 200.

        Raises:
            Refused: any other status.
            trio.BrokenResourceError, OSError, h11.ProtocolError: the connection failed.
        """
        for attempt in range(2):
            reused = self._stream is not None
            if self._stream is None:
                self._stream = await self._connect()
                self._conn = h11.Connection(h11.CLIENT)
            try:
                status, body = await _exchange(self._stream, self._conn, self._host, path)
            except (trio.BrokenResourceError, OSError, h11.ProtocolError):
                await self.close()
                # a kept connection the server closed while idle: try once afresh
                if reused and attempt == 0:
                    continue
                raise
            if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
                self._conn.start_next_cycle()
            else:
                await self.close()
            if status != 200:
                raise Refused(f"status {status}")
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Drop the kept connection."""
        if self._stream is not None:
            await trio.aclose_forcefully(self._stream)
            self._stream = None


def _tls_connect(port: int, context: ssl.SSLContext) -> Connect:
    async def connect() -> trio.abc.Stream:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, context, server_hostname=NAME, https_compatible=True)
        await stream.do_handshake()
        return stream

    return connect


def _tcp_connect(port: int) -> Connect:
    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream("127.0.0.1", port)

    return connect


async def _admin_status(port: int) -> bytes:
    # the admin API serves only Host values naming its own listener
    client = KeepAlive(_tcp_connect(port), host=f"127.0.0.1:{port}")
    try:
        body = await client.get("/status")
    finally:
        await client.close()
    down = [f"{p}/{s['name']}" for p, pool in json.loads(body).get("pools", {}).items()
            for s in pool.get("servers", []) if not s.get("eligible")]
    if down:
        raise Refused(f"not eligible: {', '.join(down)}")
    return body


async def _channel(request: Callable[[], Awaitable[object]], tally: Tally, pause: float,
                   timeout: float) -> None:
    while True:
        start = trio.current_time()
        try:
            with trio.fail_after(timeout):
                await request()
        except trio.TooSlowError:
            tally.failed(f"no answer within {timeout:g} s")
        except (Refused, OSError, trio.BrokenResourceError, h11.ProtocolError,
                ssl.SSLError, ValueError) as exc:
            tally.failed(f"{type(exc).__name__}: {exc}")
        else:
            tally.latencies.append(trio.current_time() - start)
        await trio.sleep(pause)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run every channel until stdin closes; their summaries."""
    context = ssl.create_default_context(cafile=spec["ca"])
    plain = KeepAlive(_tcp_connect(spec["plain"]))
    tls = KeepAlive(_tls_connect(spec["tls"], context))
    sni = KeepAlive(_tls_connect(spec["sni"], context))
    requests: dict[str, Callable[[], Awaitable[object]]] = {
        "plain": lambda: plain.get("/owa/good"),
        "tls": lambda: tls.get("/owa/good"),
        "sni": lambda: sni.get("/owa/good"),
        "admin": lambda: _admin_status(spec["admin"]),
    }
    tallies = {name: Tally() for name in requests if spec.get(name)}
    async with trio.open_nursery() as nursery:
        for name, tally in tallies.items():
            nursery.start_soon(_channel, requests[name], tally, spec["pause"], spec["timeout"])
        print(json.dumps({"ready": True}), flush=True)
        await stdin_closed()
        nursery.cancel_scope.cancel()
    return {name: tally.summary() for name, tally in tallies.items()}


if __name__ == "__main__":
    print(json.dumps(trio.run(run, json.loads(sys.argv[1]))), flush=True)
