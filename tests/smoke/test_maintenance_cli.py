"""`caslb maintenance start|end` as a subprocess against a real admin server on real
pools, with connections held on the drained server as leases (what a proxied
connection holds while it runs)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Sequence

import pytest
import trio

from lb.cli.maintenance import progress_line, remaining, verdict
from lb.pool import Pool
from probes.state import AdminState
from tests.smoke.test_admin_pools import Balancer, make_pools, start

pytestmark = pytest.mark.smoke

CASLB = [sys.executable, "-c", "from lb.cli import main; main()"]


class Held:
    """Connections held on a server, each released on demand or reset by the pool."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.releases: list[trio.Event] = []

    async def hold(self, pool: Pool, server: str) -> None:
        release = trio.Event()
        self.releases.append(release)
        ready = trio.Event()

        async def connection() -> None:
            with pool.lease(pool.member(server)) as lease, lease.scope:
                ready.set()
                await release.wait()

        self.nursery.start_soon(connection)
        await ready.wait()


class Cli:
    """The real `caslb` in a subprocess, read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process, self.buffer = process, b""

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.process.stdout.receive_some()
            assert chunk, f"caslb ended: {self.buffer!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def line_with(self, text: str) -> str:
        while text not in (line := await self.line()):
            pass
        return line


async def caslb(nursery: trio.Nursery, lb: Balancer | str, *args: str,
                more: Sequence[Balancer | str] = ()) -> Cli:
    """`caslb ARGS --admin URL` for `lb` and every node in `more` (an HA pair)."""
    admins = [a for node in (lb, *more)
              for a in ("--admin", node if isinstance(node, str) else node.url)]
    process = await nursery.start(lambda task_status: trio.run_process(
        [*CASLB, *args, *admins], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        check=False, task_status=task_status))
    return Cli(process)


async def test_wait_counts_down_as_clients_leave(nursery: trio.Nursery) -> None:
    pools = make_pools()
    lb = await start(nursery, pools)
    held = Held(nursery)
    for pool in ("owa", "owa", "ews-pool"):
        await held.hold(pools[pool], "cas1")
    cli = await caslb(nursery, lb, "maintenance", "start", "cas1", "--wait",
                      "--interval", "0.05")
    assert (await cli.line_with("cas1: admin")).startswith("cas1: admin DRAIN in 2 pool(s)")
    assert "3 of 3 left  ews-pool 1  owa 2" in await cli.line_with("left")
    assert all(p.member("cas1").admin is AdminState.DRAIN for p in pools.values())
    for release, now_left in zip(held.releases, ("2 of 3", "1 of 3", "0 of 3"), strict=True):
        release.set()
        assert now_left in await cli.line_with("left")
    assert await cli.line() == "cas1: no connection left: safe to patch"
    assert await cli.process.wait() == 0


async def test_grace_resets_what_is_left_and_says_so(nursery: trio.Nursery) -> None:
    pools = make_pools()
    lb = await start(nursery, pools)
    held = Held(nursery)
    await held.hold(pools["owa"], "cas1")
    await held.hold(pools["ews-pool"], "cas1")
    held.releases[0].set()  # one client leaves by itself; the other stays past the grace
    cli = await caslb(nursery, lb, "maintenance", "start", "cas1", "--wait", "--grace", "0.2",
                      "--interval", "0.05")
    line = await cli.line_with("safe to patch")
    assert line == ("cas1: grace of 0.2s expired; reset 1 connection(s): ews-pool 1; "
                    "safe to patch")
    assert await cli.process.wait() == 0
    assert pools["ews-pool"].member("cas1").active == 0  # the pool reset it
    assert pools["ews-pool"].member("cas1").admin is AdminState.MAINT


async def test_end_enables_everywhere(nursery: trio.Nursery) -> None:
    pools = make_pools()
    lb = await start(nursery, pools)
    cli = await caslb(nursery, lb, "maintenance", "start", "cas1")
    assert await cli.process.wait() == 0
    cli = await caslb(nursery, lb, "maintenance", "end", "cas1")
    assert (await cli.line()).startswith("cas1: admin READY in 2 pool(s)")
    assert await cli.process.wait() == 0
    assert all(p.member("cas1").admin is AdminState.READY for p in pools.values())


async def test_one_command_drains_both_nodes_of_a_pair(nursery: trio.Nursery) -> None:
    lb1_pools, lb2_pools = make_pools(), make_pools()
    lb1, lb2 = await start(nursery, lb1_pools), await start(nursery, lb2_pools)
    cli = await caslb(nursery, lb1, "drain", "cas1", more=[lb2])
    assert (await cli.line()).startswith(f"{lb1.url}: cas1: admin DRAIN in 2 pool(s)")
    assert (await cli.line_with(lb2.url)).startswith(f"{lb2.url}: cas1: admin DRAIN")
    assert await cli.process.wait() == 0
    for pools in (lb1_pools, lb2_pools):
        assert all(p.member("cas1").admin is AdminState.DRAIN for p in pools.values())
    cli = await caslb(nursery, lb1, "enable", "cas1", "--pool", "owa", more=[lb2])
    assert await cli.process.wait() == 0
    for pools in (lb1_pools, lb2_pools):
        assert pools["owa"].member("cas1").admin is AdminState.READY
        assert pools["ews-pool"].member("cas1").admin is AdminState.DRAIN


async def test_a_node_that_does_not_answer_does_not_stop_the_other(
        nursery: trio.Nursery) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}"
    pools = make_pools()
    lb = await start(nursery, pools)
    cli = await caslb(nursery, down, "maint", "cas2", more=[lb])
    assert await cli.process.wait() == 1
    assert all(p.member("cas2").admin is AdminState.MAINT for p in pools.values())
    assert cli.process.stderr is not None
    errors = (await cli.process.stderr.receive_some()).decode()
    assert f"caslb: {down}: cannot reach the admin API at {down}" in errors
    assert "maint cas2: done on 1 of 2 node(s); repeat it once the others answer" in errors


async def test_wait_counts_the_connections_of_both_nodes(nursery: trio.Nursery) -> None:
    lb1_pools, lb2_pools = make_pools(), make_pools()
    lb1, lb2 = await start(nursery, lb1_pools), await start(nursery, lb2_pools)
    held = Held(nursery)
    await held.hold(lb1_pools["owa"], "cas1")
    await held.hold(lb2_pools["owa"], "cas1")
    cli = await caslb(nursery, lb1, "maintenance", "start", "cas1", "--wait",
                      "--interval", "0.05", more=[lb2])
    assert "2 of 2 left  ews-pool 0  owa 2" in await cli.line_with("left")
    held.releases[1].set()
    assert "1 of 2 left  ews-pool 0  owa 1" in await cli.line_with("1 of 2")
    held.releases[0].set()
    assert await cli.line_with("safe") == "cas1: no connection left: safe to patch"
    assert await cli.process.wait() == 0
    for pools in (lb1_pools, lb2_pools):
        assert all(p.member("cas1").admin is AdminState.DRAIN for p in pools.values())


def test_progress_and_verdict_lines() -> None:
    doc = {"pools": {"owa": {"servers": [{"name": "cas1", "active": 2},
                                          {"name": "cas2", "active": 5}]},
                     "smtp": {"servers": [{"name": "cas2", "active": 1}]}}}
    assert remaining(doc, "cas1") == {"owa": 2}
    assert progress_line("cas1", 4, {"owa": 2, "ews": 0}) == (
        "cas1 [##########..........] 2 of 4 left  owa 2  ews 0")
    assert progress_line("cas1", 0, {}) == f"cas1 [{'#' * 20}] 0 of 0 left  "
    assert verdict("cas1", {}, 5.0) == "cas1: no connection left: safe to patch"
