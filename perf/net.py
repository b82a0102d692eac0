"""Loopback ports for the processes the harnesses start (stdlib only, no trio)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Processes configured by file (HAProxy, caslb) need a number up front; the
    tiny race with other programs is acceptable on a test machine.
    """
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_listening(
    port: int, limit: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts on `port`.

    Raises:
        RuntimeError: after `limit` seconds, or at once when `proc` has exited.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {limit:g}s")
