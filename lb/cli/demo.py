"""`caslb demo`: a 3-server simulated farm and the balancer in front of it, on loopback.

The farm takes its demo addresses and ports (cas1..cas3 on 127.0.0.11..13) and
writes its certificates next to config/lab.toml, which the balancer then runs
exactly as `caslb run config/lab.toml` would. Before anything is written, every
address the farm and the balancer need is tried: when one is taken (a demo
already running, say) the demo refuses to start, naming them, and leaves the
certificates of the running one alone.
"""

from __future__ import annotations

from pathlib import Path

import casfarm
import trio
import typer

from lb import logs
from lb.app import Balancer
from lb.cli._app import app
from lb.cli._config import load_or_exit
from lb.cli._startup import taken_addresses
from lb.cli.farm import farm_addresses
from lb.cli.run import run_until_signalled, start
from lb.config import Config

LAB = Path(__file__).resolve().parents[2] / "config" / "lab.toml"


def banner(config: Config, balancer: Balancer, farm: casfarm.Farm, certs: Path) -> str:
    """What a newcomer needs to try the demo: addresses, and how to break a server."""
    https = next(fe for fe in config.frontends if fe.name == "https")
    ns = farm.namespace
    url = f"https://{ns}:{https.port}"
    curl = f"curl --cacert {certs / 'ca.pem'} --resolve {ns}:{https.port}:{https.host}"
    admin = f"http://{config.admin.host}:{config.admin.port}"
    fronts = "\n".join(f"  {fe.name:<11} {fe.mode.value:<5} {fe.host}:{fe.port}"
                       for fe in config.frontends)
    servers = "\n".join(f"  {s.name}  {s.fqdn}  {s.host}  https {s.ports['https']}"
                        for s in farm.servers)
    return f"""caslb demo: a simulated CAS farm behind caslb, all on loopback.

Farm servers:
{servers}
Front ends:
{fronts}

  HTTPS front end  {url}/owa/   (TLS for {ns}, CA {certs / 'ca.pem'})
  status page      {admin}/
  metrics          {admin}/metrics
  farm control     {farm.control_url}

Try it:
  {curl} {url}/owa/ -si | grep -i x-feserver
  caslb status

Break one protocol on one server, and watch only that protocol move:
  caslb farm set cas1 EwsProxy Inactive        # then: caslb status
  caslb farm set cas1 EwsProxy Active
Crash a whole server, then bring it back:
  caslb farm inject cas2 crash
  caslb farm clear cas2

Ctrl-C stops everything."""


async def run_demo(lab: Path, certs: Path) -> None:
    """Start the farm, then the balancer on `lab`, until a stop signal."""
    async with casfarm.running(
        servers=3,
        base_ports=casfarm.DEMO_PORTS,
        cert_dir=certs,
        control_port=casfarm.DEMO_CONTROL_PORT,
    ) as farm:
        config = load_or_exit(lab)
        async with trio.open_nursery() as nursery:
            balancer: Balancer = await nursery.start(run_until_signalled, config, lab)
            print(banner(config, balancer, farm, certs), flush=True)
            await balancer.stopped.wait()
            nursery.cancel_scope.cancel()


@app.command()
def demo() -> None:
    """Start a 3-server simulated farm and caslb in front of it (config/lab.toml).

    Example: caslb demo   (then follow what it prints; Ctrl-C stops)
    """
    if not LAB.is_file():
        typer.echo(f"error: {LAB} not found: run the demo from a source checkout", err=True)
        raise typer.Exit(2)
    taken = taken_addresses(demo_addresses(load_or_exit(LAB)))
    if taken:
        typer.echo(f"error: cannot start the demo, addresses in use: {'; '.join(taken)}",
                   err=True)
        raise typer.Exit(1)
    logs.setup("WARNING")
    raise typer.Exit(start(run_demo, LAB, LAB.parent / "lab-certs"))


def demo_addresses(config: Config) -> list[tuple[str, int, str]]:
    """(host, port, what) for every address the demo's farm and balancer listen on."""
    wanted = [(host, port, f"farm {name} {kind}")
              for name, host, kind, port in farm_addresses(3, distinct=True)]
    wanted.append(("127.0.0.1", casfarm.DEMO_CONTROL_PORT, "farm control API"))
    wanted += [(fe.host, fe.port, f"frontend {fe.name}") for fe in config.frontends]
    wanted.append((config.admin.host, config.admin.port, "admin API"))
    return wanted

