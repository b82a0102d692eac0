"""The workers' side of outlier ejection: the lines, the batching of successes, following."""

from __future__ import annotations

import pytest

from lb.config import PoolConfig, ServerConfig
from lb.pool import Pool
from lb.workers import (
    EjectionChange,
    OutcomeBatcher,
    OutlierOutcome,
    Snapshot,
    Stamp,
    apply_control,
    decode_control,
    decode_worker,
    encode_control,
    encode_worker,
    snapshot,
)
from probes.outlier import Outcome, OutlierSettings
from probes.state import CheckState

OK, ERR, GW = Outcome.SUCCESS, Outcome.SERVER_ERROR, Outcome.GATEWAY_FAILURE
STAMP = Stamp(7, "cfg")


def pools() -> dict[str, Pool]:
    servers = tuple(ServerConfig(f"cas{i}", "127.0.0.1", 443, f"cas{i}.lab") for i in (1, 2, 3))
    settings = OutlierSettings(consecutive_errors=3, consecutive_gateway_failures=3,
                               max_ejection_percent=50)
    return {"owa": Pool(PoolConfig("owa", servers, outlier=settings))}


@pytest.mark.parametrize("message", [
    OutlierOutcome("owa", "cas1", GW, None),
    OutlierOutcome("owa", "cas1", ERR, "10.0.0.1"),
    OutlierOutcome("owa", "cas2", OK, "10.0.0.1", 250),
])
def test_outcomes_round_trip(message: OutlierOutcome) -> None:
    assert decode_worker(encode_worker(message, STAMP)) == (STAMP, message)


@pytest.mark.parametrize("message", [
    EjectionChange("owa", "cas1", 29.5),
    EjectionChange("owa", "cas1", None),
    Snapshot((), (EjectionChange("owa", "cas1", 12.0),)),
])
def test_ejections_round_trip(message: EjectionChange | Snapshot) -> None:
    assert decode_control(encode_control(message, STAMP)) == (STAMP, message)


def test_a_snapshot_without_ejections_decodes_as_none_in_force() -> None:
    line = b'{"t":"snapshot","seq":1,"cfg":"c","members":[]}'
    assert decode_control(line)[1] == Snapshot(())


@pytest.mark.parametrize("line", [
    b'{"t":"outcome","seq":1,"cfg":"c","pool":"p","server":"s","outcome":"meh","client":null,'
    b'"n":1}',
    b'{"t":"outcome","seq":1,"cfg":"c","pool":"p","server":"s","outcome":"server_error",'
    b'"client":null,"n":2}',
    b'{"t":"outcome","seq":1,"cfg":"c","pool":"p","server":"s","outcome":"success",'
    b'"client":3,"n":1}',
])
def test_bad_outcome_lines_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode_worker(line)


@pytest.mark.parametrize("line", [
    b'{"t":"eject","seq":1,"cfg":"c","pool":"p","server":"s","for":-1}',
    b'{"t":"eject","seq":1,"cfg":"c","pool":"p","server":"s","for":"soon"}',
    b'{"t":"snapshot","seq":1,"cfg":"c","members":[],"ejections":[["p","s"]]}',
])
def test_bad_ejection_lines_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode_control(line)


def test_failures_go_at_once_and_successes_in_counted_batches() -> None:
    batcher = OutcomeBatcher()
    assert batcher.add("owa", "cas2", OK, "a") == []
    assert batcher.add("owa", "cas2", OK, "a") == []
    assert batcher.add("owa", "cas2", OK, "b") == []
    # A failure first sends that server's batched successes, in order.
    assert batcher.add("owa", "cas2", GW, None) == [
        OutlierOutcome("owa", "cas2", OK, "a", 2), OutlierOutcome("owa", "cas2", OK, "b", 1),
        OutlierOutcome("owa", "cas2", GW, None),
    ]
    # The success that ends a failing run goes at once: it resets the streak.
    assert batcher.add("owa", "cas2", OK, "a") == [OutlierOutcome("owa", "cas2", OK, "a")]
    assert batcher.add("owa", "cas2", OK, "a") == []
    assert batcher.add("owa", "cas3", OK, "a") == []
    assert batcher.flush() == [
        OutlierOutcome("owa", "cas2", OK, "a", 1), OutlierOutcome("owa", "cas3", OK, "a", 1),
    ]
    assert batcher.flush() == []


def test_a_following_pool_forwards_outcomes_and_applies_decisions() -> None:
    worker = pools()["owa"]
    sent: list[tuple[str, str, Outcome, str | None]] = []
    worker.ejections.follow(lambda *outcome: sent.append(outcome))
    for _ in range(5):
        assert worker.ejections.record("cas1", GW, 10.0, client=None) is None
    assert sent == [("owa", "cas1", GW, None)] * 5
    assert worker.ejections.ejected(10.0) == frozenset()  # not the worker's to decide
    worker.ejections.apply("cas1", 40.0)
    assert worker.ejections.ejected(39.0) == {"cas1"} and worker.ejections.ejected(40.0) == set()
    assert worker.ejections.ejected_until("cas1", 12.0) == 40.0


def test_the_supervisors_snapshot_carries_ejections_as_seconds_left() -> None:
    supervisor, worker = pools(), pools()
    worker["owa"].ejections.follow(lambda *outcome: None)
    for _ in range(3):
        supervisor["owa"].ejections.record("cas1", GW, 100.0, client=None)
    message = snapshot(supervisor, now=110.0)
    assert message.ejections == (EjectionChange("owa", "cas1", 20.0),)
    assert snapshot(supervisor).ejections == ()
    apply_control(worker, message, 5.0)  # the worker's clock is its own
    assert worker["owa"].ejections.ejected_until("cas1", 5.0) == 25.0
    worker["owa"].ejections.apply("cas2", 50.0)  # a lift line was lost
    apply_control(worker, message, 6.0)
    assert worker["owa"].ejections.ejected(6.0) == {"cas1"}


def test_an_eject_line_and_a_check_up_after_down_in_the_worker() -> None:
    worker = pools()
    worker["owa"].ejections.follow(lambda *outcome: None)
    apply_control(worker, EjectionChange("owa", "cas1", 30.0), 1.0)
    assert worker["owa"].ejections.ejected(2.0) == {"cas1"}
    apply_control(worker, EjectionChange("owa", "cas1", None), 3.0)
    assert worker["owa"].ejections.ejected(3.0) == frozenset()
    apply_control(worker, EjectionChange("owa", "cas1", 30.0), 4.0)
    worker["owa"].set_check_state("cas1", CheckState.DOWN, 5.0)
    worker["owa"].set_check_state("cas1", CheckState.UP, 6.0)  # as the supervisor's lift
    assert worker["owa"].ejections.ejected(6.0) == frozenset()
    apply_control(worker, EjectionChange("gone", "cas1", 30.0), 7.0)  # unknown pool: ignored
