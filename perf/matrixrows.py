"""A few matrix rows, repeated, through chosen proxies; optionally py-spy on caslb.

    python -m perf.matrixrows PROXIES SECONDS [SPY_PREFIX]
    ROWS=tlsclose,bulk ROUNDS=3 NATIVE=1 (environment, all optional)

The same origin, configs, pinning and CPU bookkeeping as `python -m perf matrix`,
for measuring one change before and after without the whole matrix. With
SPY_PREFIX, the first round of each row through caslb is sampled by py-spy
(200 Hz, raw stacks) into SPY_PREFIX-<body>-<plain|tls>.txt.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from casfarm.certs import FarmCA

from perf.idle import raise_nofile
from perf.matrix import clients, procs
from perf.matrix.configs import FDS
from perf.matrix.plan import BODIES, L7Row

ROWS = {
    "tlsclose": L7Row("?", 64, "100B", True, False),
    "plainclose": L7Row("?", 64, "100B", False, False),
    "plainka": L7Row("?", 64, "100B", False, True),
    "tlska": L7Row("?", 64, "100B", True, True),
    "bulk": L7Row("?", 16, "1MiB", False, True),
    "tlsbulk": L7Row("?", 16, "1MiB", True, True),
}


def _spy(prefix: str, row: L7Row, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    out = f"{prefix}-{row.body}-{'tls' if row.tls else 'plain'}.txt"
    mode = ["--native"] if os.environ.get("NATIVE") else ["--nonblocking"]
    argv = [str(Path(sys.executable).with_name("py-spy")), "record", "-r", "200", "-f", "raw",
            "-o", out, "-d", str(int(seconds)), "-p", str(pid), *mode]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL)


def main() -> None:
    proxies, seconds = sys.argv[1].split(","), float(sys.argv[2])
    prefix = sys.argv[3] if len(sys.argv) > 3 else ""
    rows = [ROWS[k] for k in os.environ.get("ROWS", "tlsclose,bulk").split(",")]
    rounds = int(os.environ.get("ROUNDS", "3"))
    raise_nofile(FDS)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        ca = FarmCA(workdir / "certs")
        pem = ca.server_tls("bench", "bench.lab.local", "lab.local", "127.0.0.1").cert_path
        with procs.origin(workdir, BODIES) as origin:
            for name in proxies:
                with procs.l7_proxy(name, origin, pem, workdir) as proxy:
                    for template in rows:
                        row = dataclasses.replace(template, proxy=name)
                        clients.run_l7(dataclasses.replace(row, connections=16), proxy, 1)
                        for i in range(rounds):
                            spy = (_spy(prefix, row, proxy.pid, seconds)
                                   if prefix and name.startswith("caslb") and i == 0 else None)
                            o = clients.run_l7(row, proxy, seconds)
                            if spy is not None:
                                spy.wait()
                            print(f"{row.key}: {o.throughput:.0f} req/s, {o.cpu_per_op:.0f} "
                                  f"µs/req, errors {o.errors}, load {o.load:.1f}", flush=True)


if __name__ == "__main__":
    main()
