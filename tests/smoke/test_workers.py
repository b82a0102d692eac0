"""`caslb run --workers 2` as a process in front of casfarm: one supervisor, two workers."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import casfarm
import trio
from prometheus_client.parser import text_string_to_metric_families

from lb.config import load
from lb.workers import config_hash
from tests.farmclient import https_client
from tests.smoke.test_app_l7 import NAMESPACE, farm_config
from tests.smoke.test_cli_run import CASLB, free_port, member, post, wait_status


@dataclass
class Running:
    farm: casfarm.Farm
    process: trio.Process
    admin: str
    https: int
    log: Path


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode())


async def total(run: Running, name: str, **labels: str) -> float:
    """The sum of every sample `name` whose labels include `labels`."""
    text = await trio.to_thread.run_sync(_scrape, f"{run.admin}/metrics")
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def per_worker(run: Running) -> dict[str, float]:
    text = await trio.to_thread.run_sync(_scrape, f"{run.admin}/metrics")
    return {
        s.labels["worker"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples if s.name == "caslb_worker_http_requests_total"
    }


async def settled(run: Running, requests: int) -> None:
    """Wait until the workers' metrics count `requests` HTTP requests in all."""
    with trio.fail_after(15):
        while await total(run, "caslb_frontend_http_requests_total") != requests:
            await trio.sleep(0.1)


@asynccontextmanager
async def running(tmp_path: Path, servers: int) -> AsyncIterator[Running]:
    https, admin_port = free_port(), free_port()
    async with casfarm.running(servers=servers) as farm:
        config = tmp_path / "caslb.toml"
        config.write_text(farm_config(farm, extra=f"listen = {{ https = {https} }}\n"
                                      f'[admin]\nbind = "127.0.0.1:{admin_port}"\n'))
        log = tmp_path / "caslb.log"
        async with trio.open_nursery() as nursery, await trio.open_file(log, "wb") as stderr:
            process: trio.Process = await nursery.start(
                lambda task_status: trio.run_process(
                    [*CASLB, "run", str(config), "--workers", "2", "--no-access-log"],
                    check=False, task_status=task_status,
                    stdout=subprocess.DEVNULL, stderr=stderr.wrapped.fileno(),
                )
            )
            run = Running(farm, process, f"http://127.0.0.1:{admin_port}", https, log)
            try:
                await wait_status(run.admin, process)
                with trio.fail_after(20):  # both workers serve and report
                    while set(await per_worker(run)) != {"0", "1"}:
                        assert process.returncode is None, "caslb run exited early"
                        await trio.sleep(0.1)
                yield run
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with trio.fail_after(15):
                    await process.wait()
            assert process.returncode == 0


async def new_connections(run: Running, n: int, path: str = "/owa/") -> Counter[str]:
    """`n` requests for `path`, each on a new connection: which server answered."""
    seen: Counter[str] = Counter()
    with trio.fail_after(30):
        for _ in range(n):
            client = await https_client("127.0.0.1", run.https, ca_path=run.farm.ca_path,
                                        server_hostname=NAMESPACE)
            try:
                response = await client.request("GET", path)
            finally:
                await client.aclose()
            assert response.status == 200, (response.status, response.body[:200])
            seen[response.header("x-feserver") or "?"] += 1
    return seen


async def test_two_workers_share_new_connections_and_stop_on_sigterm(tmp_path: Path) -> None:
    async with running(tmp_path, servers=2) as run:
        seen = await new_connections(run, 40)
        assert sum(seen.values()) == 40
        await settled(run, 40)
        shares = await per_worker(run)
        assert sum(shares.values()) == 40
        assert shares["0"] > 0 and shares["1"] > 0, shares
        run.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            await run.process.wait()
        assert run.process.returncode == 0


async def test_drain_and_a_crash_seen_by_the_supervisor_reach_every_worker(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, servers=3) as run:
        await trio.to_thread.run_sync(post, f"{run.admin}/servers/cas1/drain?pool=owa")
        before = await per_worker(run)
        seen = await new_connections(run, 30)
        assert "CAS1" not in seen and sum(seen.values()) == 30
        await settled(run, 30)
        after = await per_worker(run)
        assert all(after[w] > before[w] for w in ("0", "1")), (before, after)  # both served
        assert await total(run, "caslb_server_http_responses_total",
                           pool="owa", server="cas1") == 0

        run.farm.inject("cas2", "crash")
        with trio.fail_after(15):
            while member(await wait_status(run.admin, run.process),
                         "owa", "cas2")["check"] != "DOWN":
                await trio.sleep(0.1)
        cas2_before = await total(run, "caslb_server_http_responses_total", server="cas2")
        errors_before = await total(run, "caslb_server_connection_errors_total", server="cas2")
        before = await per_worker(run)
        seen = await new_connections(run, 30)
        assert seen == Counter({"CAS3": 30})
        await settled(run, 60)
        after = await per_worker(run)
        assert all(after[w] > before[w] for w in ("0", "1")), (before, after)
        assert await total(run, "caslb_server_http_responses_total", server="cas2") == cas2_before
        assert await total(run, "caslb_server_connection_errors_total",
                           server="cas2") == errors_before


def children(pid: int) -> set[int]:
    """The process ids whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces: fields after its closing paren.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


async def test_a_killed_worker_is_restarted_and_takes_traffic_again(tmp_path: Path) -> None:
    async with running(tmp_path, servers=2) as run:
        first = children(run.process.pid)
        assert len(first) == 2
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(15):
            while len(now := children(run.process.pid)) != 2 or victim in now:
                await trio.sleep(0.1)
        before = await per_worker(run)
        made = 0
        with trio.fail_after(30):
            while True:  # the new worker binds a moment after it starts
                made += sum((await new_connections(run, 10)).values())
                await settled(run, made)
                after = await per_worker(run)
                if all(after[w] > before[w] for w in ("0", "1")):
                    break


async def test_sighup_reloads_supervisor_and_workers_keeping_a_drain(tmp_path: Path) -> None:
    async with running(tmp_path, servers=2) as run:
        await trio.to_thread.run_sync(post, f"{run.admin}/servers/cas1/drain?pool=owa")
        config = tmp_path / "caslb.toml"
        config.write_text(config.read_text().replace('fqdn = "cas2.lab.local"',
                                                     'fqdn = "cas2.lab.local", weight = 3'))
        run.process.send_signal(signal.SIGHUP)
        with trio.fail_after(10):
            while member(await wait_status(run.admin, run.process), "owa", "cas2")["weight"] != 3:
                await trio.sleep(0.1)
        seen = await new_connections(run, 20)
        assert seen == Counter({"CAS2": 20})
        assert member(await wait_status(run.admin, run.process), "owa", "cas1")["admin"] == "DRAIN"


async def logged(run: Running, text: str) -> None:
    """Wait until the supervisor's log holds `text`."""
    with trio.fail_after(15):
        while text not in run.log.read_text():
            assert run.process.returncode is None, "caslb run exited early"
            await trio.sleep(0.1)


async def test_after_sighup_the_supervisor_logs_that_every_worker_runs_its_config(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, servers=2) as run:
        config = tmp_path / "caslb.toml"
        await logged(run, f"config {config_hash(load(config))}: the supervisor and all 2 "
                          "workers run it")
        config.write_text(config.read_text().replace('fqdn = "cas2.lab.local"',
                                                     'fqdn = "cas2.lab.local", weight = 3'))
        reloaded = config_hash(load(config))
        run.process.send_signal(signal.SIGHUP)
        await logged(run, f"config {reloaded}: the supervisor and all 2 workers run it")
