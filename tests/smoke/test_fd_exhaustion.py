"""`caslb run` under a low fd limit, flooded with more clients than it has fds.

The process runs with RLIMIT_NOFILE = 256 and 400 clients connect and hold
their connections without a byte. With the default fd reserve the frontend
stops accepting short of the limit, so the admin API keeps answering and the
probes keep every server UP; with the reserve off, accept itself meets
EMFILE and backs off. Either way the condition is logged a bounded number of
times (not once per failed accept), nothing prints a traceback, no server is
blamed, and the frontend serves again once the clients leave.
"""

from __future__ import annotations

import os
import resource
import signal
import urllib.request
from pathlib import Path
from typing import Any

import casfarm
import pytest
import trio

from tests.farmclient import https_client
from tests.smoke.test_app_l7 import NAMESPACE, farm_config
from tests.smoke.test_cli_run import CASLB, free_port, get_json, wait_status

pytestmark = pytest.mark.smoke

FD_LIMIT = 256
CLIENTS = 400


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _servers(status: Any) -> list[tuple[str, str, str, bool]]:
    return [(pool, s["name"], s["check"], s["eligible"])
            for pool, body in status["pools"].items() for s in body["servers"]]


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


async def _get_text(url: str) -> str:
    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    return await trio.to_thread.run_sync(fetch)


async def _flood(port: int) -> list[trio.SocketStream]:
    """CLIENTS connections that send nothing; the kernel backlog takes those not accepted."""
    streams = []
    with trio.fail_after(20):
        for _ in range(CLIENTS):
            streams.append(await trio.open_tcp_stream("127.0.0.1", port))
    return streams


async def _owa_status(port: int, ca: str) -> int:
    client = await https_client("127.0.0.1", port, ca_path=ca, server_hostname=NAMESPACE)
    try:
        return (await client.request("GET", "/owa/")).status
    finally:
        await client.aclose()


@pytest.mark.parametrize("reserve", ["", "0"], ids=["default-reserve", "no-reserve"])
async def test_a_client_flood_beyond_the_fd_limit_hurts_no_server_and_passes(
    tmp_path: Path, reserve: str,
) -> None:
    https, admin_port = free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    log_path = tmp_path / "caslb.log"
    env = {**os.environ, "CASLB_FD_RESERVE": reserve}
    async with casfarm.running(servers=2) as farm:
        config = tmp_path / "caslb.toml"
        config.write_text(farm_config(farm, extra=f'listen = {{ https = {https} }}\n'
                                      f'[admin]\nbind = "127.0.0.1:{admin_port}"\n'))
        with log_path.open("wb") as log_file:
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    lambda task_status: trio.run_process(
                        [*CASLB, "run", str(config), "--no-access-log"], check=False,
                        task_status=task_status, stdout=log_file, stderr=log_file,
                        preexec_fn=_low_fd_limit, env=env,
                    )
                )
                status = await wait_status(admin, process)
                healthy = [(p, n, "UP", True) for p, n, _, _ in _servers(status)]
                with trio.fail_after(10):  # rise: both servers UP before the flood
                    while _servers(status) != healthy:
                        await trio.sleep(0.2)
                        status = await wait_status(admin, process)

                clients = await _flood(https)
                for _ in range(15):  # about 3 s of flood, probes running every 200 ms
                    await trio.sleep(0.2)
                    assert process.returncode is None
                    if reserve == "":  # the reserve keeps the admin API answering
                        status = await trio.to_thread.run_sync(get_json, f"{admin}/status")
                        assert _servers(status) == healthy
                for stream in clients:
                    await stream.aclose()

                with trio.fail_after(30):  # the backlog drains; then the frontend serves
                    while True:
                        try:
                            if await _owa_status(https, farm.ca_path) == 200:
                                break
                        except (OSError, trio.BrokenResourceError):
                            pass
                        await trio.sleep(0.2)
                status = await wait_status(admin, process)
                assert _servers(status) == healthy  # no server was marked down
                metrics = await _get_text(f"{admin}/metrics")
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(15):
                    await process.wait()
    assert _metric(metrics, "caslb_server_ejections_total") == 0
    assert _metric(metrics, "caslb_accept_paused_total") > 0
    log = log_path.read_text()
    paused = [line for line in log.splitlines() if "accept paused" in line]
    assert paused, log[-2000:]
    # one line per (listener, reason) per 10 s: a handful, not one per failed accept
    assert len(paused) <= 8, "\n".join(paused)
    if reserve == "0":
        assert any("too many open files" in line for line in paused), "\n".join(paused)
    else:
        assert any("kept for the admin API and probes" in line for line in paused)
    assert "Traceback" not in log, log[-3000:]
    assert process.returncode == 0
