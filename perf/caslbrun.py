"""`caslb run CONFIG` as the benches start it: a subprocess, ready only once its servers are UP.

The async harnesses (failover, idle) have their own runner on trio; the
throughput benches are plain blocking code, so this one is too, but it starts
the same command (perf.failover.designs.caslb.CASLB_COMMAND) and reads the same
admin `GET /status`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import trio

from perf.failover.designs.caslb import CASLB_COMMAND, http_get
from perf.failover.procs import REPO_ROOT
from perf.net import wait_listening

# cProfile wants a script file; this one is the `caslb` console script.
# A profiled caslb: cProfile off until SIGUSR1 (a new profile each time), off
# again and written at SIGUSR2,
# so that a profile holds one load round and none of the start-up (imports,
# regex compiles, TLS contexts), which in a round of seconds outweighs it.
_PROFILED_ENTRY = """import cProfile, signal, sys
from lb.cli import main
profile, out = [cProfile.Profile()], sys.argv.pop(1)
def start(*_):  # a new profile each time: one dump per round
    profile[0] = cProfile.Profile()
    profile[0].enable()
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, lambda *_: (profile[0].disable(), profile[0].dump_stats(out)))
main()
"""

# A caslb whose cyclic collector is timed: gc.callbacks around every collection,
# the counts and seconds per generation reset at SIGUSR1 and written as JSON at
# SIGUSR2 (with the thresholds in force), so a round's gc share can be read
# beside its CPU from /proc. perf_counter, since the collector runs on the
# interpreter's one thread and does no I/O: its wall time is its CPU time,
# bar preemption.
_GC_TIMED_ENTRY = """import gc, json, signal, sys, time
from lb.cli import main
out = sys.argv.pop(1)
counts, seconds, freed, began = [0, 0, 0], [0.0, 0.0, 0.0], [0, 0, 0], [0.0]
def timed(phase, info):
    if phase == "start":
        began[0] = time.perf_counter()
    else:
        counts[info["generation"]] += 1
        seconds[info["generation"]] += time.perf_counter() - began[0]
        freed[info["generation"]] += info["collected"]
def reset(*_):
    counts[:], seconds[:], freed[:] = [0, 0, 0], [0.0, 0.0, 0.0], [0, 0, 0]
def write(*_):
    with open(out + ".tmp", "w") as f:
        json.dump({"collections": counts, "seconds": seconds, "collected": freed,
                   "threshold": gc.get_threshold()}, f)
    import os; os.replace(out + ".tmp", out)
gc.callbacks.append(timed)
signal.signal(signal.SIGUSR1, reset)
signal.signal(signal.SIGUSR2, write)
main()
"""


def servers_up(document: dict[str, Any]) -> bool:
    """True when every server of every pool is UP and its last check passed.

    A member starts UP before any check ran; requiring a passed check proves the
    probe really reaches the backend, so the bench measures a balancer that probes.
    """
    servers = [s for pool in document.get("pools", {}).values() for s in pool["servers"]]
    return bool(servers) and all(
        s["state"] == "UP" and (s.get("last_check") or {}).get("ok") for s in servers
    )


def argv(
    config: Path, workers: int = 1, profile: Path | None = None, access_log: bool = False,
    gc_timed: Path | None = None,
) -> list[str]:
    """The command line: the console script, or caslb with a profiler that
    SIGUSR1 starts and SIGUSR2 stops, writing its stats to `profile`, or with its
    collections timed between SIGUSR1 and SIGUSR2 into `gc_timed` (JSON)."""
    # HAProxy runs without a log in the benches, so caslb does too unless asked
    args = ["run", str(config)] + ([] if access_log else ["--no-access-log"])
    if workers > 1:
        args += ["--workers", str(workers)]
    if gc_timed is not None:
        entry = gc_timed.with_suffix(".entry.py")
        entry.write_text(_GC_TIMED_ENTRY)
        return [sys.executable, str(entry), str(gc_timed), *args]
    if profile is None:
        return [*CASLB_COMMAND, *args]
    entry = profile.with_suffix(".entry.py")
    entry.write_text(_PROFILED_ENTRY)
    return [sys.executable, str(entry), str(profile), *args]


@contextlib.contextmanager
def running(
    config: Path,
    listen: Sequence[int],
    admin: int,
    *,
    workers: int = 1,
    profile: Path | None = None,
    limit: float = 20.0,
    access_log: bool = False,
    prefix: Sequence[str] = (),
    tree: Path | None = None,
    gc_timed: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run caslb on `config` until the block ends; SIGTERM, then SIGKILL.

    `prefix` goes before the command line, e.g. `taskset -c 1` to pin it.
    `tree` is the source tree caslb is imported from (default: this one), so
    that a bench can run the code before a change beside the code after it.

    Yields once every port in `listen` accepts, every worker serves and the
    admin API on `admin` shows every server UP with a passed check.

    Raises:
        RuntimeError: when caslb exits or is not ready within `limit` seconds,
            quoting its log.
    """
    log = config.with_suffix(".log")
    root = tree or REPO_ROOT
    env = {**os.environ, "PYTHONPATH": str(root)}
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [*prefix, *argv(config, workers, profile, access_log, gc_timed)], cwd=root, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        try:
            _wait_ready(proc, log, listen, admin, workers, limit)
        except RuntimeError as exc:
            text = log.read_text(errors="replace")
            raise RuntimeError(f"caslb not ready: {exc}\n{text}") from None
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, `grace` seconds to exit, then SIGKILL; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(
    proc: subprocess.Popen[bytes],
    log: Path,
    listen: Sequence[int],
    admin: int,
    workers: int,
    limit: float,
) -> None:
    deadline = time.monotonic() + limit
    for port in listen:
        wait_listening(port, max(0.1, deadline - time.monotonic()), proc)
    if workers > 1:
        # a connection made while only one worker listens stays on that worker
        _wait_workers(proc, log, workers, deadline)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        with contextlib.suppress(OSError, trio.TooSlowError, ValueError):
            if servers_up(json.loads(trio.run(http_get, admin, "/status"))):
                return
        time.sleep(0.1)
    raise RuntimeError(f"servers not UP on the admin API after {limit:g}s")


def _wait_workers(proc: subprocess.Popen[bytes], log: Path, workers: int, deadline: float) -> None:
    # the supervisor and each worker log "caslb serving" once bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        if log.read_text(errors="replace").count("caslb serving") > workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"fewer than {workers} workers serving")
