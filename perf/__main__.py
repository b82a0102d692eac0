"""`python -m perf`: the harnesses, run from the repository root.

    python -m perf                      list what is there
    python -m perf failover [--quick] [--designs a,b] [--faults x,y] [--out DIR]
    python -m perf idle [--connections N] [--designs a,b] [--settle S]
    python -m perf probes [--seconds S] [--hogs N] [--idle-seconds S]
    python -m perf hostile [--quick] [--attacks a,b] [--soak SECONDS] [--reload-every SECONDS]
    python -m perf ha [--json FILE]    (root: network namespaces, keepalived)
    python -m perf matrix [--quick] [--seconds S] [--proxies a,b] [--out DIR]
"""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import trio
import typer

if TYPE_CHECKING:
    from perf.failover.settings import RunSettings

app = typer.Typer(
    name="perf",
    help="caslb harnesses: failover matrix and idle memory, driven like a user would.",
    add_completion=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)


def _split(value: str | None, known: dict[str, object], what: str) -> list[str]:
    if not value:
        return []
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise typer.BadParameter(f"unknown {what} {', '.join(bad)} (known: {', '.join(known)})")
    return names


def listing() -> str:
    """What `python -m perf` prints: harnesses, designs and faults."""
    from perf.failover.designs import DESIGNS
    from perf.failover.faults import fault_plans
    from perf.failover.settings import FULL

    lines = ["harnesses:", "  failover   the failover matrix: designs × faults, JSON/Markdown/SVG"]
    lines += ["  idle       memory per idle proxied connection (caslb and HAProxy)"]
    lines += ["  hostile    attacks beside well-behaved clients, then a soak with reloads"]
    lines += ["  probes     CPU per health check, false DOWNs and detection under saturation"]
    lines += ["  ha         a keepalived pair in network namespaces: failover and failback"]
    lines += ["  matrix     L7/L4 throughput, latency, CPU per op and idle memory vs HAProxy", ""]
    lines.append("designs:")
    for d in DESIGNS.values():
        reason = d.unavailable()
        suffix = f"  [unavailable: {reason}]" if reason else ""
        lines.append(f"  {d.name:<13} {d.summary}{suffix}")
    lines += ["", "faults:"]
    for f in fault_plans(FULL.slow_seconds).values():
        lines.append(f"  {f.name:<13} {f.summary}")
    return "\n".join(lines)


@app.callback()
def main(ctx: typer.Context) -> None:
    """List the harnesses, designs and faults when no command is given."""
    if ctx.invoked_subcommand is None:
        typer.echo(listing())


QUICK_DESIGNS = ("dns-rr", "caslb-l7", "haproxy-http")
QUICK_FAULTS = ("crash", "ews_inactive")


@app.command()
def failover(
    quick: Annotated[bool, typer.Option(help="CI smoke: short phases, few scenarios.")] = False,
    designs: Annotated[str | None, typer.Option(help="Comma-separated design names.")] = None,
    faults: Annotated[str | None, typer.Option(help="Comma-separated fault names.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default perf/results).")] = None,
    health_cache_delay: Annotated[float, typer.Option(
        min=0, max=15, help="Seconds before the farm shows a component change (Exchange: <= 15).",
    )] = 0.0,
    new_connections: Annotated[float | None, typer.Option(
        min=0, help="Fresh TLS connections per second, one OWA GET each (default: the mix's 40).",
    )] = None,
) -> None:
    """Run the failover matrix and write results.json, results.md and SVG timelines.

    Example: python -m perf failover --quick --designs dns-rr --faults crash --out /tmp/fo
    (`--new-connections 160` for the warm-up runs of docs/benchmarks.md)
    """
    from perf.failover.designs import DESIGNS
    from perf.failover.faults import fault_plans
    from perf.failover.report import write_run
    from perf.failover.runner import run_matrix

    settings = run_settings(quick, health_cache_delay, new_connections)
    plans = fault_plans(settings.slow_seconds)
    design_names = _split(designs, dict(DESIGNS), "design") or (
        [d for d in QUICK_DESIGNS if d in DESIGNS] if quick else list(DESIGNS)
    )
    fault_names = _split(faults, dict(plans), "fault") or (
        list(QUICK_FAULTS) if quick else list(plans)
    )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = out or Path("perf/results") / f"failover-{'quick-' if quick else ''}{stamp}"
    with tempfile.TemporaryDirectory(prefix="caslb-failover-") as tmp:
        records, skipped = trio.run(
            run_matrix,
            [DESIGNS[n] for n in design_names],
            [plans[n] for n in fault_names],
            settings,
            Path(tmp),
        )
    described = {**settings.describe(), "skipped": skipped}
    write_run(out_dir, records, described, _preamble(quick, described))
    typer.echo((out_dir / "results.md").read_text())
    typer.echo(f"results in {out_dir}")


def run_settings(
    quick: bool, health_cache_delay: float, new_connections: float | None
) -> RunSettings:
    """The failover run's settings: the quick or full ones with the options applied."""
    from perf.failover.settings import FULL, QUICK

    settings = dataclasses.replace(QUICK if quick else FULL, health_cache_delay=health_cache_delay)
    if new_connections is None:
        return settings
    mix = dataclasses.replace(settings.mix, new_connections_per_second=new_connections)
    return dataclasses.replace(settings, mix=mix)


def _preamble(quick: bool, settings: dict[str, object]) -> str:
    probes = settings["probes"]
    phases = settings["phases"]
    timeouts = settings["timeouts"]
    clients = settings["mix"]
    assert isinstance(probes, dict) and isinstance(phases, dict) and isinstance(timeouts, dict)
    assert isinstance(clients, dict)
    mix = ", ".join(f"{n} {p}" for p, n in clients["clients"].items())
    rate = clients.get("new_connections_per_second") or 0  # absent from older results
    fresh = (
        f" Plus {rate:g} new connections/s (TLS handshake and one OWA GET each, "
        f"connect + handshake timeout {timeouts.get('handshake')} s)."
        if rate
        else ""
    )
    skipped = settings.get("skipped") or {}
    assert isinstance(skipped, dict)
    why = "; ".join(f"{k} ({v})" for k, v in skipped.items())
    return (
        f"## Failover matrix{' (--quick)' if quick else ''}\n\n"
        f"Probes: inter {probes['inter']} s, fastinter {probes['fastinter']} s, "
        f"rise {probes['rise']}, fall {probes['fall']}, check and connect timeouts "
        f"{probes['timeout']} s, retries {probes['retries']}. Phases: {phases['before']} s "
        f"before the fault, {phases['fault']} s of fault, {phases['after']} s after. Client "
        f"connect timeout {timeouts['connect']} s (Windows: ~21 s), request timeout "
        f"{timeouts['request']} s. The faulty server is cas1 of 3. Clients: {mix}.{fresh}\n"
        + (f"\nSkipped: {why}\n" if why else "")
    )


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="A results.json written by `failover`.")],
) -> None:
    """Rewrite results.md and the SVG timelines from a results.json, e.g. after a fix.

    Example: python -m perf report perf/results/failover-20261123-142444/results.json
    """
    from perf.failover.report import read_run, write_run

    try:
        records, settings = read_run(results)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    write_run(results.parent, records, settings, _preamble(bool(settings.get("quick")), settings))
    typer.echo(f"rewrote {results.parent / 'results.md'} and its timelines")


@app.command()
def idle(
    connections: Annotated[int, typer.Option(help="Idle connections per design.")] = 2000,
    designs: Annotated[str | None, typer.Option(help="Comma-separated idle designs.")] = None,
    settle: Annotated[float, typer.Option(help="Seconds idle before RSS is read.")] = 0.5,
) -> None:
    """Measure memory per idle proxied connection (RSS growth per connection)."""
    from perf.idle import IDLE_DESIGNS, run_idle

    names = _split(designs, dict(IDLE_DESIGNS), "design") or list(IDLE_DESIGNS)
    for line in trio.run(run_idle, names, connections, settle):
        typer.echo(line)


@app.command()
def probes(
    seconds: Annotated[float, typer.Option(help="Seconds per phase.")] = 60.0,
    hogs: Annotated[int, typer.Option(help="CPU-bound processes beside the load.")] = 6,
    idle_seconds: Annotated[
        float | None, typer.Option(help="Seconds of the idle phase (default: --seconds).")
    ] = None,
) -> None:
    """What health checks cost idle, and whether a saturated balancer blames servers.

    Example: python -m perf probes --seconds 20 --hogs 4
    """
    from perf.probecost import measure

    with tempfile.TemporaryDirectory(prefix="caslb-probes-") as tmp:
        for line in trio.run(measure, seconds, hogs, Path(tmp), idle_seconds):
            typer.echo(line)


@app.command()
def hostile(
    quick: Annotated[bool, typer.Option(help="CI smoke: a tenth of the scale.")] = False,
    attacks: Annotated[str | None, typer.Option(help="Comma-separated attack names.")] = None,
    soak: Annotated[float | None, typer.Option(help="Soak seconds (0: none).")] = None,
    reload_every: Annotated[float | None, typer.Option(help="Seconds between SIGHUPs.")] = None,
) -> None:
    """Attack caslb beside well-behaved clients; exit 1 unless every attack held.

    Example: python -m perf hostile --attacks slowloris,pipelining --soak 0
    """
    from perf.hostile.attacks import ATTACKS, FULL, QUICK
    from perf.hostile.harness import run

    names = _split(attacks, dict(ATTACKS), "attack") or list(ATTACKS)
    soak_seconds = soak if soak is not None else (20.0 if quick else 600.0)
    every = reload_every if reload_every is not None else (5.0 if quick else 60.0)
    with tempfile.TemporaryDirectory(prefix="caslb-hostile-") as tmp:
        held = run(names, QUICK if quick else FULL, soak_seconds, every, Path(tmp), typer.echo)
    if not held:
        raise typer.Exit(1)


@app.command()
def ha(
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write the measures to this file as JSON.")] = None,
) -> None:
    """Kill the active caslb of a keepalived pair under a client; print failover and failback.

    Needs root (network namespaces) and keepalived. Example: sudo python -m perf ha
    """
    import json

    from perf.ha.scenario import run

    with tempfile.TemporaryDirectory(prefix="caslb-ha-") as tmp:
        try:
            result = run(Path(tmp))
        except RuntimeError as exc:
            typer.echo(f"perf ha: {exc}", err=True)
            raise typer.Exit(1) from None
    for line in result.lines():
        typer.echo(line)
    if json_out is not None:
        json_out.write_text(json.dumps(result.as_json(), indent=1) + "\n")


@app.command()
def matrix(
    quick: Annotated[bool, typer.Option(
        help="Smoke: caslb and HAProxy, one body, 1 and 16 connections, 1 s each.")] = False,
    seconds: Annotated[float, typer.Option(min=1, max=10, help="Per row.")] = 2.0,
    proxies: Annotated[str | None, typer.Option(help="Comma-separated proxies (full run).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default perf/results).")] = None,
) -> None:
    """Every proxy through every row: results.json, results.md and SVG scaling curves.

    Example: python -m perf matrix --quick --out /tmp/matrix
    """
    from perf.matrix import plan as plans
    from perf.matrix.report import write_run
    from perf.matrix.runner import missing_tools, run

    missing = missing_tools()
    if missing:
        typer.echo(f"perf matrix: missing {', '.join(missing)}", err=True)
        raise typer.Exit(1)
    chosen = _split(proxies, dict.fromkeys(plans.PROXIES), "proxy")
    plan = plans.quick(seconds if seconds != 2.0 else 1.0) if quick else plans.full(
        seconds, tuple(chosen) or plans.PROXIES)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = out or Path("perf/results") / f"matrix-{'quick-' if quick else ''}{stamp}"
    with tempfile.TemporaryDirectory(prefix="caslb-matrix-") as tmp:
        document = run(plan, Path(tmp), typer.echo)
    document["quick"] = quick
    write_run(out_dir, document)
    typer.echo((out_dir / "results.md").read_text())
    typer.echo(f"results in {out_dir}")


if __name__ == "__main__":
    app()
