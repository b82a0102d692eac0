"""Which server a kept-alive client's next request goes to: pinned, kept, or moved.

Why. A client connection keeps its upstream connection to a pool between
requests. Kept for good, a server that recovers never sees the kept-alive
clients that left it again. So each request is balanced afresh, except where
the upstream connection carries authentication state.

Pinning (HAProxy marks such a connection "private"). NTLM, and Negotiate as
IIS runs it, authenticate the TCP connection, not each request: the three legs
of the handshake and every request after it must use the same upstream
connection. A connection is pinned for the rest of its client connection once
a request on it carries `Authorization: NTLM|Negotiate ...` or the server
answers 401 offering NTLM or Negotiate in `WWW-Authenticate`. A pinned
connection keeps carrying its client while its server serves at all: through a
drain (as HAProxy lets a private connection finish), not once the server is
DOWN, in maintenance or ejected (the client then authenticates elsewhere).

Moving. An unpinned connection is balanced afresh, at most once every
RECHECK_EVERY seconds so that the other requests pay one comparison: the pool
picks a server as for a new connection (its strategy, slow start, ejections),
and the client moves only when that helps. For a `source` pool that is
whenever the hash names another server (the hash says where a client
belongs); otherwise, when the picked server would carry this connection at a
lower weighted load (connections per unit of effective weight, slow start
applied) than the current server carries now. Moves thus even out the
connections and stop, instead of trading clients back and forth at every turn
of a round robin: a move may cost a connect (and a TLS handshake when
re-encrypting), unless a connection to the new server is parked idle
(lb.l7.sharing), where the connection left is parked in its turn. (A
connection whose server is drained, DOWN or ejected is left at its next
request, as before: lb.l7.policy.keep_upstream.)

Seam. tests/smoke/test_ntlm_shared_upstream.py replaces `request_pins`,
`response_pins` (as lb.l7.relay imported it), `RECHECK_EVERY` (here and in
lb.l7.upstream) and `moves`, to show that without them two interleaved NTLM
logons fail: keep these names module-level, read at call time.
"""

from __future__ import annotations

from collections.abc import Iterable

from lb.balancer import Candidate

_BINDING_SCHEMES = (b"ntlm", b"negotiate")

RECHECK_EVERY = 1.0
"""Seconds between two fresh balancings of one kept-alive client connection."""


def _binds(credentials: bytes) -> bool:
    """Whether an auth header value names NTLM or Negotiate (its first scheme token)."""
    return credentials.strip().partition(b" ")[0].lower() in _BINDING_SCHEMES


def request_pins(authorization: bytes | None) -> bool:
    """Whether a request's `Authorization` binds its upstream connection (NTLM/Negotiate)."""
    return authorization is not None and _binds(authorization)


def response_pins(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a response binds its upstream connection: a 401 offering NTLM or Negotiate.

    Each `WWW-Authenticate` field may list several challenges separated by
    commas (`Negotiate, NTLM`); any one binding scheme is enough.
    """
    if status != 401:
        return False
    for name, value in headers:
        if name == b"www-authenticate" and any(_binds(part) for part in value.split(b",")):
            return True
    return False


def keep_pinned(*, usable: bool, serving: bool, ejected: bool) -> bool:
    """Whether a pinned connection carries its client's next request.

    Args:
        usable: open, idle and unread (`UpstreamConnection.usable`).
        serving: its server still serves what it carries (UP; READY or draining).
        ejected: outlier detection has its server out.
    """
    return usable and serving and not ejected


def moves(current: Candidate, picked: Candidate, *, sticky: bool) -> bool:
    """Whether an unpinned connection on `current` moves to the freshly `picked` server.

    Args:
        current: its server now, as the strategy weighs it (this connection counted).
        picked: what the pool picked for the request.
        sticky: the pool hashes clients to servers (`source`).
    """
    if picked.name == current.name:
        return False
    if sticky:
        return True
    return picked.load_after_pick < current.active / current.effective_weight
