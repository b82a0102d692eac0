"""A client with Nagle on gets its first request through right after the TLS handshake.

A TLS 1.3 client sends its Finished and then its request; with Nagle on (Windows
clients, curl without TCP_NODELAY) the request waits until the Finished is
acknowledged. caslb has nothing to send until it reads that request, so without
an immediate ACK every new connection waited for the kernel's delayed ACK timer
(about 40 ms). The test counts those timers rather than timing anything: it runs
a backend, `caslb run` and the client in a network namespace of its own, whose
TCP counters only this test moves, and reads TcpExt DelayedACKs before and after.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest
import trustme

from tests import netns

pytestmark = pytest.mark.smoke

CONNECTIONS = 12
BACKEND, FRONTEND, ADMIN = 8080, 8443, 9090

CLIENT = textwrap.dedent("""
    import socket, ssl, sys
    ctx = ssl.create_default_context(cafile=sys.argv[1])
    for _ in range(int(sys.argv[2])):
        raw = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)  # Nagle on, as Windows
        with ctx.wrap_socket(raw, server_hostname="mail.lab.example") as tls:
            tls.sendall(b"GET / HTTP/1.1\\r\\nHost: mail.lab.example\\r\\n"
                        b"Connection: close\\r\\n\\r\\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    print("ok")
""")


def delayed_acks(space: netns.Namespace) -> int:
    text = space.run("cat", "/proc/net/netstat").stdout.decode()
    names, values = [ln.split() for ln in text.splitlines() if ln.startswith("TcpExt:")][:2]
    return int(values[names.index("DelayedACKs")])


def wait_listening(space: netns.Namespace, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in space.run("ss", "-Hltn").stdout.decode():
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} in {space.name}")


def test_a_nagle_client_is_not_held_by_a_delayed_ack(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("mail.lab.example")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "index.html").write_text("hello")
    (tmp_path / "caslb.toml").write_text(f"""
[admin]
bind = "127.0.0.1:{ADMIN}"

[frontends.web]
bind = "127.0.0.1:{FRONTEND}"
mode = "http"
default_pool = "web"
tls = {{ cert = "{tmp_path / 'cert.pem'}", key = "{tmp_path / 'cert.pem'}" }}

[pools.web]
servers = [{{ name = "web1", address = "127.0.0.1:{BACKEND}" }}]
""")
    (tmp_path / "client.py").write_text(CLIENT)
    with netns.lab() as lab:
        space = lab.namespace("solo")
        space.start([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                     "--directory", str(tmp_path), str(BACKEND)])
        space.start([str(Path(sys.executable).parent / "caslb"), "run", "--no-access-log",
                     str(tmp_path / "caslb.toml")])
        wait_listening(space, BACKEND)
        wait_listening(space, FRONTEND)
        before = delayed_acks(space)
        done = space.run(sys.executable, str(tmp_path / "client.py"), str(tmp_path / "ca.pem"),
                         str(CONNECTIONS), str(FRONTEND), timeout=60)
        assert done.stdout.strip() == b"ok", done.stderr.decode()[-2000:]
        delayed = delayed_acks(space) - before
    # one per connection without the immediate ACK; a stray timer is not the pattern
    assert delayed < CONNECTIONS // 3, f"{delayed} delayed ACKs for {CONNECTIONS} connections"
