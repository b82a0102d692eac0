"""`caslb demo`: a 3-server simulated farm and the balancer in front of it, on loopback.

The lab configs are package data (`lb.lab`: config/ in a checkout, lb/lab/
in an installed wheel), so the demo runs from any directory. The farm runs in
a process of its own, `caslb farm --child`, on its demo addresses and ports
(cas1..cas3 on 127.0.0.11..13) with its certificates in lab-certs/ next to
the lab configs; once it listens, this process runs the balancer on
that file exactly as `caslb run config/lab.toml` would. Two processes, because
the farm does the server side of every TLS handshake: sharing one event loop,
on a busy 2-core machine, the farm's work made loopback checks take
400-1000 ms against 1 s timeouts and healthy servers went DOWN over and over.

The child stops when its stdin ends: the demo closes it on the way out (after
Ctrl-C or SIGTERM, once the balancer has drained), and the kernel closes it if
the demo dies any other way. It runs in a session of its own, so a Ctrl-C in
the terminal reaches only the demo, and the farm keeps serving while the
balancer drains.

Before anything is written, every address the farm and the balancer need is
tried: when one is taken (a demo already running, say) the demo refuses to
start, naming them, and leaves the certificates of the running one alone.
"""

from __future__ import annotations

import enum
import importlib.resources
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import casfarm
import trio
import typer
from casfarm.ewsxml import SAMPLE_REQUEST_FILE

from lb import logs
from lb.app import Balancer
from lb.cli._app import app
from lb.cli._config import load_or_exit
from lb.cli._startup import taken_addresses
from lb.cli.farm import READY, farm_addresses
from lb.cli.farmcontrol import ControlApiError, call_control
from lb.cli.run import run_until_signalled, start
from lb.config import Config, FrontendConfig, Mode

# Wheels install unpacked, so the package data is a real directory.
LAB = Path(str(importlib.resources.files("lb.lab"))) / "lab.toml"


class DemoMode(enum.Enum):
    """Which design the demo puts in front of the farm; compare runs all three."""

    L7 = "l7"
    L4 = "l4"
    L4_SNI = "l4-sni"
    COMPARE = "compare"

    @property
    def config(self) -> Path:
        """The lab config of this design, next to lab.toml."""
        return LAB if self is DemoMode.L7 else LAB.with_name(f"lab-{self.value}.toml")


# The design each kind of https frontend stands for (docs/exchange.md §3).
DESIGNS = {Mode.HTTP: "L7 (B)", Mode.TCP: "L4 (A)", Mode.SNI: "L4-SNI (D)"}
# A second interpreter imports the package and makes three certificates: seconds
# on a busy machine, never this long unless it is stuck.
FARM_START_SECONDS = 60.0
# The farm holds no state worth a wait: past this, it is killed.
FARM_STOP_SECONDS = 5.0


@dataclass
class FarmProcess:
    """The demo's farm: its process and what its control API said once it was ready."""

    process: trio.Process
    state: dict[str, Any]


def farm_argv(certs: Path) -> list[str]:
    """The command that runs the demo's farm: the demo's ports, long-polls as casfarm's."""
    return [sys.executable, "-c", "from lb.cli import main; main()", "farm",
            "--child", "--cert-dir", str(certs), "--heartbeat", "30", "--pending-period", "5"]


async def _wait_ready(process: trio.Process) -> str:
    assert process.stdout is not None
    seen = b""
    with trio.move_on_after(FARM_START_SECONDS):
        while b"\n" not in seen:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                status = await process.wait()
                # Its own error (an address taken, say) is already on stderr.
                raise OSError(f"the farm process exited with status {status} before it listened")
            seen += chunk
        word, _, url = seen.split(b"\n", 1)[0].decode(errors="replace").partition(" ")
        if word != READY or not url.startswith("http://"):
            raise OSError(f"the farm process said {seen!r}, not {READY!r} and its control URL")
        return url
    raise OSError(f"the farm process was not listening after {FARM_START_SECONDS:g}s")


async def _stop(process: trio.Process) -> None:
    if process.stdin is not None:
        await process.stdin.aclose()
    with trio.move_on_after(FARM_STOP_SECONDS):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()


@asynccontextmanager
async def farm_process(certs: Path) -> AsyncIterator[FarmProcess]:
    """Run the farm in a child process for the block; it is stopped however the block ends.

    Raises:
        OSError: the farm did not start (its own reason is on stderr), or its
            control API did not answer.
    """
    process = await trio.lowlevel.open_process(
        farm_argv(certs), stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        url = await _wait_ready(process)
        try:
            state = await trio.to_thread.run_sync(call_control, url, "/api/state")
        except ControlApiError as exc:
            raise OSError(str(exc)) from None
        yield FarmProcess(process, state)
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


def _https_frontends(config: Config) -> list[FrontendConfig]:
    return [fe for fe in config.frontends if fe.name.endswith("https")]


def lab_login() -> str:
    """The lab user as curl's -u takes it: DOMAIN\\name:password."""
    name, password = next(iter(casfarm.LAB_USERS.items()))
    return f"{casfarm.LAB_DOMAIN}\\{name}:{password}"


def design_lines(config: Config, namespace: str, certs: Path) -> str:
    """Per design: its address, and a curl line that logs on to EWS through it."""
    lines = []
    login = lab_login()
    for fe in _https_frontends(config):
        # The SNI design routes on the name: EWS has its own (the certificate has *.namespace).
        name = f"ews.{namespace}" if fe.mode is Mode.SNI else namespace
        url = f"https://{name}:{fe.port}"
        lines.append(f"  {DESIGNS[fe.mode]:<11} {fe.host}:{fe.port}  https://{namespace}:{fe.port}/owa/\n"
                     f"    curl --ntlm -u '{login}' --cacert {certs / 'ca.pem'}"
                     f" --resolve {name}:{fe.port}:{fe.host}"
                     f" -s -o /dev/null -w '%{{http_code}} ' -H 'Content-Type: text/xml'"
                     f" -d @{certs / SAMPLE_REQUEST_FILE} {url}/EWS/Exchange.asmx")
    return "\n".join(lines)


def banner(config: Config, farm: FarmProcess, certs: Path) -> str:
    """What a newcomer needs to try the demo: addresses, and how to break a server."""
    ns = farm.state["namespace"]
    admin = f"http://{config.admin.host}:{config.admin.port}"
    fronts = "\n".join(f"  {fe.name:<13} {fe.mode.value:<5} {fe.host}:{fe.port}"
                       for fe in config.frontends)
    servers = "\n".join(f"  {s['name']}  {s['fqdn']}  {s['host']}  https {s['ports']['https']}"
                        for s in farm.state["servers"])
    return f"""caslb demo: a simulated CAS farm behind caslb, all on loopback.

Farm servers:
{servers}
Front ends:
{fronts}

Designs (TLS for {ns} and *.{ns}, CA {certs / 'ca.pem'}):
{design_lines(config, ns, certs)}

  status page      {admin}/
  metrics          {admin}/metrics
  farm control     {farm.state['control_url']}
  processes        balancer pid {os.getpid()}, farm pid {farm.process.pid}
  lab user         {lab_login().replace(":", " / ", 1)}  (NTLM on EWS, MAPI, OAB, RPC, Autodiscover;
                   Basic on ActiveSync; the forms logon on OWA and ECP)

Try it:
  caslb status

Stop one application pool, and see which design lets its 503s through
(run a curl line above a dozen times, before and after):
  caslb farm inject cas1 app_pool_stopped --vdir ews
  caslb farm clear cas1
Break one protocol on one server, and watch only that protocol move:
  caslb farm set cas1 EwsProxy Inactive        # then: caslb status
  caslb farm set cas1 EwsProxy Active
Crash a whole server, then bring it back:
  caslb farm inject cas2 crash
  caslb farm clear cas2

Ctrl-C stops everything."""


async def _fail_when_farm_exits(farm: FarmProcess) -> None:
    status = await farm.process.wait()
    raise OSError(f"the farm process (pid {farm.process.pid}) exited with status {status}")


async def run_demo(lab: Path, certs: Path) -> None:
    """Start the farm's process, then the balancer on `lab`, until a stop signal."""
    async with farm_process(certs) as farm:
        config = load_or_exit(lab)
        async with trio.open_nursery() as nursery:
            # Without its farm the demo shows nothing: say so rather than flap every server.
            nursery.start_soon(_fail_when_farm_exits, farm)
            balancer: Balancer = await nursery.start(run_until_signalled, config, lab)
            print(banner(config, farm, certs), flush=True)
            await balancer.stopped.wait()
            nursery.cancel_scope.cancel()


@app.command()
def demo(
    mode: Annotated[DemoMode, typer.Option(
        help="The design in front of the farm: l7 (config/lab.toml), l4, l4-sni, or compare: "
             "all three side by side on 9443, 9444 and 9445, one status page.")] = DemoMode.L7,
) -> None:
    """Start a 3-server simulated farm and caslb in front of it (config/lab*.toml).

    Example: caslb demo --mode compare   (then follow what it prints; Ctrl-C stops)
    """
    lab = mode.config
    if not lab.is_file():
        typer.echo(f"error: {lab} not found: caslb is installed without its lab configs",
                   err=True)
        raise typer.Exit(2)
    if not os.access(lab.parent, os.W_OK):
        typer.echo(f"error: cannot write the farm's certificates in {lab.parent}: "
                   "install caslb in a virtual environment of your own", err=True)
        raise typer.Exit(1)
    taken = taken_addresses(demo_addresses(load_or_exit(lab)))
    if taken:
        typer.echo(f"error: cannot start the demo, addresses in use: {'; '.join(taken)}",
                   err=True)
        raise typer.Exit(1)
    logs.setup("WARNING")
    try:
        code = start(run_demo, lab, lab.parent / "lab-certs")
    except KeyboardInterrupt:
        # Ctrl-C before the balancer listens: the farm is already stopped.
        code = 130
    raise typer.Exit(code)


def demo_addresses(config: Config) -> list[tuple[str, int, str]]:
    """(host, port, what) for every address the demo's farm and balancer listen on."""
    wanted = [(host, port, f"farm {name} {kind}")
              for name, host, kind, port in farm_addresses(3, distinct=True)]
    wanted.append(("127.0.0.1", casfarm.DEMO_CONTROL_PORT, "farm control API"))
    wanted += [(fe.host, fe.port, f"frontend {fe.name}") for fe in config.frontends]
    wanted.append((config.admin.host, config.admin.port, "admin API"))
    return wanted
