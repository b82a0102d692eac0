"""The proxy's decisions, as pure functions of what happened: no I/O, no clock.

The driver (lb.l7.proxy) asks; these answer with values it acts on:
- whether a client's existing unpinned upstream connection may carry its next
  request, or a server must be picked afresh (`keep_upstream`; whether a fresh
  pick moves it anyway, and pinning, are lb.l7.rebalance's);
- whether a failed attempt is replayed on another server (`should_replay`):
  only an idempotent request without a body, only before any response byte
  reached the client, only once, and only when the server failed (an error or
  the pool's reset), never when the client did;
- whether a failure on a kept connection was the server closing it as it
  idled (`closed_while_kept`): replayed on the same server, blamed on nobody;
- what an attempt says about the server, for passive health and outlier
  detection (`outcome_of`): a client that left, a bad request, a stalled body
  or the pool's own reset say nothing; a broken or silent server is a gateway
  failure; a 5xx it chose to send is a server error;
- which error the client gets when an attempt failed before any response
  byte reached it (`failure_response`): 504 for a response timeout, 400 for a
  malformed body, else 502; nothing when the client itself is gone.
"""

from __future__ import annotations

from collections.abc import Iterable

from lb.l7 import responses
from lb.l7.events import Termination
from lb.l7.routing import TimeoutProfile
from probes.outlier import Outcome

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
GATEWAY_STATUSES = frozenset({502, 503, 504})
_SAYS_NOTHING = frozenset(
    {
        Termination.CLIENT_ABORT,
        Termination.SERVER_RESET,
        Termination.BAD_REQUEST,
        Termination.IDLE_TIMEOUT,
    }
)
_SERVER_FAILED = frozenset({Termination.UPSTREAM_ERROR, Termination.UPSTREAM_TIMEOUT})
_REPLAYED_AFTER = frozenset({Termination.UPSTREAM_ERROR, Termination.SERVER_RESET})
_CLIENT_GONE = frozenset({Termination.CLIENT_ABORT, Termination.IDLE_TIMEOUT})


def keep_upstream(*, reusable: bool, ejected: bool) -> bool:
    """Whether a client's open upstream connection carries its next request.

    Args:
        reusable: the connection is idle, open and unread, and its server may
            take traffic (`UpstreamConnection.reusable`, asked with `in_panic`).
        ejected: outlier detection has its server out.
    """
    return reusable and not ejected


def in_panic(*, member_eligible: bool, eligible: Iterable[bool]) -> bool:
    """Whether the pool routes to everyone, as far as this member is concerned.

    Panic (no member eligible) matters only when this member is not eligible.
    """
    return not member_eligible and not any(eligible)


def replayable(*, method: bytes, has_body: bool, may_retry: bool = True) -> bool:
    """Whether a request is one the proxy may send again: bodiless and idempotent,
    in a pool that retries at all (so it also may take a shared idle connection:
    lb.l7.idle.may_take)."""
    return may_retry and not has_body and method.upper() in IDEMPOTENT_METHODS


def should_replay(
    *,
    method: bytes,
    has_body: bool,
    response_started: bool,
    replayed: bool,
    termination: Termination | None,
    may_retry: bool = True,
) -> bool:
    """Whether a failed attempt is sent again (where: the pool's retry policy says).

    Args:
        may_retry: the pool's retry policy allows a retry at all.
    """
    return (
        replayable(method=method, has_body=has_body, may_retry=may_retry)
        and not response_started
        and not replayed
        and termination in _REPLAYED_AFTER
    )


def closed_while_kept(
    *, reused: bool, response_started: bool, termination: Termination | None
) -> bool:
    """Whether a kept connection failed because the server had just closed it.

    A server closes idle keep-alive connections (IIS after its connectionTimeout,
    120 s by default); one that does so as a request crosses the close fails
    the request before any response byte. That says nothing about the server's
    health, and the server is fine to try again on a fresh connection, as
    HAProxy does for idempotent requests on a reused connection.
    """
    return reused and not response_started and termination is Termination.UPSTREAM_ERROR


def termination_after(
    termination: Termination | None, *, reset_by_pool: bool
) -> Termination | None:
    """How an attempt ended, once the pool's part is known.

    A failure on a connection whose lease the pool cancelled (server DOWN, end of
    a drain grace) is the pool's doing, whatever the read or write reported.
    """
    if reset_by_pool and termination is not None:
        return Termination.SERVER_RESET
    return termination


def outcome_of(termination: Termination | None, status: int | None) -> Outcome | None:
    """What an attempt says about the server, or None when it says nothing."""
    if termination in _SAYS_NOTHING:
        return None
    if termination in _SERVER_FAILED:
        return Outcome.GATEWAY_FAILURE
    if status is not None and status >= 500:
        return Outcome.GATEWAY_FAILURE if status in GATEWAY_STATUSES else Outcome.SERVER_ERROR
    return Outcome.SUCCESS


def failure_response(
    termination: Termination | None, pool: str, detail: str
) -> responses.ErrorEvents | None:
    """The error for a client whose attempt failed before a response byte, or None."""
    if termination is None or termination in _CLIENT_GONE:
        return None
    if termination is Termination.UPSTREAM_TIMEOUT:
        return responses.gateway_timeout(pool)
    if termination is Termination.BAD_REQUEST:
        return responses.bad_request(detail)
    return responses.bad_gateway(pool, detail or "upstream failed")


def head_wait(profile: TimeoutProfile) -> float:
    """Seconds a finished request waits for its response head.

    A short request gets the response timeout; a long-lived one (no response
    timeout) is bounded only by its protocol's idle timeout.
    """
    return profile.response_timeout or profile.idle_timeout
