"""The proxy's decisions as tables: replay, outcome, the error to answer, upstream reuse."""

from __future__ import annotations

import pytest

from lb.l7 import policy
from lb.l7.events import Termination as T
from lb.l7.routing import TimeoutProfile
from probes.outlier import Outcome


@pytest.mark.parametrize(
    ("method", "has_body", "started", "replayed", "termination", "replay"),
    [
        (b"GET", False, False, False, T.UPSTREAM_ERROR, True),
        (b"get", False, False, False, T.SERVER_RESET, True),
        (b"HEAD", False, False, False, T.UPSTREAM_ERROR, True),
        (b"DELETE", False, False, False, T.UPSTREAM_ERROR, True),
        (b"POST", False, False, False, T.UPSTREAM_ERROR, False),  # not idempotent
        (b"PUT", True, False, False, T.UPSTREAM_ERROR, False),  # a body was sent
        (b"GET", False, True, False, T.UPSTREAM_ERROR, False),  # the client saw bytes
        (b"GET", False, False, True, T.UPSTREAM_ERROR, False),  # only once
        (b"GET", False, False, False, T.UPSTREAM_TIMEOUT, False),  # a slow server stays slow
        (b"GET", False, False, False, T.CLIENT_ABORT, False),
        (b"GET", False, False, False, None, False),
    ],
)
def test_replay(
    method: bytes, has_body: bool, started: bool, replayed: bool, termination: T | None,
    replay: bool,
) -> None:
    assert policy.should_replay(
        method=method, has_body=has_body, response_started=started, replayed=replayed,
        termination=termination,
    ) is replay


@pytest.mark.parametrize(
    ("termination", "status", "outcome"),
    [
        (None, 200, Outcome.SUCCESS),
        (None, 404, Outcome.SUCCESS),
        (None, 500, Outcome.SERVER_ERROR),
        (None, 503, Outcome.GATEWAY_FAILURE),
        (T.UPSTREAM_ERROR, None, Outcome.GATEWAY_FAILURE),
        (T.UPSTREAM_TIMEOUT, None, Outcome.GATEWAY_FAILURE),
        (T.CLIENT_ABORT, 500, None),
        (T.BAD_REQUEST, None, None),
        (T.IDLE_TIMEOUT, 200, None),
        (T.SERVER_RESET, None, None),
    ],
)
def test_what_an_attempt_says_about_the_server(
    termination: T | None, status: int | None, outcome: Outcome | None
) -> None:
    assert policy.outcome_of(termination, status) is outcome


@pytest.mark.parametrize(
    ("termination", "status"),
    [
        (T.UPSTREAM_TIMEOUT, 504),
        (T.UPSTREAM_ERROR, 502),
        (T.SERVER_RESET, 502),
        (T.BAD_REQUEST, 400),
        (T.CLIENT_ABORT, None),
        (T.IDLE_TIMEOUT, None),
        (None, None),
    ],
)
def test_the_error_a_client_gets_before_any_response_byte(
    termination: T | None, status: int | None
) -> None:
    events = policy.failure_response(termination, "ews", "reset")
    assert (None if events is None else events[0].status_code) == status


def test_a_pool_reset_is_the_cause_of_any_failure_it_brings() -> None:
    assert policy.termination_after(T.UPSTREAM_ERROR, reset_by_pool=True) is T.SERVER_RESET
    assert policy.termination_after(None, reset_by_pool=True) is None
    assert policy.termination_after(T.CLIENT_ABORT, reset_by_pool=False) is T.CLIENT_ABORT


def test_reuse_and_panic() -> None:
    assert policy.keep_upstream(reusable=True, ejected=False)
    assert not policy.keep_upstream(reusable=True, ejected=True)
    assert not policy.keep_upstream(reusable=False, ejected=False)
    assert policy.in_panic(member_eligible=False, eligible=[False, False])
    assert not policy.in_panic(member_eligible=False, eligible=[False, True])
    assert not policy.in_panic(member_eligible=True, eligible=[False])


def test_long_lived_requests_wait_for_their_head_up_to_the_idle_timeout() -> None:
    assert policy.head_wait(TimeoutProfile("ews", 30.0, 120.0)) == 30.0
    assert policy.head_wait(TimeoutProfile("rpc", None, 900.0)) == 900.0
