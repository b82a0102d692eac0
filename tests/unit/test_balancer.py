"""Selection strategies on plain numbers: distributions, least-conn, hashing, ramps."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.balancer import (
    MIN_RAMP,
    Balance,
    Candidate,
    LeastConnections,
    RandomTwoChoices,
    SmoothWeighted,
    SourceHash,
    in_panic,
    make_strategy,
    slowstart_ramp,
)


def _picks(strategy: object, candidates: list[Candidate], n: int) -> Counter[str]:
    choose = strategy.choose  # type: ignore[attr-defined]
    counts: Counter[str] = Counter()
    for _ in range(n):
        picked = choose(candidates)
        assert picked is not None
        counts[picked.name] += 1
    return counts


WEIGHTED = [Candidate("a", 1), Candidate("b", 2), Candidate("c", 3)]


def test_smooth_wrr_is_exact_over_3000_picks() -> None:
    assert _picks(SmoothWeighted(), WEIGHTED, 3000) == {"a": 500, "b": 1000, "c": 1500}


def test_smooth_wrr_spreads_the_heavy_server_instead_of_bursting() -> None:
    strategy = SmoothWeighted()
    sequence = [strategy.choose([Candidate("a", 5), Candidate("b", 1), Candidate("c", 1)])]
    sequence += [strategy.choose([Candidate("a", 5), Candidate("b", 1), Candidate("c", 1)])
                 for _ in range(6)]
    names = "".join(c.name for c in sequence if c is not None)
    # nginx's documented sequence for weights 5/1/1
    assert names == "aabacaa"


def test_roundrobin_ignores_weights_and_cycles() -> None:
    strategy = make_strategy(Balance.ROUNDROBIN)
    names = [strategy.choose(WEIGHTED) for _ in range(6)]
    assert [c.name for c in names if c is not None] == ["a", "b", "c", "a", "b", "c"]


def test_roundrobin_honours_a_ramping_server() -> None:
    cands = [Candidate("a"), Candidate("b"), Candidate("fresh", ramp=0.1)]
    counts = _picks(make_strategy(Balance.ROUNDROBIN), cands, 2100)
    assert counts == {"a": 1000, "b": 1000, "fresh": 100}


def test_least_conn_prefers_fewest_weighted_connections() -> None:
    cands = [Candidate("a", 1, active=3), Candidate("b", 2, active=3), Candidate("c", 1, active=2)]
    # scores (active+1)/w: a 4, b 2, c 3
    picked = LeastConnections().choose(cands)
    assert picked is not None and picked.name == "b"


def test_least_conn_rotates_between_ties() -> None:
    cands = [Candidate("a"), Candidate("b"), Candidate("c")]
    strategy = LeastConnections()
    names = {c.name for c in (strategy.choose(cands) for _ in range(3)) if c is not None}
    assert names == {"a", "b", "c"}


def test_least_conn_does_not_flood_a_ramping_server() -> None:
    """Simulate 300 new long-lived connections; a fresh server gets a small share."""
    active = {"a": 50, "b": 50, "fresh": 0}
    strategy = LeastConnections()
    for _ in range(300):
        cands = [
            Candidate("a", active=active["a"]),
            Candidate("b", active=active["b"]),
            Candidate("fresh", ramp=MIN_RAMP, active=active["fresh"]),
        ]
        picked = strategy.choose(cands)
        assert picked is not None
        active[picked.name] += 1
    # At a tenth of the weight, the fresh server holds about a tenth of a peer's load.
    assert active["fresh"] <= active["a"] // 5
    assert active["fresh"] >= 1


def test_least_conn_with_plain_active_count_would_flood() -> None:
    """The same scenario at full weight: the empty server takes every pick at first."""
    strategy = LeastConnections()
    cands = [Candidate("a", active=50), Candidate("b", active=50), Candidate("fresh", active=0)]
    first = [strategy.choose(cands) for _ in range(10)]
    assert all(c is not None and c.name == "fresh" for c in first)


def test_random_two_choices_is_reproducible_with_a_seed() -> None:
    cands = [Candidate(n) for n in "abcd"]
    one, two = RandomTwoChoices(random.Random(7)), RandomTwoChoices(random.Random(7))
    seq1 = [c.name for c in (one.choose(cands) for _ in range(50)) if c]
    seq2 = [c.name for c in (two.choose(cands) for _ in range(50)) if c]
    assert seq1 == seq2
    assert set(seq1) == set("abcd")


def test_random_two_choices_keeps_the_less_loaded_of_two() -> None:
    cands = [Candidate("busy", active=100), Candidate("idle", active=0)]
    counts = _picks(RandomTwoChoices(random.Random(1)), cands, 200)
    assert counts == {"idle": 200}


def test_random_two_choices_loads_servers_in_proportion_to_weight() -> None:
    """3000 long-lived connections: active counts end up proportional to weight."""
    strategy = RandomTwoChoices(random.Random(3))
    active = {"a": 0, "b": 0, "c": 0}
    weights = {"a": 1, "b": 2, "c": 3}
    for _ in range(3000):
        cands = [Candidate(n, weights[n], active=active[n]) for n in active]
        picked = strategy.choose(cands)
        assert picked is not None
        active[picked.name] += 1
    assert abs(active["a"] - 500) <= 30
    assert abs(active["b"] - 1000) <= 30
    assert abs(active["c"] - 1500) <= 30


def test_source_hash_is_stable_per_client() -> None:
    strategy = SourceHash()
    cands = [Candidate(n) for n in ("cas1", "cas2", "cas3")]
    first = strategy.choose(cands, "192.0.2.10")
    assert all(strategy.choose(cands, "192.0.2.10") == first for _ in range(20))


def test_source_hash_moves_only_the_lost_servers_share() -> None:
    strategy = SourceHash()
    full = [Candidate(n) for n in ("cas1", "cas2", "cas3", "cas4")]
    clients = [f"10.1.{i // 256}.{i % 256}" for i in range(2000)]
    before = {cl: strategy.choose(full, cl) for cl in clients}
    without = [c for c in full if c.name != "cas3"]
    after = {cl: strategy.choose(without, cl) for cl in clients}
    moved = [cl for cl in clients if before[cl] != after[cl]]
    assert moved, "cas3 held some clients"
    assert all(before[cl] is not None and before[cl].name == "cas3" for cl in moved)  # type: ignore[union-attr]
    lost_share = Counter(before[cl].name for cl in clients)["cas3"]  # type: ignore[union-attr]
    assert len(moved) == lost_share
    # and the spread over four servers is fair
    spread = Counter(c.name for c in before.values() if c is not None)
    assert all(400 <= n <= 600 for n in spread.values()), spread


def test_source_hash_honours_weights() -> None:
    strategy = SourceHash()
    clients = [f"client-{i}" for i in range(3000)]
    counts = Counter(
        c.name for c in (strategy.choose(WEIGHTED, cl) for cl in clients) if c is not None
    )
    assert abs(counts["a"] - 500) < 100 and abs(counts["c"] - 1500) < 150


def test_source_hash_without_client_round_robins() -> None:
    counts = _picks(SourceHash(), WEIGHTED, 600)
    assert counts == {"a": 100, "b": 200, "c": 300}


@pytest.mark.parametrize("balance", list(Balance))
def test_every_strategy_returns_none_on_an_empty_pool(balance: Balance) -> None:
    assert make_strategy(balance).choose([], "10.0.0.1") is None


@pytest.mark.parametrize(
    ("now", "up_since", "window", "ramp"),
    [
        (10.0, None, 30.0, 1.0),  # in service from the start
        (10.0, 10.0, 0.0, 1.0),  # slow start off
        (10.0, 10.0, 30.0, MIN_RAMP),  # just recovered: the floor
        (25.0, 10.0, 30.0, 0.5),  # half way
        (40.0, 10.0, 30.0, 1.0),  # done
        (5.0, 10.0, 30.0, MIN_RAMP),  # clock before up_since: floor, never negative
    ],
)
def test_slowstart_ramp(now: float, up_since: float | None, window: float, ramp: float) -> None:
    assert slowstart_ramp(now, up_since, window) == pytest.approx(ramp)


@pytest.mark.parametrize(
    ("healthy", "total", "threshold", "panic"),
    [
        (1, 3, 0.0, False),
        (1, 3, 0.5, True),
        (2, 4, 0.5, False),
        (0, 3, 0.5, True),
        (0, 0, 0.5, False),
    ],
)
def test_in_panic(healthy: int, total: int, threshold: float, panic: bool) -> None:
    assert in_panic(healthy, total, threshold) is panic


@given(
    weights=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=6),
    rounds=st.integers(min_value=1, max_value=5),
)
def test_smooth_wrr_gives_each_server_exactly_its_weight_per_cycle(
    weights: list[int], rounds: int
) -> None:
    cands = [Candidate(f"s{i}", w) for i, w in enumerate(weights)]
    counts = _picks(SmoothWeighted(), cands, sum(weights) * rounds)
    assert counts == {c.name: c.weight * rounds for c in cands}
