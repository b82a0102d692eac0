"""Where an L4 new connection's CPU goes: perf.l4bench's rate load through one `caslb run`.

`python -m perf.l4profile [--seconds S]` starts the l4bench backend and caslb (the
same config), then runs the 16-thread new-connections client four times: plain
(CPU per connection from /proc, user and system apart), under `strace -c -f`
(syscalls per connection), under py-spy with native frames when it is installed
(leaf functions and caslb frames), and with cProfile on (Python calls per
connection, the trio tasks, nurseries and cancel scopes each one makes, the own
time per package and the top functions). docs/benchmarks.md's "L4 CPU per new
connection" cites them; a profiler slows caslb, so only the plain round's CPU is
a cost figure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from perf import caslbrun, pyprofile
from perf.l4bench import Target, _caslb, _first_line, _running, _spawn
from perf.procfs import cpu_seconds

_TICK = os.sysconf("SC_CLK_TCK")

# cProfile's name for the trio and caslb functions counted per connection.
_COUNTED = {
    "tasks spawned": ("trio/_core/_run.py", "spawn_impl"),
    "nurseries opened": ("trio/_core/_run.py", "__aenter__"),
    "cancel scopes entered": ("trio/_core/_run.py", "__enter__"),
    "wait_readable/writable": ("trio/_core/_io_epoll.py", "_epoll_wait"),
    "epoll_ctl (trio _update_registrations)": ("trio/_core/_io_epoll.py", "_update_registrations"),
}


def _rate(target: Target, seconds: float) -> tuple[float, float]:
    """(connections made, CPU seconds caslb spent on them)."""
    before = cpu_seconds(target.pid or 0)
    with _running(_spawn("_rate", str(target.ping), str(seconds))) as proc:
        rate = _first_line(proc)
    assert isinstance(rate, list)
    return rate[0] * seconds, cpu_seconds(target.pid or 0) - before


def _user_system(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def _split(target: Target, seconds: float) -> str:
    """CPU per connection, user and system apart (caslb runs one process here)."""
    assert target.pid is not None
    user0, sys0 = _user_system(target.pid)
    conns, _ = _rate(target, seconds)
    user1, sys1 = _user_system(target.pid)
    user, system = (user1 - user0) / conns * 1e6, (sys1 - sys0) / conns * 1e6
    return (f"plain: {conns / seconds:.0f} conn/s; CPU per connection {user:.0f} µs user "
            f"+ {system:.0f} µs system")


def _pyspy(target: Target, seconds: float, out: Path) -> str:
    """py-spy's samples (with native frames) aggregated by leaf function and by caslb frame."""
    assert target.pid is not None
    spy = subprocess.Popen(["py-spy", "record", "--native", "-r", "500", "-f", "raw", "-o",
                            str(out), "-p", str(target.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    conns, _ = _rate(target, seconds)
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=30)
    leaf: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        leaf[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames if " (lb/" in f or "/lb/" in f}:
            own[frame] += n
    lines = [f"py-spy over {conns:.0f} connections, {total} samples; leaf functions:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in leaf.most_common(20)]
    lines.append("caslb frames on the stack (inclusive):")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(20)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} ({'/'.join(Path(where.split(':')[0]).parts[-2:])})" if where else name


def _strace(target: Target, seconds: float) -> str:
    assert target.pid is not None
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(target.pid)],
                              stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    conns, _ = _rate(target, seconds)
    tracer.send_signal(signal.SIGINT)
    _, err = tracer.communicate(timeout=30)
    lines = [f"strace -c -f over {conns:.0f} connections: calls per connection"]
    for line in err.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)$", line)
        if m and m.group(3) != "total":
            lines.append(f"  {m.group(3):<16}{int(m.group(1)) / conns:8.2f}")
    return "\n".join(lines)


def _profile(stats_path: Path, conns: float) -> str:
    stats = pstats.Stats(str(stats_path))
    raw = stats.stats  # type: ignore[attr-defined]
    total_calls = sum(v[1] for v in raw.values())
    lines = [f"cProfile over {conns:.0f} connections: {total_calls / conns:.0f} Python "
             f"calls per connection"]
    for label, (path, name) in _COUNTED.items():
        n = sum(v[1] for (f, _, fn), v in raw.items() if f.endswith(path) and fn == name)
        lines.append(f"  {label:<40}{n / conns:8.2f}")
    lines.append(pyprofile.render(pyprofile.by_package(stats, round(conns)),
                                  "by package, per connection"))
    lines.append(pyprofile.render(pyprofile.top_functions(stats, round(conns), 20),
                                  "top functions by own time, per connection"))
    return "\n".join(lines)


def main(seconds: float) -> int:
    """Run the three rounds and print their figures."""
    with (
        tempfile.TemporaryDirectory(prefix="l4profile-") as tmp,
        _running(_spawn("_backend")) as backend,
    ):
        ports = _first_line(backend)
        assert isinstance(ports, list)
        with _caslb(ports[0], ports[1], Path(tmp)) as target:
            _rate(target, 1.0)  # warm-up
            print(_split(target, seconds), flush=True)
            print(_strace(target, seconds), flush=True)
            if shutil.which("py-spy"):
                print(_pyspy(target, seconds, Path(tmp) / "spy.txt"), flush=True)
        profile = Path(tmp) / "caslb.prof"
        with contextlib.ExitStack() as stack:
            target = _profiled(stack, ports, Path(tmp), profile)
            _rate(target, 1.0)
            assert target.pid is not None
            caslbrun_signal(target.pid, signal.SIGUSR1)
            conns, _ = _rate(target, seconds)
            caslbrun_signal(target.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not profile.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # dump_stats may still be writing
            print(_profile(profile, conns))
    return 0


def _profiled(stack: contextlib.ExitStack, ports: list[int], workdir: Path,
              profile: Path) -> Target:
    from perf.l4bench import caslb_config
    from perf.net import free_port
    listen, admin = (free_port(), free_port()), free_port()
    cfg = workdir / "caslb-profiled.toml"
    cfg.write_text(caslb_config(listen, (ports[0], ports[1]), admin))
    proc = stack.enter_context(caslbrun.running(cfg, listen, admin, profile=profile))
    return Target(listen[0], listen[1], proc.pid)


def caslbrun_signal(pid: int, sig: signal.Signals) -> None:
    """Start (SIGUSR1) or stop and write (SIGUSR2) the profiled caslb's cProfile."""
    os.kill(pid, sig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m perf.l4profile",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round (default 3)")
    args = parser.parse_args()
    raise SystemExit(main(args.seconds))
