"""Run scenarios: one farm process, one design, the client mix, one fault.

Theory of operation. For each (design, fault) the runner starts a fresh farm
process and the design against it, waits until the design reports every server
chosen, then starts the clients and a sampler that reads the design's choice of
the faulty server every `sample_every` seconds. After `before` seconds it injects
the fault and reads the farm's request counts; after `fault` more seconds it
reads them again and clears it; after `after` more seconds the clients are
cancelled. Each scenario gets fresh processes so none inherits another's state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from perf.failover.clients import run_clients
from perf.failover.designs.base import Design, Running
from perf.failover.farm import running_farm
from perf.failover.faults import FaultPlan
from perf.failover.model import CHOSEN_AS, NTLM_EWS, ChoiceSample, ScenarioRecord, Timeline
from perf.failover.recorder import Recorder
from perf.failover.settings import RunSettings

FAULTY = "cas1"


async def _sample(
    running: Running, server: str, recorder: Recorder, every: float, out: list[ChoiceSample]
) -> None:
    while True:
        at = recorder.now()
        try:
            chosen = await running.chosen(server)
        except (OSError, ValueError, trio.TooSlowError):
            chosen = {}  # a missed reading (balancer too busy to answer) is skipped, never guessed
        if chosen is None:
            return
        if chosen:
            out.append(ChoiceSample(at, chosen))
        await trio.sleep(every)


async def _until(recorder: Recorder, moment: float) -> None:
    await trio.sleep(max(0.0, moment - recorder.now()))


# A busy machine can leave a client's first NTLM logon unfinished when the fault is
# due; the fault then waits for it (at most this many baselines more), so the
# baseline always holds every client's steady state.
_WARM_ALLOWANCE = 4.0
_LATE_NOTE = 0.1


async def _until_logged_on(recorder: Recorder, clients: int, deadline: float) -> None:
    while recorder.now() < deadline:
        if len({a.client for a in recorder.auth if a.served}) >= clients:
            return
        await trio.sleep(0.05)


def _notes(design: Design, settings: RunSettings) -> tuple[str, ...]:
    notes = [design.summary]
    if design.name == "dns-rr":
        notes.append(
            f"clients model Windows: a silent address costs {settings.timeouts.connect:g} s "
            "(the connect timeout), a reset moves to the next address at once"
        )
    return tuple(notes)


async def run_scenario(
    design: Design, fault: FaultPlan, settings: RunSettings, workdir: Path
) -> ScenarioRecord:
    """Run one (design, fault) scenario and return everything it recorded."""
    workdir.mkdir(parents=True, exist_ok=True)
    phases = settings.phases
    samples: list[ChoiceSample] = []
    counts: dict[str, dict[str, int]] = {}
    async with (
        running_farm(workdir, heartbeat=settings.mix.long_poll,
                     health_cache_delay=settings.health_cache_delay,
                     auth_vdirs=_auth_vdirs(settings)) as farm,
        design.start(farm.info, settings.probes, workdir) as running,
    ):
        recorder = Recorder(farm.info.names)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                run_clients,
                running.endpoints,
                recorder,
                settings.timeouts,
                settings.mix,
                phases.total + phases.before * _WARM_ALLOWANCE,
            )
            nursery.start_soon(_sample, running, FAULTY, recorder, settings.sample_every, samples)
            await _until(recorder, phases.before)
            await _until_logged_on(recorder, settings.mix.clients.get(NTLM_EWS, 0),
                                   phases.before * (1 + _WARM_ALLOWANCE))
            late = recorder.now() - phases.before
            fault_at = recorder.now()
            await fault.apply(farm, FAULTY)
            in_force_at = recorder.now()
            # read after injecting: whatever the farm counts from here on
            # reached the faulty server while the fault was in force
            counts["fault"] = await farm.counts()
            await _until(recorder, late + phases.before + phases.fault)
            counts["clear"] = await farm.counts()
            clear_at = recorder.now()
            await fault.undo(farm, FAULTY)
            await _until(recorder, late + phases.total)
            end_at = recorder.now()
            nursery.cancel_scope.cancel()
        counts["end"] = await farm.counts()
    return ScenarioRecord(
        design=design.name,
        fault=fault.name,
        faulty=FAULTY,
        servers=farm.info.names,
        timeline=Timeline(fault_at, clear_at, max(end_at, clear_at + 1e-3), in_force_at),
        requests=tuple(sorted(recorder.records, key=lambda r: r.finished)),
        samples=tuple(samples),
        farm_counts=counts,
        notes=(*_notes(design, settings), *running.notes,
               *([f"the fault waited {late:.1f} s for every NTLM client's first logon"]
                 if late >= _LATE_NOTE else [])),
        auth=tuple(sorted(recorder.auth, key=lambda a: (a.client, a.started))),
    )


def _auth_vdirs(settings: RunSettings) -> tuple[str, ...]:
    """The vdirs the farm authenticates: those of the mix's NTLM clients."""
    return (CHOSEN_AS[NTLM_EWS],) if settings.mix.clients.get(NTLM_EWS) else ()


async def run_matrix(
    designs: Sequence[Design],
    faults: Sequence[FaultPlan],
    settings: RunSettings,
    workdir: Path,
    progress: Callable[[str], None] = print,
) -> tuple[list[ScenarioRecord], dict[str, str]]:
    """Run every (design, fault), in order.

    A design that cannot run here (not installed, or its process fails to
    start) is skipped with its reason rather than failing the whole run.

    Returns:
        The records, and design name -> why it was skipped.
    """
    records: list[ScenarioRecord] = []
    skipped = {d.name: r for d in designs if (r := d.unavailable())}
    runnable = [d for d in designs if d.name not in skipped]
    for name, reason in skipped.items():
        progress(f"skip {name}: {reason}")
    total = len(runnable) * len(faults)
    eta = math.ceil(total * (settings.phases.total + 3) / 60)
    progress(f"{total} scenarios, about {eta} min")
    for design in runnable:
        for fault in faults:
            progress(f"{design.name} × {fault.name} …")
            try:
                record = await run_scenario(
                    design, fault, settings, workdir / f"{design.name}-{fault.name}"
                )
            except RuntimeError as exc:
                skipped[design.name] = str(exc)
                progress(f"skip {design.name}: {exc}")
                break
            except Exception as exc:  # one broken scenario must not lose the others
                skipped[f"{design.name} × {fault.name}"] = repr(exc)
                progress(f"failed {design.name} × {fault.name}: {exc!r}")
                continue
            errors = sum(1 for r in record.requests if not r.ok)
            progress(f"  {len(record.requests)} requests, {errors} errors")
            records.append(record)
    return records, skipped
