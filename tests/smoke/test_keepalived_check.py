"""examples/keepalived/check_caslb.sh against a live caslb admin API on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry

from lb.admin import serve_admin
from lb.config import parse
from lb.metrics import Metrics
from lb.pool import Pool
from probes.state import CheckState

pytestmark = [
    pytest.mark.smoke,
    pytest.mark.skipif(shutil.which("curl") is None, reason="check_caslb.sh needs curl"),
]

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "keepalived" / "check_caslb.sh"

CONFIG = """
[exchange]
namespace = "mail.lab.local"
mode = "l4"
bind = "127.0.0.1"
servers = [
  { name = "cas1", address = "127.0.0.1", fqdn = "cas1.lab.local" },
  { name = "cas2", address = "127.0.0.1", fqdn = "cas2.lab.local" },
]
"""


def build_pools() -> dict[str, Pool]:
    config = parse(tomllib.loads(CONFIG))
    return {name: Pool(pool) for name, pool in config.pools.items()}


async def serve(nursery: trio.Nursery, pools: dict[str, Pool]) -> str:
    metrics = Metrics(CollectorRegistry())
    listeners = await nursery.start(
        lambda task_status: serve_admin(
            ("127.0.0.1", 0), pools=pools, metrics=metrics, task_status=task_status
        )
    )
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def check(*args: str, url: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env.pop("CASLB_ADMIN_URL", None)
    if url is not None:
        env["CASLB_ADMIN_URL"] = url
    return await trio.run_process(
        ["sh", str(SCRIPT), *args], env=env, capture_stdout=True, capture_stderr=True,
        check=False,
    )


async def test_passes_while_any_pool_has_an_eligible_server(nursery: trio.Nursery) -> None:
    pools = build_pools()
    url = await serve(nursery, pools)
    assert len(pools) >= 2  # the l4 shorthand gives one pool per port
    result = await check(url)
    assert result.returncode == 0, result.stderr
    # One pool with nobody left is a farm problem the peer shares: still healthy.
    first = next(iter(pools.values()))
    for member in first.members:
        first.set_check_state(member.name, CheckState.DOWN, trio.current_time())
    assert (await check(url)).returncode == 0


async def test_fails_when_every_pool_is_down(nursery: trio.Nursery) -> None:
    pools = build_pools()
    url = await serve(nursery, pools)
    for pool in pools.values():
        for member in pool.members:
            pool.set_check_state(member.name, CheckState.DOWN, trio.current_time())
    result = await check(url)
    assert result.returncode == 2
    assert b"no eligible server" in result.stderr
    # The URL may also come from the environment, as keepalived's script line allows.
    assert (await check(url=url)).returncode == 2
    pool = next(iter(pools.values()))
    pool.set_check_state(pool.members[0].name, CheckState.UP, trio.current_time())
    assert (await check(url=url)).returncode == 0


async def test_fails_when_nothing_listens() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await check(f"http://127.0.0.1:{port}")
    assert result.returncode == 1


async def test_fails_on_a_document_that_is_not_caslb_status(nursery: trio.Nursery) -> None:
    # Another HTTP service on the admin port: /status answers, but not caslb's JSON.
    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(4096)
            body = b'{"ok": true}'
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )

    listeners = await nursery.start(
        lambda task_status: trio.serve_tcp(handler, 0, host="127.0.0.1", task_status=task_status)
    )
    port = listeners[0].socket.getsockname()[1]
    result = await check(f"http://127.0.0.1:{port}")
    assert result.returncode == 3
