"""The pure pieces of resource exhaustion: classification, the log throttle, the fd reserve."""

from __future__ import annotations

import errno
import os

import pytest
import trio

from lb.fdreserve import FdReserve, accept_budget, default_reserve, reserve_from_environment
from lb.listeners import Backoff, listen_failure
from probes.local_resources import OncePerInterval, is_local_resource_error


def oserror(number: int) -> OSError:
    return OSError(number, os.strerror(number))


@pytest.mark.parametrize("number", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_resource_errnos_are_local(number: int) -> None:
    assert is_local_resource_error(oserror(number))


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    TimeoutError("connect timeout"),
    OSError("all attempts to connect failed"),
    ValueError("nothing to do with sockets"),
])
def test_server_faults_are_not_local(exc: BaseException) -> None:
    assert not is_local_resource_error(exc)


def test_classification_looks_inside_groups_and_causes() -> None:
    # trio.open_tcp_stream: a generic OSError raised from a group of per-address errors
    wrapped = OSError("all attempts to connect to 127.0.0.11:443 failed")
    wrapped.__cause__ = ExceptionGroup("attempts", [oserror(errno.EMFILE)])
    assert is_local_resource_error(wrapped)
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [oserror(errno.ENOBUFS)])])
    assert is_local_resource_error(nested)
    broken = trio.BrokenResourceError("tls")
    broken.__cause__ = oserror(errno.ENOMEM)
    assert is_local_resource_error(broken)
    refused = ExceptionGroup("attempts", [ConnectionRefusedError(errno.ECONNREFUSED, "x")])
    assert not is_local_resource_error(refused)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_says_the_first_at_once_then_once_per_interval_with_a_count() -> None:
    clock = Clock()
    throttle = OncePerInterval(10.0, clock)
    lines = []
    for _ in range(41):  # one every half second for 20 s
        lines.append(throttle.line("accept paused: too many open files"))
        clock.now += 0.5
    said = [line for line in lines if line is not None]
    assert said == [
        "accept paused: too many open files (once in the last 10s)",
        "accept paused: too many open files (20 times in the last 10s)",
        "accept paused: too many open files (20 times in the last 10s)",
    ]
    assert lines.index(said[1]) == 20


def test_the_throttle_refuses_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        OncePerInterval(0)


def test_the_default_reserve_is_a_quarter_of_the_limit_capped_at_64() -> None:
    assert [default_reserve(n) for n in (16, 128, 256, 1024, 65536)] == [4, 32, 64, 64, 64]


def test_the_budget_counts_two_fds_per_connection_and_stops_at_the_reserve() -> None:
    assert accept_budget(open_fds=100, limit=256, reserve=64) == 46
    assert accept_budget(open_fds=191, limit=256, reserve=64) == 0
    assert accept_budget(open_fds=250, limit=256, reserve=64) == 0


def test_the_reserve_refuses_at_the_reserve_and_recounts_when_spent() -> None:
    opened = [180]
    counts = 0
    now = [0.0]

    def count() -> int:
        nonlocal counts
        counts += 1
        return opened[0]

    reserve = FdReserve(64, count_open=count, fd_limit=lambda: 256, clock=lambda: now[0])
    taken = [reserve.take() for _ in range(6)]  # (256 - 64 - 180) // 2 = 6
    opened[0] = 192  # the six connections took their two fds each
    taken += [reserve.take() for _ in range(4)]
    assert taken == [True] * 6 + [False] * 4
    assert counts == 5  # one count bought six accepts; each refusal recounts
    opened[0] = 100  # clients closed
    assert reserve.take()
    assert "100 of 256 fds open, 64 kept" in reserve.describe()


def test_the_reserve_recounts_a_stale_count_even_with_budget_left() -> None:
    opened, now = [100], [0.0]
    reserve = FdReserve(64, count_open=lambda: opened[0], fd_limit=lambda: 256,
                        clock=lambda: now[0])
    assert reserve.take()
    opened[0] = 250  # something else took fds
    now[0] = 1.0
    assert not reserve.take()


def test_no_reserve_without_a_limit_or_a_count() -> None:
    unlimited = FdReserve(count_open=lambda: 10**6, fd_limit=lambda: None, clock=lambda: 0.0)
    unknown = FdReserve(count_open=lambda: None, fd_limit=lambda: 256, clock=lambda: 0.0)
    disabled = FdReserve(0, count_open=lambda: 255, fd_limit=lambda: 256, clock=lambda: 0.0)
    assert all(r.take() for r in (unlimited, unknown, disabled) for _ in range(100))


def test_the_reserve_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASLB_FD_RESERVE", raising=False)
    assert reserve_from_environment() is None
    monkeypatch.setenv("CASLB_FD_RESERVE", "128")
    assert reserve_from_environment() == 128
    monkeypatch.setenv("CASLB_FD_RESERVE", "lots")
    with pytest.raises(ValueError, match="CASLB_FD_RESERVE='lots'"):
        reserve_from_environment()


def test_the_backoff_doubles_to_its_cap_and_starts_over() -> None:
    backoff = Backoff(0.01, 0.1)
    assert [backoff.next() for _ in range(6)] == [0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    backoff.reset()
    assert backoff.next() == 0.01


def test_a_listen_failure_names_the_address_the_user_and_the_cause() -> None:
    exc = OSError(errno.EADDRINUSE, "error while attempting to bind on address "
                  "('127.0.0.1', 8443): address already in use")
    assert str(listen_failure("127.0.0.1", 8443, "frontend owa-https", exc)) == (
        "cannot listen on 127.0.0.1:8443 for frontend owa-https: address already in use")
    assert str(listen_failure("::1", 9090, "the admin API", oserror(errno.EACCES))) == (
        "cannot listen on [::1]:9090 for the admin API: permission denied")


def test_accepts_whose_upstream_is_not_open_yet_still_count_at_the_next_count() -> None:
    opened, now, counts = [100], [0.0], [0]

    def count() -> int:
        counts[0] += 1
        return opened[0]

    reserve = FdReserve(64, count_open=count, fd_limit=lambda: 256, clock=lambda: now[0])
    assert all(reserve.take() for _ in range(40))  # a burst: 40 client fds, no upstream yet
    opened[0] = 140
    now[0] = 1.0  # the count is stale: 140 open and 40 upstreams owed
    assert all(reserve.take() for _ in range(6))  # (256 - 64 - 180) // 2 = 6
    assert counts[0] == 2
    reserve.take()
    assert counts[0] == 3  # the six spent the budget: counted again
