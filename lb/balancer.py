"""Pure server selection strategies: which of a pool's candidates gets the next connection.

Theory of operation
-------------------
The pool (lb/pool.py) decides *who may* be picked (health, admin state, panic)
and hands a strategy a list of `Candidate`s: name, configured weight, slow-start
ramp in (0, 1] and current active count. The strategy decides *who is* picked.
Strategies hold only their own small state (a cursor, smooth-WRR counters, an
RNG) and never touch trio or sockets, so they are unit-tested with plain numbers.

Every strategy sees the slow-start ramp, so a recovered or new server is not
flooded (docs/exchange.md §4: a fresh server holds no connections, which least-conn
would otherwise read as "idle, send everything there"):

- roundrobin: smooth weighted round robin where every server counts as weight 1
  times its ramp. With no server ramping this is plain round robin.
- wrr: smooth weighted round robin (nginx's algorithm, an EDF variant): each pick
  adds every candidate's effective weight to its counter, takes the largest,
  and subtracts the total from the winner. Over any window of sum(weights)
  picks each server gets exactly its weight, spread out rather than in bursts.
- leastconn: the lowest (active + 1) / effective weight, i.e. the load the
  server *would* carry after taking this connection. A ramping server has a
  small effective weight, so its first connection already costs a lot; scoring
  active / weight instead would make a fresh server win every pick until it
  caught up (the black hole of Envoy #19437). Ties rotate.
- random2: two distinct candidates drawn at random in proportion to effective
  weight; the lower least-conn score wins (Mitzenmacher's power of two choices).
- source: weighted rendezvous hashing (HRW) of the client address: each server
  scores -weight / ln(u) with u a hash of (client, server) in (0, 1), highest
  wins. Removing a server moves only the clients it held; no ring to rebuild.
  Without a client address it falls back to smooth round robin.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Envoy's default min_weight_percent: a ramp starting at ~0 starves the server
# for most of the window (Envoy #29259), so it starts at a tenth.
MIN_RAMP = 0.1


class Balance(enum.Enum):
    """The selection strategies a pool can use, by config name."""

    ROUNDROBIN = "roundrobin"
    WRR = "wrr"
    LEASTCONN = "leastconn"
    RANDOM2 = "random2"
    SOURCE = "source"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One server a strategy may pick.

    Attributes:
        name: the server's name, unique in its pool.
        weight: configured weight (≥ 1).
        ramp: slow-start factor in (0, 1]; 1 when not ramping.
        active: connections or requests the server carries now.
    """

    name: str
    weight: int = 1
    ramp: float = 1.0
    active: int = 0

    @property
    def effective_weight(self) -> float:
        """Configured weight scaled by the slow-start ramp."""
        return self.weight * self.ramp

    @property
    def load_after_pick(self) -> float:
        """Least-conn score: the weighted load if this server took one more."""
        return (self.active + 1) / self.effective_weight


def slowstart_ramp(now: float, up_since: float | None, window: float) -> float:
    """The slow-start factor of a server that became eligible at `up_since`.

    Args:
        now: current time.
        up_since: when the server (re)entered service, None if it has been in
            service since the pool started (no ramp).
        window: the slow-start duration; 0 disables slow start.

    Returns:
        A linear ramp from MIN_RAMP at `up_since` to 1.0 at `up_since + window`.
    """
    if up_since is None or window <= 0:
        return 1.0
    elapsed = now - up_since
    if elapsed >= window:
        return 1.0
    return max(MIN_RAMP, elapsed / window)


def in_panic(healthy: int, total: int, threshold: float) -> bool:
    """Whether a pool should route to every server regardless of health (Envoy).

    Args:
        healthy: members whose check is UP.
        total: all members.
        threshold: the healthy share below which the pool panics; 0 disables.
    """
    return threshold > 0 and total > 0 and healthy / total < threshold


class Strategy(Protocol):
    """Chooses one candidate; returns None only for an empty list."""

    def choose(
        self, candidates: Sequence[Candidate], client: str | None = None
    ) -> Candidate | None:
        """Pick one of `candidates` (client is the source address, if known)."""
        ...


class SmoothWeighted:
    """Smooth weighted round robin (nginx); see the module docstring.

    Args:
        unit_weights: count every server as weight 1 (plain round robin); the
            slow-start ramp still applies.
    """

    def __init__(self, *, unit_weights: bool = False) -> None:
        self._unit = unit_weights
        # Counters of servers absent from one pick (down, excluded) are kept as
        # they were, so a short absence does not reshuffle the sequence.
        self._current: dict[str, float] = {}

    def _weight(self, c: Candidate) -> float:
        return c.ramp if self._unit else c.effective_weight

    def choose(
        self, candidates: Sequence[Candidate], client: str | None = None
    ) -> Candidate | None:
        """Pick the candidate with the largest accumulated weight."""
        if not candidates:
            return None
        total = 0.0
        best: Candidate | None = None
        for c in candidates:
            weight = self._weight(c)
            total += weight
            self._current[c.name] = self._current.get(c.name, 0.0) + weight
            if best is None or self._current[c.name] > self._current[best.name]:
                best = c
        assert best is not None
        self._current[best.name] -= total
        return best


class LeastConnections:
    """Lowest (active + 1) / effective weight; ties rotate."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(
        self, candidates: Sequence[Candidate], client: str | None = None
    ) -> Candidate | None:
        """Pick the candidate whose load after this pick would be lowest."""
        if not candidates:
            return None
        lowest = min(c.load_after_pick for c in candidates)
        tied = [c for c in candidates if c.load_after_pick == lowest]
        self._turn += 1
        return tied[self._turn % len(tied)]


class RandomTwoChoices:
    """Power of two choices, drawn in proportion to effective weight.

    Args:
        rng: the random source; inject a seeded one in tests.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def choose(
        self, candidates: Sequence[Candidate], client: str | None = None
    ) -> Candidate | None:
        """Draw two distinct candidates and keep the less loaded one."""
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        first = self._draw(candidates)
        rest = [c for c in candidates if c is not first]
        second = self._draw(rest)
        return second if second.load_after_pick < first.load_after_pick else first

    def _draw(self, candidates: Sequence[Candidate]) -> Candidate:
        weights = [c.effective_weight for c in candidates]
        return self._rng.choices(candidates, weights=weights)[0]


def _unit_hash(client: str, server: str) -> float:
    """A uniform value in (0, 1) for the pair, stable across processes."""
    digest = hashlib.blake2b(f"{client}\0{server}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


class SourceHash:
    """Weighted rendezvous hashing of the client address; see the module docstring."""

    def __init__(self) -> None:
        self._fallback = SmoothWeighted()

    def choose(
        self, candidates: Sequence[Candidate], client: str | None = None
    ) -> Candidate | None:
        """Pick the candidate with the highest rendezvous score for `client`."""
        if client is None:
            return self._fallback.choose(candidates)
        best: Candidate | None = None
        best_score = -math.inf
        for c in candidates:
            score = -c.effective_weight / math.log(_unit_hash(client, c.name))
            if score > best_score:
                best, best_score = c, score
        return best


def make_strategy(balance: Balance, *, rng: random.Random | None = None) -> Strategy:
    """A fresh strategy for a pool.

    Args:
        balance: which algorithm.
        rng: random source for `random2` (ignored by the others).
    """
    match balance:
        case Balance.ROUNDROBIN:
            return SmoothWeighted(unit_weights=True)
        case Balance.WRR:
            return SmoothWeighted()
        case Balance.LEASTCONN:
            return LeastConnections()
        case Balance.RANDOM2:
            return RandomTwoChoices(rng)
        case Balance.SOURCE:
            return SourceHash()
