"""What the harnesses read from /proc about a process they started: memory, CPU time.

Kept in one place so every harness counts a process the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _stat(pid: int) -> list[str]:
    # the command name may hold spaces and parentheses: fields start after the last ')'
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to read
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant, parents first."""
    found = [pid]
    for child in _children(pid):
        found += process_tree(child)
    return found


def own_cpu_seconds(pid: int) -> float:
    """User plus system CPU of `pid` alone (no children), in seconds."""
    # utime and stime: fields 14-15 of proc(5), 11-12 once the name is cut
    return sum(int(f) for f in _stat(pid)[11:13]) / _TICK


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of `pid` and every live descendant, in seconds.

    `caslb run --workers N` serves from child processes, so the supervisor alone
    would hide nearly all the work. Children already reaped are in the parent's
    cutime/cstime, which are added too.
    """
    fields = _stat(pid)
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 once the name is cut
    ticks = sum(int(f) for f in fields[11:15])
    seconds = ticks / _TICK
    for child in _children(pid):
        try:
            seconds += cpu_seconds(child)
        except OSError:
            continue  # exited between the listing and the read
    return seconds
