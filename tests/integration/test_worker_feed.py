"""A worker's state source and pipe (lb/workers/feed.py, pipe.py) over memory streams."""

from __future__ import annotations

import trio
import trio.testing
from prometheus_client import CollectorRegistry

from lb.config.model import PoolConfig, ServerConfig
from lb.metrics import Metrics
from lb.pool import Pool
from lb.workers import (
    AdminChange,
    CheckChange,
    EjectionChange,
    LineReader,
    OutlierOutcome,
    PassiveReport,
    Resync,
    Sequencer,
    Stamp,
    decode_worker,
    encode_control,
    snapshot,
)
from lb.workers.feed import SupervisorFeed
from lb.workers.pipe import SupervisorPipe
from probes.outlier import Outcome
from probes.state import AdminState, CheckState


def pools() -> dict[str, Pool]:
    servers = tuple(ServerConfig(f"cas{i}", f"127.0.0.{i}", 443, f"cas{i}.lab") for i in (1, 2))
    return {"owa": Pool(PoolConfig("owa", servers))}


class WorkerEnds:
    """A worker's feed and pipe over memory streams, and the supervisor's ends of them."""

    def __init__(self) -> None:
        self.to_worker, worker_stdin = trio.testing.memory_stream_one_way_pair()
        self.worker_stdout, from_worker = trio.testing.memory_stream_one_way_pair()
        self.pipe = SupervisorPipe("cfg-a")
        self.feed = SupervisorFeed(LineReader(worker_stdin), self.pipe)
        self.sequence = Sequencer("cfg-a")
        self.replies = LineReader(from_worker)


async def test_gap_asks_for_a_snapshot_and_the_next_snapshot_heals_a_lost_change() -> None:
    supervisor = pools()  # the truth the supervisor sends
    worker = pools()
    ends = WorkerEnds()
    to_worker, worker_stdout, pipe, feed, sequence, replies = (
        ends.to_worker, ends.worker_stdout, ends.pipe, ends.feed, ends.sequence, ends.replies)

    async def send(message: object, *, lost: bool = False) -> None:
        line = encode_control(message, sequence.next())  # type: ignore[arg-type]
        if not lost:
            await to_worker.send_all(line)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe.pump, worker_stdout)
        await send(snapshot(supervisor))
        await nursery.start(feed.run, worker, Metrics(CollectorRegistry()))

        supervisor["owa"].set_check_state("cas1", CheckState.DOWN, 0.0)
        await send(CheckChange("owa", "cas1", CheckState.DOWN), lost=True)
        supervisor["owa"].set_admin("cas2", AdminState.DRAIN, 0.0)
        await send(AdminChange("owa", "cas2", AdminState.DRAIN))

        line = await replies.next()
        assert line is not None
        stamp, message = decode_worker(line)
        assert message == Resync(1) and stamp.config == "cfg-a"
        assert worker["owa"].member("cas2").admin is AdminState.DRAIN
        assert worker["owa"].member("cas1").check_state is CheckState.UP  # the lost one

        await send(snapshot(supervisor))  # asked for, or the periodic one
        await trio.testing.wait_all_tasks_blocked()
        assert worker["owa"].member("cas1").check_state is CheckState.DOWN

        await to_worker.aclose()  # the supervisor is gone
        with trio.fail_after(5):
            await feed.lost.wait()
        nursery.cancel_scope.cancel()


async def test_the_pipe_stamps_outcomes_with_the_config_the_worker_now_runs() -> None:
    stdout, from_worker = trio.testing.memory_stream_one_way_pair()
    pipe = SupervisorPipe("cfg-a")
    pipe.report("owa", "cas1", True, "")  # healthy traffic costs no line
    pipe.report("owa", "cas1", False, "connect refused")
    pipe.now_runs("cfg-b")
    pipe.report("owa", "cas1", True, "")
    await pipe.close()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe.pump, stdout)
        reader = LineReader(from_worker)
        first, second = await reader.next(), await reader.next()
    assert first is not None and second is not None
    assert decode_worker(first)[1] == PassiveReport("owa", "cas1", False, "connect refused")
    assert [decode_worker(line)[0] for line in (first, second)] == [
        Stamp(1, "cfg-a"), Stamp(2, "cfg-b")]


async def test_a_workers_pools_forward_outcomes_up_the_pipe_and_take_the_eject_lines() -> None:
    worker = pools()
    ends = WorkerEnds()
    to_worker, worker_stdout, pipe, feed, sequence, replies = (
        ends.to_worker, ends.worker_stdout, ends.pipe, ends.feed, ends.sequence, ends.replies)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe.pump, worker_stdout)
        await to_worker.send_all(encode_control(snapshot(pools()), sequence.next()))
        await nursery.start(feed.run, worker, Metrics(CollectorRegistry()))
        ejections = worker["owa"].ejections
        now = trio.current_time()
        ejections.record("cas2", Outcome.SUCCESS, now, client="10.0.0.1")
        assert ejections.record("cas1", Outcome.GATEWAY_FAILURE, now, client=None) is None
        pipe.flush_outcomes()
        lines = [await replies.next() for _ in range(2)]
        assert [decode_worker(line)[1] for line in lines if line is not None] == [
            OutlierOutcome("owa", "cas1", Outcome.GATEWAY_FAILURE, None),
            OutlierOutcome("owa", "cas2", Outcome.SUCCESS, "10.0.0.1", 1),
        ]
        await to_worker.send_all(
            encode_control(EjectionChange("owa", "cas1", 30.0), sequence.next()))
        await trio.testing.wait_all_tasks_blocked()
        assert ejections.ejected(trio.current_time()) == {"cas1"}
        nursery.cancel_scope.cancel()
