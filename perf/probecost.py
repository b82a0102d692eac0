"""`python -m perf probes`: what the health checks cost, and whether load fools them.

Theory of operation. A casfarm process (3 servers, every protocol) and `caslb
run` in L7 mode with a pool and a check per protocol (the `[exchange]`
shorthand, checks every second), each a process of its own. Then:

1. idle: no traffic for S seconds; the balancer's CPU from /proc divided by
   the checks it ran (`caslb_server_check_duration_seconds_count` on its
   /metrics), and as a share of one core;
2. saturated: wrk keeps the L7 namespace busy with 64 connections beside
   `--hogs` CPU-bound processes for S seconds; nothing is broken, so every DOWN
   transition caslb logs is a false one (inconclusive checks, the balancer's
   own lag, are counted apart);
3. detection under that load: cas2 crashes, and the time until caslb logs it
   DOWN is printed beside `caslb check`'s worst case for a crash.

Everything binds 127.0.0.0/8; wrk and the hogs stop by themselves.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from perf import tools
from perf.failover.designs.base import HTTP_LOAD, MAIL_LISTENER
from perf.failover.designs.caslb import CASLB_COMMAND, http_get, render_config, write_cert
from perf.failover.farm import Farm, running_farm
from perf.failover.procs import LineProcess, child
from perf.failover.settings import ProbeSettings
from perf.net import free_port
from perf.procfs import cpu_seconds

PROBES = ProbeSettings(inter=1.0, fastinter=0.25, downinter=1.0, rise=2, fall=2, timeout=1.0)
LISTENERS = ("https", "imaps", "pops", "smtp", "submission")
_COUNT = re.compile(rb"^caslb_server_check_duration_seconds_count\{[^}]*\} ([0-9.e+]+)$", re.M)


@dataclass
class Balancer:
    """The running `caslb run` and where it listens."""

    proc: LineProcess
    admin: int
    https: int
    log: Path

    async def checks_run(self) -> int:
        """Checks the balancer has finished so far, from its /metrics."""
        page = await http_get(self.admin, "/metrics")
        return int(sum(float(v) for v in _COUNT.findall(page)))

    def down_lines(self) -> list[str]:
        """Its log lines that mark a server DOWN."""
        text = self.log.read_text(errors="replace")
        return [ln for ln in text.splitlines() if " is DOWN" in ln]

    def overload_lines(self) -> list[str]:
        """Its log lines that say its own lag made checks inconclusive."""
        text = self.log.read_text(errors="replace")
        return [ln for ln in text.splitlines() if "caslb is overloaded" in ln]


@contextmanager
def hogs(count: int, seconds: float) -> Iterator[None]:
    """`count` CPU-bound processes for at most `seconds`."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def wrk_argv(port: int, seconds: float) -> list[str]:
    """wrk saturating the L7 namespace with OWA health page requests."""
    return ["wrk", "-t2", "-c64", f"-d{seconds:g}s", "-H", "Host: mail.lab.local",
            f"https://127.0.0.1:{port}/owa/healthcheck.htm"]


async def _wait_up(balancer: Balancer, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while True:
            balancer.proc.check_alive()
            try:
                status = json.loads(await http_get(balancer.admin, "/status"))
                servers = [s for p in status["pools"].values() for s in p["servers"]]
                if servers and all(s.get("eligible") for s in servers):
                    return
            except (OSError, ValueError, KeyError, trio.TooSlowError):
                pass
            await trio.sleep(0.2)


async def _cpu_per_check(balancer: Balancer, seconds: float) -> tuple[float, float]:
    pid = balancer.proc.process.pid
    checks0, cpu0 = await balancer.checks_run(), cpu_seconds(pid)
    await trio.sleep(seconds)
    checks1, cpu1 = await balancer.checks_run(), cpu_seconds(pid)
    used = cpu1 - cpu0
    return 1000 * used / max(1, checks1 - checks0), 100 * used / seconds


async def _detection(farm: Farm, balancer: Balancer, limit: float = 30.0) -> float | None:
    before = len(balancer.down_lines())
    start = trio.current_time()
    await farm.command(op="inject", server="cas2", fault="crash", params={})
    with trio.move_on_after(limit):
        while not any("cas2" in ln for ln in balancer.down_lines()[before:]):
            await trio.sleep(0.02)
        return trio.current_time() - start
    return None


async def measure(
    seconds: float, hog_count: int, workdir: Path, idle_seconds: float | None = None
) -> list[str]:
    """Run the three phases (idle for `idle_seconds`, else `seconds`); the report's lines."""
    missing = tools.ensure("wrk")
    out: list[str] = []
    async with running_farm(workdir) as farm:
        listen = {k: free_port() for k in LISTENERS}
        admin = free_port()
        tls = write_cert(farm.info, workdir)
        cfg = workdir / "caslb-probes.toml"
        cfg.write_text(render_config(farm.info, PROBES, "l7", listen, admin, tls,
                                     (*HTTP_LOAD, *MAIL_LISTENER)))
        log = workdir / "caslb.log"
        argv = [*CASLB_COMMAND, "run", "--no-access-log", str(cfg)]
        async with child(argv, log=log, name="caslb") as proc:
            balancer = Balancer(proc, admin, listen["https"], log)
            await _wait_up(balancer)
            await trio.sleep(2)  # past the start-up checks
            per_check, share = await _cpu_per_check(
                balancer, seconds if idle_seconds is None else idle_seconds)
            checks = await balancer.checks_run()
            out.append(f"idle: {per_check:.2f} ms of CPU per check, {share:.1f} % of a core "
                       f"({checks} checks so far)")
            if missing:
                out.append(f"saturated: skipped ({', '.join(missing)} missing)")
                return out
            downs = len(balancer.down_lines())
            with hogs(hog_count, seconds + 5):
                wrk = subprocess.Popen(wrk_argv(balancer.https, seconds),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                await trio.sleep(seconds)
                false_downs = balancer.down_lines()[downs:]
                detected = await _detection(farm, balancer)
                wrk.wait()
            text = wrk.stdout.read().decode() if wrk.stdout else ""
            rate = re.search(r"Requests/sec:\s+([0-9.]+)", text)
            out.append(f"saturated ({hog_count} CPU hogs, wrk -c64 at "
                       f"{rate.group(1) if rate else '?'} req/s, {seconds:g} s): "
                       f"{len(false_downs)} false DOWN transitions, "
                       f"{len(balancer.overload_lines())} overload lines")
            out += [f"  {ln[:160]}" for ln in false_downs[:5]]
            worst = _worst_case_crash(cfg)
            out.append("crash of cas2 under that load: "
                       + (f"DOWN after {detected:.2f} s" if detected is not None
                          else "not detected within 30 s")
                       + f" (caslb check's worst case: {worst})")
    return out


def _worst_case_crash(cfg: Path) -> str:
    result = subprocess.run([*CASLB_COMMAND, "check", str(cfg)], capture_output=True,
                            text=True, timeout=30)
    found = re.findall(r"down\s+≤ ([0-9.]+s) after a crash", result.stdout)
    return max(found, key=lambda s: float(s[:-1])) if found else "unknown"
