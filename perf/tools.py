"""The outside tools the harnesses compare against (haproxy, wrk): found, or installed.

A harness asks for what it needs; missing Debian packages are installed with
apt-get once per process when that can work here (root, apt-get present). What
still is missing comes back so the harness can skip that part and say why.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

# Debian puts haproxy in /usr/sbin, which is not on every user's PATH.
_SBIN = ("/usr/sbin", "/sbin")


def which(tool: str) -> str | None:
    """The path of `tool`, looking in sbin folders too."""
    return shutil.which(tool) or shutil.which(tool, path=os.pathsep.join(_SBIN))


@functools.cache
def _apt_install(packages: tuple[str, ...]) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    print(f"installing {' '.join(packages)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        subprocess.run(command, check=False, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ensure(*tools: str) -> list[str]:
    """Install what is missing of `tools` if possible; return what is still missing."""
    missing = tuple(t for t in tools if which(t) is None)
    if missing:
        _apt_install(missing)
    return [t for t in tools if which(t) is None]


def ensure_file(path: str, package: str) -> bool:
    """Install `package` if `path` (a file it ships, e.g. an nginx module) is missing."""
    if not os.path.exists(path):
        _apt_install((package,))
    return os.path.exists(path)
