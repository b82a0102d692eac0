"""What one health check costs the prober, client side, in this process.

    python -m perf.checkcost kinds [--count N] [--gap MS] [--profile]
    python -m perf.checkcost runner [--seconds S] [--profile]

Both start a casfarm process (3 servers) and take their checks from the
config `python -m perf probes` gives caslb (`[exchange]` shorthand, L7, a
check every second per protocol), so the specs, targets and timings are the
balancer's own; only the balancer's other work is absent.

`kinds` runs each check kind N times in a row through `run_check`, as the
runner calls it (a lag meter, the kept connections, reuse for one interval),
`--gap` milliseconds apart (0: back to back), and prints the CPU per check
(`time.process_time`) and, with `--profile`, the Python calls per check by
package (perf.pyprofile). A check run cold (spaced out, other work between)
costs several times one run back to back: compare the two.

`runner` runs a real ProbeRunner over every check of the config for S
seconds and prints CPU per finished check and the share of a core: the idle
balancer's figure without its HTTP frontends and metrics. Its code is
whatever `probes` imports, so an export of another commit on PYTHONPATH
measures that commit under the same conditions (alternate the two).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from collections import Counter
from pathlib import Path

import trio

from lb.cli.probe import config_checks
from lb.config import load
from perf import pyprofile
from perf.failover.designs.caslb import render_config, write_cert
from perf.failover.farm import FarmInfo, running_farm
from perf.net import free_port
from perf.probecost import LISTENERS, PROBES
from probes.catalog import CheckKind
from probes.checks import CheckSpec, Target, run_check
from probes.kept import KeptConnections
from probes.lag import LagMeter
from probes.runner import ProbeRunner
from probes.state import Timing

Planned = list[tuple[str, str, Target, CheckSpec, Timing]]


def planned_checks(info: FarmInfo, workdir: Path) -> Planned:
    """(pool, server, target, spec, timing) of every check `perf probes` gives caslb."""
    listen = {k: free_port() for k in LISTENERS}
    cfg = workdir / "checkcost.toml"
    cfg.write_text(render_config(info, PROBES, "l7", listen, free_port(),
                                 write_cert(info, workdir)))
    config = load(cfg)
    planned: Planned = []
    for pool, server, target, spec in config_checks(config):
        check = config.pools[pool].check
        assert check is not None
        planned.append((pool, server, target, spec, check.timing))
    return planned


def _kind_name(spec: CheckSpec) -> str:
    if spec.kind is CheckKind.HEALTHCHECK:
        return "healthcheck GET (kept)"
    return f"{spec.kind.value}{'s' if spec.tls else ''}"


async def _kinds(planned: Planned, count: int, gap: float, profile: bool) -> list[str]:
    first: dict[str, tuple[Target, CheckSpec, Timing]] = {}
    for _, _, target, spec, timing in planned:
        first.setdefault(_kind_name(spec), (target, spec, timing))
    meter, kept = LagMeter(), KeptConnections()
    lines = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(meter.run)
        for name, (target, spec, timing) in first.items():
            for _ in range(3):  # a session to resume, a connection to keep
                await run_check(spec, target, lag=meter, kept=kept, reuse_for=timing.inter)
            profiler = cProfile.Profile(time.process_time) if profile else None
            cpu, reasons = 0.0, Counter[str]()
            for _ in range(count):
                if gap:
                    await trio.sleep(gap)
                before = time.process_time()
                if profiler is not None:
                    profiler.enable()
                with meter.measuring():
                    result = await run_check(
                        spec, target, lag=meter, kept=kept, reuse_for=timing.inter)
                if profiler is not None:
                    profiler.disable()
                cpu += time.process_time() - before
                reasons[result.reason.value] += 1
            lines.append(f"{name:<24} {1000 * cpu / count:6.3f} ms CPU per check "
                         f"({count} checks, {gap * 1000:g} ms apart; {dict(reasons)})")
            if profiler is not None:
                stats = pstats.Stats(profiler)
                shares = pyprofile.by_package(stats, count)
                lines.append(pyprofile.render(shares, f"  {name}, per check:"))
                top = pyprofile.top_functions(stats, count, 25)
                lines.append(pyprofile.render(top, f"  {name}, top functions:"))
        nursery.cancel_scope.cancel()
    kept.close_all()
    return lines


async def _runner(planned: Planned, seconds: float, profile: bool) -> list[str]:
    runner = ProbeRunner[tuple[str, str]]()
    for pool, server, target, spec, timing in planned:
        runner.add((pool, server), spec, target, timing)
    profiler = cProfile.Profile(time.process_time) if profile else None
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(3)  # past the first checks (full handshakes, no kept connections)
        checks0 = sum(runner.checks_run(k) for k in runner)
        cpu0, wall0 = time.process_time(), time.monotonic()
        if profiler is not None:
            profiler.enable()
        await trio.sleep(seconds)
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        checks = sum(runner.checks_run(k) for k in runner) - checks0
        nursery.cancel_scope.cancel()
    down = [k for k in runner if not runner.health(k).eligible]
    lines = [f"runner: {1000 * cpu / max(1, checks):.3f} ms CPU per check, "
             f"{100 * cpu / wall:.1f} % of a core ({checks} checks in {wall:.0f} s, "
             f"{len(planned)} registered, {runner.inconclusive} inconclusive, "
             f"{len(down)} not eligible; load average {os.getloadavg()[0]:.1f})"]
    if profiler is not None:
        stats = pstats.Stats(profiler)
        lines.append(pyprofile.render(pyprofile.by_package(stats, checks), "per check:"))
        lines.append(pyprofile.render(pyprofile.top_functions(stats, checks, 25), "top:"))
    return lines


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="checkcost-") as tmp:
        workdir = Path(tmp)
        async with running_farm(workdir) as farm:
            planned = planned_checks(farm.info, workdir)
            if args.what == "kinds":
                lines = await _kinds(planned, args.count, args.gap / 1000, args.profile)
            else:
                lines = await _runner(planned, args.seconds, args.profile)
            await farm.command(op="counts")  # the farm is still answering
    print("\n".join(lines))


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(prog="python -m perf.checkcost")
    parser.add_argument("what", choices=("kinds", "runner"))
    parser.add_argument("--count", type=int, default=300, help="checks per kind")
    parser.add_argument("--gap", type=float, default=0.0, help="milliseconds between checks")
    parser.add_argument("--seconds", type=float, default=20.0, help="runner: how long")
    parser.add_argument("--profile", action="store_true", help="Python calls per check")
    trio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
