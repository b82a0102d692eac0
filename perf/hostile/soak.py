"""The soak: mixed load and attacks for minutes, with reloads, watching fds and memory.

The balancer's fds and RSS are read from /proc before any load (the baseline),
every half second under load (the peak), and after everything has stopped.
Under load the good clients run throughout while each attack comes round in
turn at a tenth of its scale, and a SIGHUP reloads the balancer every
`reload_every` seconds. The soak fails when the fds do not come back to the
baseline (give or take the health checks that may be in flight when read, and
the idle upstream connections parked for other clients, one fd each, which
/metrics counts: they close at the end of their idle life, not with their
clients), or when the good clients missed anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import trio

from perf.hostile.attacks import ATTACKS, Scale
from perf.hostile.rig import Balancer
from perf.hostile.runner import good_clients

SETTLE_LIMIT = 20.0
# one check per pool and server may hold a socket at the moment of reading
CHECKS_IN_FLIGHT = 4


@dataclass
class Sample:
    """fds and RSS (KiB) of the balancer at one moment."""

    fds: int
    rss_kib: int

    @staticmethod
    def of(rig: Balancer) -> Sample:
        """Read them from /proc now."""
        return Sample(rig.fds(), rig.rss_kib())


@dataclass
class SoakResult:
    """What the soak saw."""

    seconds: float
    reloads: int
    rounds: int
    before: Sample
    peak: Sample
    after: Sample
    channels: dict[str, dict[str, Any]]
    problems: list[str]
    parked_after: int = 0  # upstream connections parked for other clients when read

    @property
    def fds_returned(self) -> bool:
        """The fds came back to the baseline (give or take checks and parked connections)."""
        return self.after.fds <= self.before.fds + CHECKS_IN_FLIGHT + self.parked_after

    @property
    def passed(self) -> bool:
        """fds back, nothing missed, nothing logged at ERROR."""
        served = all(c["failed"] == 0 and c["ok"] > 0 for c in self.channels.values())
        return self.fds_returned and served and not self.problems


def _lighter(scale: Scale, seconds: float) -> Scale:
    return replace(
        scale, seconds=seconds, slowloris=max(10, scale.slowloris // 10),
        non_readers=max(5, scale.non_readers // 10),
        flood_connections=max(5, scale.flood_connections // 10),
        half_handshakes=max(10, scale.half_handshakes // 10),
        malformed_concurrency=max(2, scale.malformed_concurrency // 4),
    )


async def _settled(rig: Balancer, baseline: int) -> tuple[Sample, int]:
    """The balancer once its fds are back (or SETTLE_LIMIT later), and how many
    upstream connections it had parked then."""
    with trio.move_on_after(SETTLE_LIMIT):
        while True:
            now, parked = Sample.of(rig), await rig.parked_upstreams()
            if now.fds <= baseline + CHECKS_IN_FLIGHT + parked:
                return now, parked
            await trio.sleep(0.5)
    return Sample.of(rig), await rig.parked_upstreams()


async def soak(rig: Balancer, scale: Scale, seconds: float, reload_every: float) -> SoakResult:
    """Run the soak against `rig` for `seconds`."""
    before = Sample.of(rig)
    peak = Sample(before.fds, before.rss_kib)
    reloads = rounds = 0
    logged = len(rig.problems())
    attacks = [a for name, a in ATTACKS.items() if name != "fd-exhaustion"]
    light = _lighter(scale, min(5.0, seconds / 4))

    async def sample() -> None:
        while True:
            now = Sample.of(rig)
            peak.fds, peak.rss_kib = max(peak.fds, now.fds), max(peak.rss_kib, now.rss_kib)
            await trio.sleep(0.5)

    async def reload() -> None:
        nonlocal reloads
        while True:
            await trio.sleep(reload_every)
            rig.reload()
            reloads += 1

    async with good_clients(rig) as good:
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                nursery.start_soon(reload)
                while True:
                    await attacks[rounds % len(attacks)](rig.ports, light)
                    rounds += 1
        channels = await good.finish()
    after, parked = await _settled(rig, before.fds)
    problems = rig.problems()[logged:]
    if rig.proc.process.poll() is not None:
        problems.append(f"caslb exited with {rig.proc.process.returncode}")
    return SoakResult(seconds, reloads, rounds, before, peak, after, channels, problems,
                      parked)
