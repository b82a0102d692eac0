"""Idle memory rows: RSS of a proxy holding 1k, 5k, 10k kept-alive connections.

Each connection is made through the proxy (L4: its tcp frontend to the origin;
L7: its plain or TLS http frontend), sends one GET for the 100-byte body and reads
the whole answer, so it is proxied end to end with both sockets open, then stays
idle. RSS (every process of the proxy, from /proc) is read after a warm-up batch
and at each count; the growth over the warm-up divided by the connections added
is the KiB per idle connection.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from perf.matrix.configs import HOST, body_path
from perf.matrix.procs import Proxy
from perf.procfs import process_tree, rss_kib

WARMUP = 100
REQUEST = f"GET {body_path('100B')} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
BODY = 100


@dataclass(frozen=True)
class IdlePoint:
    """RSS once `connections` are held, and the KiB each cost over the warm-up."""

    connections: int
    rss_kib: int
    kib_per_connection: float


def tree_rss_kib(pid: int) -> int:
    """RSS of `pid` and its descendants (nginx's worker, caslb's workers)."""
    return sum(rss_kib(p) for p in process_tree(pid))


def _client(tls: bool) -> Callable[[socket.socket], socket.socket]:
    if not tls:
        return lambda sock: sock
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the lab certificate; only the proxy's memory counts here
    return lambda sock: ctx.wrap_socket(sock)


def _answer(sock: socket.socket) -> None:
    got = b""
    while b"\r\n\r\n" not in got or len(got) - got.index(b"\r\n\r\n") - 4 < BODY:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"connection closed after {len(got)} bytes")
        got += chunk
    if not got.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer {got[:40]!r}")


def _open(port: int, count: int, wrap: Callable[[socket.socket], socket.socket],
          held: list[socket.socket]) -> None:
    for _ in range(count):
        raw = socket.create_connection((HOST, port), timeout=10)
        # without it the request after the TLS handshake waits for a delayed ACK (40 ms)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = wrap(raw)
        held.append(sock)
        sock.sendall(REQUEST)
        _answer(sock)


def measure(proxy: Proxy, port: int, tls: bool, counts: tuple[int, ...]) -> list[IdlePoint]:
    """Hold `counts` connections in turn (each count includes the previous ones)."""
    wrap = _client(tls)
    held: list[socket.socket] = []
    points = []
    try:
        _open(port, WARMUP, wrap, held)
        time.sleep(0.3)
        base = tree_rss_kib(proxy.pid)
        for count in counts:
            _open(port, count - (len(held) - WARMUP), wrap, held)
            time.sleep(0.3)  # let the last answers' buffers go back
            rss = tree_rss_kib(proxy.pid)
            points.append(IdlePoint(count, rss, (rss - base) / count))
    finally:
        for sock in held:
            sock.close()
    return points
