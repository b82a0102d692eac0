"""Instructions per L7 request: `caslb run` under callgrind, one source tree or several.

    python -m perf.l7instr [TREE ...] [--connections N] [--seconds S] [--tls]

CPU time from /proc moves by a third with what else runs on a shared machine;
the instructions a request costs do not. For each TREE (a checkout or a `git
archive` of one; this repository by default) the harness starts the same
backend and config as `perf.l7bench`, runs `caslb run` from that tree under
`valgrind --tool=callgrind --instr-atstart=no`, switches collection on
(`callgrind_control -i on`) only around one `wrk` round and divides the
instructions counted by the requests wrk made. Health checks in that window
are counted too (one every 2 s: under 1 % at the rates valgrind allows).
With --tls the frontend terminates TLS (a lab CA's ECDSA certificate) and wrk
speaks https; wrk's handshakes fall inside the window too, the same in every
tree, so the difference between trees is the request path's.
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

from casfarm.certs import FarmCA

from perf import l7bench, tools
from perf.failover.procs import REPO_ROOT
from perf.net import free_port, wait_listening

_TOTALS = re.compile(r"^totals:\s+(\d+)", re.M)


def instructions_per_request(
    tree: Path, workdir: Path, backend: int, connections: int, seconds: float,
    pem: Path | None = None,
) -> tuple[float, int]:
    """(instructions per request, requests) of `caslb run` from `tree` under callgrind;
    TLS terminated with `pem` (certificate and key) when given."""
    port, admin = free_port(), free_port()
    config = workdir / f"caslb-{port}.toml"
    text = l7bench.caslb_config(port, backend, admin)
    if pem is not None:  # the frontend's table is the first one the config opens
        tls = f'tls = {{ cert = "{pem}", key = "{pem}" }}\n'
        text = text.replace("max_connections = 100000\n", f"max_connections = 100000\n{tls}", 1)
    config.write_text(text)
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
        _wrk(port, connections, 2, tls=pem is not None)  # warm up
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True)
        measure = _wrk(port, connections, seconds, tls=pem is not None)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    found = _TOTALS.search(out.read_text())
    if found is None or not measure.requests:
        raise RuntimeError(f"no callgrind totals in {out} or no requests")
    return int(found.group(1)) / measure.requests, measure.requests


def _wrk(port: int, connections: int, seconds: float, *, tls: bool) -> l7bench.Measure:
    if not tls:
        return l7bench.wrk(port, connections, seconds)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "30s",
            f"https://{l7bench.HOST}:{port}{l7bench.PATH}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    return l7bench.read_wrk(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.l7instr",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="*", type=Path, default=[REPO_ROOT],
                        help="source trees to measure (default: this one)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (8)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured round (15)")
    parser.add_argument("--tls", action="store_true", help="terminate TLS (wrk over https)")
    args = parser.parse_args(argv)
    missing = tools.ensure("valgrind", "haproxy", "wrk")
    if missing:
        print(f"l7instr: skipped, missing {', '.join(missing)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="l7instr-") as tmp:
        workdir = Path(tmp)
        backend = free_port()
        cfg = l7bench.BACKEND_CFG.format(host=l7bench.HOST, port=backend, check=l7bench.CHECK)
        pem = None
        if args.tls:
            ca = FarmCA(workdir / "certs")
            pem = ca.server_tls("bench", "bench.lab.local", "lab.local", "127.0.0.1").cert_path
        with l7bench.haproxy(cfg, backend, workdir):
            for tree in args.trees:
                per, requests = instructions_per_request(
                    tree.resolve(), workdir, backend, args.connections, args.seconds, pem)
                print(f"{tree}: {per / 1000:,.0f}k instructions per request "
                      f"over {requests} requests", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
