"""`caslb run` as a process: serves, reloads on SIGHUP keeping state, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import casfarm
import trio

from tests.farmclient import https_client
from tests.smoke.test_app_l7 import NAMESPACE, farm_config

CASLB = [sys.executable, "-c", "from lb.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


def post(url: str) -> None:
    marked = {"X-Caslb-Request": "1"}  # the admin API refuses unmarked state changes
    with urllib.request.urlopen(urllib.request.Request(url, method="POST", headers=marked),
                                timeout=2):
        pass


async def wait_status(admin: str, process: trio.Process) -> Any:
    with trio.fail_after(20):
        while True:
            assert process.returncode is None, "caslb run exited early"
            try:
                return await trio.to_thread.run_sync(get_json, f"{admin}/status")
            except OSError:
                await trio.sleep(0.1)


def member(status: Any, pool: str, server: str) -> Any:
    return next(m for m in status["pools"][pool]["servers"] if m["name"] == server)


async def test_run_serves_reloads_keeping_drain_state_and_stops_gracefully(
    tmp_path: Path,
) -> None:
    https, admin_port = free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    async with casfarm.running(servers=2) as farm:
        text = farm_config(farm, extra=f'listen = {{ https = {https} }}\n'
                           f'[admin]\nbind = "127.0.0.1:{admin_port}"\n')
        config = tmp_path / "caslb.toml"
        config.write_text(text)
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                lambda task_status: trio.run_process(
                    [*CASLB, "run", str(config)], check=False, task_status=task_status,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )
            await wait_status(admin, process)
            client = await https_client("127.0.0.1", https, ca_path=farm.ca_path,
                                        server_hostname=NAMESPACE)
            assert (await client.request("GET", "/owa/")).status == 200
            await client.aclose()

            await trio.to_thread.run_sync(post, f"{admin}/servers/cas1/drain?pool=owa")
            config.write_text(text.replace('fqdn = "cas2.lab.local"',
                                           'fqdn = "cas2.lab.local", weight = 3'))
            process.send_signal(signal.SIGHUP)
            with trio.fail_after(10):
                while member(await wait_status(admin, process), "owa", "cas2")["weight"] != 3:
                    await trio.sleep(0.1)
            status = await wait_status(admin, process)
            assert member(status, "owa", "cas1")["admin"] == "DRAIN"
            assert member(status, "ews", "cas1")["admin"] == "READY"

            process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                while process.returncode is None:
                    await trio.sleep(0.1)
            assert process.returncode == 0


async def test_run_with_a_bad_config_names_the_key_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[exchange]\nnamespace = "x.lab"\nmode = "l9"\nservers = []\n')
    result = await trio.run_process([*CASLB, "run", str(config)], check=False,
                                    capture_stdout=True, capture_stderr=True)
    assert result.returncode == 2
    assert b"exchange.mode" in result.stderr
