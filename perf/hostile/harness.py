"""The hostile harness from end to end: the attacks, then the soak, as a Markdown report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from perf.hostile.attacks import Scale
from perf.hostile.rig import backend, balancer
from perf.hostile.runner import Row, run_attacks
from perf.hostile.soak import SoakResult, soak
from perf.idle import raise_nofile

CHANNELS = ("plain", "tls", "sni", "admin")
HEADER = ("| attack | what the attacker did | " + " | ".join(CHANNELS) + " | verdict |\n"
          "|---|---|" + "---|" * len(CHANNELS) + "---|")


def _cell(channel: dict[str, Any] | None) -> str:
    if channel is None:
        return "–"
    total = channel["ok"] + channel["failed"]
    rate = 100 * channel["ok"] / total if total else 0.0
    return f"{rate:.1f} % of {total}, p50 {channel['p50_ms']} / p99 {channel['p99_ms']} ms"


def format_row(row: Row) -> str:
    """One table row, and the reasons of a failure below it."""
    cells = " | ".join(_cell(row.channels.get(c)) for c in CHANNELS)
    line = f"| {row.attack} | {row.did} | {cells} | {'held' if row.passed else 'FAILED'} |"
    notes = [*row.problems]
    for name, channel in row.channels.items():
        notes += [f"{name}: {why}" for why in channel["first_failures"]]
    return "\n".join([line, *(f"|   | ↳ {n[:200]} | | | | | |" for n in notes)])


def format_soak(result: SoakResult) -> str:
    """The soak's paragraph."""
    cells = "; ".join(f"{c} {_cell(result.channels.get(c))}" for c in CHANNELS)
    lines = [
        f"Soak: {result.seconds:g} s, {result.rounds} attack rounds, {result.reloads} reloads.",
        f"Balancer fds {result.before.fds} before, {result.peak.fds} at peak, "
        f"{result.after.fds} after, {result.parked_after} of them upstream connections parked "
        f"for other clients ({'back to baseline' if result.fds_returned else 'LEAKED'}); "
        f"RSS {result.before.rss_kib} / {result.peak.rss_kib} / {result.after.rss_kib} KiB.",
        f"Good clients: {cells}.",
        *[f"problem: {p[:200]}" for p in result.problems],
        f"Soak verdict: {'held' if result.passed else 'FAILED'}.",
    ]
    return "\n".join(lines)


async def run_all(
    names: list[str], scale: Scale, soak_seconds: float, reload_every: float,
    workdir: Path, echo: Callable[[str], None],
) -> bool:
    """Run the attacks and the soak, echoing the report as it goes; True when all held."""
    raise_nofile(65536)
    echo(HEADER)

    async def report(row: Row) -> None:
        echo(format_row(row))

    rows = await run_attacks(names, scale, workdir, report) if names else []
    held = all(r.passed for r in rows)
    if soak_seconds > 0:
        async with backend(workdir) as servers, balancer(workdir, servers, name="soak") as rig:
            result = await soak(rig, scale, soak_seconds, reload_every)
        echo("")
        echo(format_soak(result))
        held = held and result.passed
    return held


def run(names: list[str], scale: Scale, soak_seconds: float, reload_every: float,
        workdir: Path, echo: Callable[[str], None]) -> bool:
    """`run_all` under trio."""
    return trio.run(run_all, names, scale, soak_seconds, reload_every, workdir, echo)
