"""The app's two seams (lb/seams.py) with sources and sinks other than its own probes."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping

import pytest
import trio

from lb.app import Balancer, serve
from lb.config import parse
from lb.health import OwnProbes
from lb.pool import Pool
from lb.seams import ProbeEvents
from probes.checks import CheckResult
from probes.state import CheckProgress, CheckState
from tests.smoke.test_admin_app import config_text, echo


async def round_trip(address: tuple[str, int], data: bytes) -> bytes:
    """What comes back for `data`; empty when the balancer closed or reset the connection."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        try:
            await stream.send_all(data)
            return bytes(await stream.receive_some(65536))
        except trio.BrokenResourceError:
            return b""


class ScriptedStates:
    """A state source that sets the states the test asks for, nothing else."""

    def __init__(self, initial: CheckState) -> None:
        self.initial = initial
        self.pools: Mapping[str, Pool] = {}
        self.changes = 0

    def last_result(self, pool: str, server: str) -> CheckResult | None:
        return None

    def check_progress(self, pool: str, server: str) -> CheckProgress | None:
        return None

    def pools_changed(self) -> None:
        self.changes += 1

    def set(self, state: CheckState) -> None:
        for pool in self.pools.values():
            for member in pool.members:
                pool.set_check_state(member.name, state, trio.current_time())

    async def run(
        self, pools: Mapping[str, Pool], events: ProbeEvents, *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.pools = pools
        self.set(self.initial)
        task_status.started()
        await trio.sleep_forever()


class RecordedOutcomes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool, str]] = []

    def report(self, pool: str, server: str, ok: bool, reason: str) -> None:
        self.seen.append((pool, server, ok, reason))


async def start(nursery: trio.Nursery, states: ScriptedStates, outcomes: RecordedOutcomes,
                *, server_port: int | None = None) -> Balancer:
    if server_port is None:
        [server] = await nursery.start(
            lambda task_status: trio.serve_tcp(echo, 0, host="127.0.0.1",
                                               task_status=task_status))
        server_port = server.socket.getsockname()[1]
    config = parse(tomllib.loads(config_text(server_port)))
    frontend = await trio.open_tcp_listeners(0, host="127.0.0.1")
    app: Balancer = await nursery.start(lambda task_status: serve(
        config, states=states, outcomes=outcomes, admin=False,
        listeners={"tcp": frontend}, task_status=task_status,
    ))
    return app


async def test_the_first_connection_sees_the_states_the_source_set_before_it_started(
    nursery: trio.Nursery,
) -> None:
    states = ScriptedStates(CheckState.DOWN)
    app = await start(nursery, states, RecordedOutcomes())
    assert not app.pools["echo"].member("echo").eligible
    assert await round_trip(app.addresses["tcp"], b"ping") == b""  # no server: closed
    states.set(CheckState.UP)
    assert await round_trip(app.addresses["tcp"], b"ping") == b"ping"
    assert app.admin_address is None  # admin=False: no admin API


async def test_traffic_outcomes_go_to_the_sink_and_reloads_reach_the_source(
    nursery: trio.Nursery,
) -> None:
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connects are refused
    states, outcomes = ScriptedStates(CheckState.UP), RecordedOutcomes()
    app = await start(nursery, states, outcomes, server_port=port)
    assert await round_trip(app.addresses["tcp"], b"ping") == b""
    assert [(pool, server, ok) for pool, server, ok, _ in outcomes.seen] == [
        ("echo", "echo", False)]
    await app.reload(app.config)
    assert states.changes == 1


async def test_serve_takes_both_seams_or_neither() -> None:
    config = parse(tomllib.loads(config_text(1)))
    with pytest.raises(TypeError, match="both"):
        await serve(config, states=OwnProbes())
