"""A cProfile dump read per request: own time and calls by package and by function.

cProfile's own table sorts functions by time but says nothing about which
library a request's time goes to, nor how many calls one request costs. Here
every function is put in the package it comes from (h11, trio,
prometheus_client, caslb's `lb`, the standard library, builtins), and own
time and calls are divided by the requests the profiled round carried. The
time of C builtins and standard-library functions goes to the package that
called them, so "h11" includes the regex matches h11 asks for.
cProfile slows every Python call down by about the same amount, so its
seconds are inflated; the shares and the call counts are what to read.
"""

from __future__ import annotations

import pstats
from collections import defaultdict
from dataclasses import dataclass

_PACKAGES = ("h11", "trio", "prometheus_client", "outcome", "sniffio", "lb", "probes")


@dataclass(frozen=True)
class Share:
    """What one package (or function) costs per request.

    Attributes:
        name: the package, or `file:line(function)`.
        own_us: own time per request, in profiled microseconds.
        calls: calls per request.
        fraction: its part of all own time.
    """

    name: str
    own_us: float
    calls: float
    fraction: float


def package_of(filename: str) -> str:
    """The package a profiled function's file belongs to."""
    if filename == "~":
        return "builtins (C)"
    parts = filename.replace("\\", "/").split("/")
    for part in reversed(parts[:-1]):
        if part in _PACKAGES:
            return part
    return "stdlib and other"


Func = tuple[str, int, str]
Callers = dict[Func, tuple[int, int, float, float]]


def _graph(stats: pstats.Stats) -> dict[Func, tuple[int, float, Callers]]:
    """function → (calls, own time, callers with the own time spent for each)."""
    raw = stats.stats  # type: ignore[attr-defined]
    return {func: (calls, tottime, callers)
            for func, (_cc, calls, tottime, _ct, callers) in raw.items()}


def _owners(
    graph: dict[Func, tuple[int, float, Callers]], func: Func,
    memo: dict[Func, dict[str, float]],
) -> dict[str, float]:
    """The packages `func`'s own time is charged to, each with its share (summing to 1).

    A C builtin or a standard-library function (a regex match, `typing.cast`,
    a socket call) is charged to its callers, in the share of its time each
    caused, up to the first function of a named package. A recursion back
    into a function being resolved is charged where it lives.
    """
    if func in memo:
        return memo[func]
    package = package_of(func[0])
    callers = graph.get(func, (0, 0.0, {}))[2]
    caused = sum(entry[2] for entry in callers.values())
    if package in _PACKAGES or not caused:
        memo[func] = {package: 1.0}
        return memo[func]
    memo[func] = {package: 1.0}  # the guard while its callers are resolved
    shares: dict[str, float] = defaultdict(float)
    for caller, entry in callers.items():
        for owner, part in _owners(graph, caller, memo).items():
            shares[owner] += part * entry[2] / caused
    memo[func] = dict(shares)
    return memo[func]


def by_package(stats: pstats.Stats, requests: int) -> list[Share]:
    """Own time and calls per request of each package, the most expensive first.

    Calls count where the function lives; time goes to the package that
    called into C and the standard library (`_owners`).
    """
    graph = _graph(stats)
    total = sum(t for _, t, _ in graph.values()) or 1.0
    time: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    memo: dict[Func, dict[str, float]] = {}
    for func, (n, t, _callers) in graph.items():
        calls[package_of(func[0])] += n
        for owner, part in _owners(graph, func, memo).items():
            time[owner] += t * part
    names = set(time) | set(calls)
    return sorted(
        (Share(p, time[p] / requests * 1e6, calls[p] / requests, time[p] / total) for p in names),
        key=lambda s: -s.own_us,
    )


def top_functions(stats: pstats.Stats, requests: int, count: int) -> list[Share]:
    """The `count` functions with the most own time, per request."""
    graph = _graph(stats)
    total = sum(t for _, t, _ in graph.values()) or 1.0
    ranked = sorted(graph.items(), key=lambda item: -item[1][1])[:count]
    return [
        Share(f"{package_of(f[0])}:{f[0].rsplit('/', 1)[-1]}:{f[1]}({f[2]})",
              t / requests * 1e6, n / requests, t / total)
        for f, (n, t, _callers) in ranked
    ]


def render(shares: list[Share], title: str) -> str:
    """A plain-text table of `shares` under `title`."""
    lines = [title, f"{'own µs/req':>11} {'calls/req':>10} {'share':>6}  name"]
    lines += [f"{s.own_us:11.1f} {s.calls:10.1f} {s.fraction:6.1%}  {s.name}" for s in shares]
    return "\n".join(lines)
