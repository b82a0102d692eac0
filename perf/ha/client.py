"""The client of `perf ha`: one HTTPS request after another to the VIP, a JSON line each.

Run inside the client's namespace as `python -m perf.ha.client VIP CA_FILE`. Every
request is a new TCP connection and TLS handshake (passed through to the CAS server),
`GET /owa/healthcheck.htm`, then close, so each one asks "who holds the VIP now?".
It prints {"started", "finished", "server", "error"} per request (monotonic seconds,
comparable across processes on one machine; `server` from X-FEServer, lowercased) until killed.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import time

NAME = "mail.lab.local"
PATH = "/owa/healthcheck.htm"


def request(vip: str, port: int, context: ssl.SSLContext, connect_timeout: float,
            timeout: float) -> str:
    """One request; the CAS server that answered it.

    While the VIP moves, connecting is what fails (refused, or SYNs lost), so the connect
    timeout is short and sets how soon the client tries again; once connected, a busy
    machine may be slow to answer without anything being wrong, hence the longer one.

    Raises:
        OSError: connecting, the handshake or the exchange failed or timed out.
        ValueError: the answer was not a 200 naming its server.
    """
    with socket.create_connection((vip, port), timeout=connect_timeout) as raw:
        raw.settimeout(timeout)
        return _exchange(context.wrap_socket(raw, server_hostname=NAME))


def _exchange(tls: ssl.SSLSocket) -> str:
    with tls:
        tls.sendall(f"GET {PATH} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n"
                    .encode())
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := tls.recv(4096)):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/1.1 200"):
        raise ValueError(f"answer {head[0]!r}")
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-feserver":
            # Exchange sends the NetBIOS name in capitals (CAS2); the config says cas2.
            return value.strip().lower()
    raise ValueError("no X-FEServer header")


def main() -> None:
    """Request until killed, one JSON line per request."""
    parser = argparse.ArgumentParser(prog="python -m perf.ha.client")
    parser.add_argument("vip")
    parser.add_argument("ca_file")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--connect-timeout", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--pause", type=float, default=0.02)
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.ca_file)
    while True:
        started = time.monotonic()
        server, error = None, None
        try:
            server = request(args.vip, args.port, context, args.connect_timeout, args.timeout)
        except (OSError, ValueError) as exc:
            error = type(exc).__name__
        line = {"started": started, "finished": time.monotonic(), "server": server,
                "error": error}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        time.sleep(args.pause)


if __name__ == "__main__":
    main()
