"""lb.l7.rebalance: which upstream connections NTLM pins, and when a kept-alive client moves."""

from __future__ import annotations

import pytest

from lb.balancer import Candidate
from lb.l7 import rebalance


@pytest.mark.parametrize(
    ("authorization", "pins"),
    [
        (b"NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==", True),
        (b"Negotiate YIIGhgYGKwYBBQUCoIIGejCC", True),
        (b"negotiate YIIGhgYG", True),
        (b"  ntlm TlRMTVNT", True),
        (b"Basic dXNlcjpwYXNz", False),
        (b"Bearer eyJhbGciOi", False),
        (b"NTLMish abc", False),
        (b"", False),
        (b"   ", False),
        (None, False),
    ],
)
def test_a_request_pins_its_connection_only_with_ntlm_or_negotiate(
    authorization: bytes | None, pins: bool
) -> None:
    assert rebalance.request_pins(authorization) is pins


@pytest.mark.parametrize(
    ("status", "challenges", "pins"),
    [
        (401, [b"NTLM"], True),
        (401, [b"Negotiate, NTLM"], True),
        (401, [b"Basic realm=\"x\"", b"Negotiate"], True),
        (401, [b"Basic realm=\"contoso\""], False),
        (401, [b"Bearer realm=\"x\", NTLMish"], False),
        (401, [], False),
        (200, [b"Negotiate oYG2MIGzoAMKAQChCwYJ"], False),  # a mutual-auth token on success
        (407, [b"NTLM"], False),  # a proxy's challenge: not the server's
    ],
)
def test_a_response_pins_when_a_401_offers_ntlm_or_negotiate(
    status: int, challenges: list[bytes], pins: bool
) -> None:
    headers = [(b"content-length", b"0"), *((b"www-authenticate", c) for c in challenges)]
    assert rebalance.response_pins(status, headers) is pins


def test_other_headers_naming_ntlm_do_not_pin() -> None:
    assert not rebalance.response_pins(401, [(b"x-auth", b"NTLM"), (b"server", b"Negotiate")])


@pytest.mark.parametrize(
    ("usable", "serving", "ejected", "kept"),
    [
        (True, True, False, True),  # READY or draining: NTLM state stays with the client
        (False, True, False, False),  # closed or read by the server: the state is gone anyway
        (True, False, False, False),  # DOWN or in maintenance
        (True, True, True, False),  # ejected: the client authenticates elsewhere
    ],
)
def test_a_pinned_connection_is_kept_while_its_server_serves(
    usable: bool, serving: bool, ejected: bool, kept: bool
) -> None:
    assert rebalance.keep_pinned(usable=usable, serving=serving, ejected=ejected) is kept


def test_a_client_stays_when_the_pick_is_its_own_server() -> None:
    here = Candidate("cas1", active=9)
    assert not rebalance.moves(here, here, sticky=False)
    assert not rebalance.moves(here, Candidate("cas1", active=9), sticky=True)


def test_a_client_moves_to_a_server_that_would_carry_it_at_a_lower_load() -> None:
    # A recovered server with nothing on it takes clients from a loaded one.
    assert rebalance.moves(Candidate("cas1", active=5), Candidate("cas2", active=0), sticky=False)
    # Even loads (or one apart): a move would only trade places, so nobody moves.
    assert not rebalance.moves(Candidate("cas1", active=3), Candidate("cas2", active=3),
                               sticky=False)
    assert not rebalance.moves(Candidate("cas1", active=3), Candidate("cas2", active=2),
                               sticky=False)
    assert rebalance.moves(Candidate("cas1", active=3), Candidate("cas2", active=1), sticky=False)


def test_moves_follow_weights_and_the_slow_start_ramp() -> None:
    empty_ramping = Candidate("cas2", weight=1, ramp=0.1, active=0)
    # At a tenth of its weight, one connection weighs 10 on it: cas1 must carry more.
    assert not rebalance.moves(Candidate("cas1", active=10), empty_ramping, sticky=False)
    assert rebalance.moves(Candidate("cas1", active=11), empty_ramping, sticky=False)
    heavy = Candidate("cas1", weight=4, active=4)  # load 1 per unit of weight
    assert not rebalance.moves(heavy, Candidate("cas2", weight=1, active=0), sticky=False)
    assert rebalance.moves(heavy, Candidate("cas2", weight=2, active=0), sticky=False)


def test_moves_converge_instead_of_trading_clients() -> None:
    # 12 clients on cas1, cas2 back with nothing: each request of each client is
    # balanced afresh; every move evens the load and the moves stop.
    active = {"cas1": 12, "cas2": 0}
    moved = 0
    for _ in range(10):  # ten rounds of every client asking
        clients = [name for name, n in active.items() for _ in range(n)]
        for at in clients:
            other = "cas2" if at == "cas1" else "cas1"
            here, there = Candidate(at, active=active[at]), Candidate(other, active=active[other])
            if rebalance.moves(here, there, sticky=False):
                active[at] -= 1
                active[other] += 1
                moved += 1
    assert active == {"cas1": 6, "cas2": 6}
    assert moved == 6


def test_a_source_pool_follows_its_hash_whatever_the_loads() -> None:
    # The hash names where a client belongs: back home even onto a busier server.
    assert rebalance.moves(Candidate("cas1", active=1), Candidate("cas2", active=40), sticky=True)
