"""The Python peer, mitmproxy in reverse mode, in a venv of its own.

mitmproxy 11 pins h11 and cryptography below what caslb uses, so installing it
beside caslb would change the code under test. It goes into `.venv-peer` at the
repository root (gitignored), made once with `python3 -m venv` and pip.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from perf.failover.procs import REPO_ROOT

VENV = REPO_ROOT / ".venv-peer"
REQUIREMENT = "mitmproxy>=11"


def mitmdump() -> Path:
    """The peer's `mitmdump`, installing it first when the venv lacks it.

    Raises:
        RuntimeError: when the venv or the install fails.
    """
    exe = VENV / "bin" / "mitmdump"
    if exe.exists():
        return exe
    print(f"installing {REQUIREMENT} into {VENV} ...", flush=True)
    steps = ([sys.executable, "-m", "venv", str(VENV)],
             [str(VENV / "bin" / "pip"), "install", "-q", REQUIREMENT])
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return exe
