"""Instructions per L7 request: `caslb run` under callgrind, one source tree or several.

    python -m perf.l7instr [TREE ...] [--connections N] [--seconds S]

CPU time from /proc moves by a third with what else runs on a shared machine;
the instructions a request costs do not. For each TREE (a checkout or a `git
archive` of one; this repository by default) the harness starts the same
backend and config as `perf.l7bench`, runs `caslb run` from that tree under
`valgrind --tool=callgrind --instr-atstart=no`, switches collection on
(`callgrind_control -i on`) only around one `wrk` round and divides the
instructions counted by the requests wrk made. Health checks in that window
are counted too (one every 2 s: under 1 % at the rates valgrind allows).
Needs valgrind, haproxy and wrk (installed with apt-get when it can).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf import l7bench, tools
from perf.failover.procs import REPO_ROOT
from perf.net import free_port, wait_listening

_TOTALS = re.compile(r"^totals:\s+(\d+)", re.M)


def instructions_per_request(
    tree: Path, workdir: Path, backend: int, connections: int, seconds: float
) -> tuple[float, int]:
    """(instructions per request, requests) of `caslb run` from `tree` under callgrind."""
    port, admin = free_port(), free_port()
    config = workdir / f"caslb-{port}.toml"
    config.write_text(l7bench.caslb_config(port, backend, admin))
    out = workdir / f"callgrind-{port}.out"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, "-c", "from lb.cli import main; main()",
            "run", str(config), "--no-access-log"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, limit=120, proc=proc)
        time.sleep(8)  # valgrind is slow: let the first checks pass
        l7bench.wrk(port, connections, 2)  # warm up
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True)
        measure = l7bench.wrk(port, connections, seconds)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    found = _TOTALS.search(out.read_text())
    if found is None or not measure.requests:
        raise RuntimeError(f"no callgrind totals in {out} or no requests")
    return int(found.group(1)) / measure.requests, measure.requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.l7instr",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="*", type=Path, default=[REPO_ROOT],
                        help="source trees to measure (default: this one)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (8)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured round (15)")
    args = parser.parse_args(argv)
    missing = tools.ensure("valgrind", "haproxy", "wrk")
    if missing:
        print(f"l7instr: skipped, missing {', '.join(missing)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="l7instr-") as tmp:
        workdir = Path(tmp)
        backend = free_port()
        cfg = l7bench.BACKEND_CFG.format(host=l7bench.HOST, port=backend, check=l7bench.CHECK)
        with l7bench.haproxy(cfg, backend, workdir):
            for tree in args.trees:
                per, requests = instructions_per_request(
                    tree.resolve(), workdir, backend, args.connections, args.seconds)
                print(f"{tree}: {per / 1000:,.0f}k instructions per request "
                      f"over {requests} requests", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
