"""The parker's deadline heap and failure boundary under trio's virtual clock (no sockets)."""

from __future__ import annotations

import math
import socket

import trio
import trio.testing

from lb.l4.parking import Parker
from tests.integration.l4_rig import RecordingEvents


class _Sleeper:
    """A parked relay as the parker sees it: no fds, a deadline, its ends recorded."""

    def __init__(self, due: float, *, broken: bool = False) -> None:
        self.deadline = due
        self.broken = broken
        self.ends: list[tuple[str, float]] = []

    def fds(self) -> tuple[int, ...]:
        return ()

    def due(self) -> float:
        return self.deadline

    async def resume(self) -> None:
        self.ends.append(("resume", trio.current_time()))

    def expire(self, now: float) -> None:
        self.ends.append(("expire", now))
        if self.broken:
            raise RuntimeError("bug")

    def shut(self) -> None:
        self.ends.append(("shut", trio.current_time()))


async def test_deadlines_expire_in_order_and_follow_retime(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = RecordingEvents()
    parker = Parker(events)
    late, early, moved = _Sleeper(30.0), _Sleeper(10.0), _Sleeper(50.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(parker.run)
        for sleeper in (late, early, moved):
            assert parker.hold(sleeper)
        await trio.sleep(5)
        moved.deadline = 20.0  # as a drain deadline set while parked
        parker.retime(moved)
        await trio.sleep(40)
        assert early.ends == [("expire", 10.0)]
        assert moved.ends == [("expire", 20.0)]
        assert late.ends == [("expire", 30.0)]
        assert parker.parked == 0
        cancelled = _Sleeper(100.0)
        assert parker.hold(cancelled)
        cancelled.deadline = -math.inf  # the pool cancelled its lease
        parker.retime(cancelled)
        await trio.sleep(0.1)
        assert cancelled.ends == [("expire", 45.0)]
        nursery.cancel_scope.cancel()


async def test_a_relay_parked_again_and_again_keeps_the_heap_small(
    autojump_clock: trio.testing.MockClock,
) -> None:
    parker = Parker(RecordingEvents())
    sleepers = [_Sleeper(1000.0 + i) for i in range(10)]
    async with trio.open_nursery() as nursery:
        await nursery.start(parker.run)
        for sleeper in sleepers:
            parker.hold(sleeper)
        for step in range(1000):  # each retime leaves a stale entry behind
            sleeper = sleepers[step % 10]
            sleeper.deadline += 1
            parker.retime(sleeper)
            assert len(parker._heap) <= 2 * parker.parked + 64
        await trio.sleep(2000)
        assert all(len(s.ends) == 1 for s in sleepers)
        nursery.cancel_scope.cancel()


async def test_a_bug_in_one_relay_ends_it_alone_and_stopping_shuts_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = RecordingEvents()
    parker = Parker(events)
    broken, kept = _Sleeper(10.0, broken=True), _Sleeper(500.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(parker.run)
        parker.hold(broken)
        parker.hold(kept)
        await trio.sleep(20)
        assert broken.ends == [("expire", 10.0), ("shut", 10.0)]  # shut closes what it left
        assert events.counts["internal_error", "l4"] == 1
        assert parker.running and parker.parked == 1
        nursery.cancel_scope.cancel()
    assert kept.ends == [("shut", 20.0)]
    assert not parker.running and not parker.hold(_Sleeper(1.0))


async def test_a_relay_that_fails_as_it_resumes_is_shut_and_the_parker_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = RecordingEvents()
    parker = Parker(events)
    a, b = socket.socketpair()
    failing, other = _Sleeper(100.0), _Sleeper(200.0)

    async def broken_resume() -> None:
        raise RuntimeError("bug while ending")

    failing.resume = broken_resume  # type: ignore[method-assign]
    failing.fds = lambda: (a.fileno(),)  # type: ignore[method-assign]
    with a, b:
        async with trio.open_nursery() as nursery:
            await nursery.start(parker.run)
            parker.hold(failing)
            parker.hold(other)
            b.send(b"x")  # `a` readable: the parker wakes `failing`
            await trio.sleep(1)
            assert failing.ends == [("shut", 0.0)]
            assert events.counts["internal_error", "l4"] == 1
            assert parker.running and parker.parked == 1
            await trio.sleep(300)
            assert other.ends == [("expire", 200.0)]
            nursery.cancel_scope.cancel()
