"""The servers behind the balancer under attack: `python -m perf.hostile.backend DIR`.

Two servers on 127.0.0.1, each with a plain HTTP/1.1 port (behind caslb's L7
frontends) and a TLS port (behind its tcp and sni frontends, TLS passed
through). Every request gets a keep-alive answer with a Content-Length: `/big`
a megabyte, so that clients who never read fill their buffers, anything else
two bytes, a health check page its `200 OK`. A certificate for `hostile.test`
and its CA are written to DIR. The process prints one JSON line with the
ports, then serves until stdin closes.
"""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path

import h11
import trio
import trustme

from perf.failover.procs import stdin_closed

NAME = "hostile.test"
BIG = b"x" * (1 << 20)


def _body(target: bytes) -> bytes:
    path = target.split(b"?")[0]
    if path.endswith(b"/healthcheck.htm"):
        return b"200 OK<br/>hostile.test"
    return BIG if path.endswith(b"/big") else b"ok"


async def _serve_http(stream: trio.abc.Stream) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            body = _body(event.target)
            head = h11.Response(status_code=200, headers=[("Content-Length", str(len(body)))])
            await stream.send_all(conn.send(head) + conn.send(h11.Data(data=body)))
        elif isinstance(event, h11.EndOfMessage):
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if conn.our_state is not h11.DONE:
                return
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return


async def _handler(stream: trio.abc.Stream) -> None:
    # a peer of the harness's own balancer misbehaving is what is measured,
    # not the backend: whatever it does ends only its connection
    try:
        async with stream:
            await _serve_http(stream)
    except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
            ssl.SSLError, OSError):
        pass


async def _listen(nursery: trio.Nursery, tls: ssl.SSLContext | None) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    port = int(listeners[0].socket.getsockname()[1])
    if tls is not None:
        ssl_listeners = [trio.SSLListener(lst, tls, https_compatible=True) for lst in listeners]
        nursery.start_soon(trio.serve_listeners, _handler, ssl_listeners)
    else:
        nursery.start_soon(trio.serve_listeners, _handler, listeners)
    return port


def write_certificates(folder: Path) -> ssl.SSLContext:
    """A CA and a `hostile.test` certificate in `folder`; the server context for it."""
    ca = trustme.CA()
    issued = ca.issue_cert(NAME, f"*.{NAME}")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    issued.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issued.configure_cert(context)
    return context


async def serve(folder: Path) -> None:
    """Start both servers, announce them, serve until stdin closes."""
    tls = write_certificates(folder)
    async with trio.open_nursery() as nursery:
        servers = [
            {"plain": await _listen(nursery, None), "tls": await _listen(nursery, tls)}
            for _ in range(2)
        ]
        print(json.dumps({"servers": servers}), flush=True)
        await stdin_closed()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(serve, Path(sys.argv[1]))
