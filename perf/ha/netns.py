"""Throwaway network namespaces on one bridge, for tests and harnesses that need a LAN.

`Lan` creates a "lan" namespace holding a bridge and, per host, a namespace whose
`eth0` is a veth into that bridge. Every link is created directly inside the
namespaces (`ip link add ... netns`), so nothing ever appears in the namespace the
caller runs in, and no packet (VRRP multicast, gratuitous ARP) can leave them.
Names carry the creating process's id: namespaces left by a process that died
(killed before its cleanup ran) are deleted the next time a `Lan` is made.

Stdlib only, blocking: the callers start processes in the namespaces and watch them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

PREFIX = "caslbnet"
PREFIX_LENGTH = 24


def ip(*args: str) -> str:
    """Run `ip ARGS` and return its output.

    Raises:
        RuntimeError: `ip` failed, with its message.
    """
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    """The names of every network namespace `ip netns` knows."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_stale() -> list[str]:
    """Delete the namespaces of Lans whose creating process is gone; their names."""
    stale = []
    for name in namespaces():
        parts = name.split("-")
        ours = len(parts) >= 3 and parts[0] == PREFIX and parts[1].isdigit()
        if ours and not _alive(int(parts[1])):
            with contextlib.suppress(RuntimeError):
                ip("netns", "delete", name)
                stale.append(name)
    return stale


class Lan:
    """A bridge and hosts on it, each in a namespace of its own; `close` deletes them all.

    Use as a context manager. Processes started with `start` are ended (SIGTERM, then
    SIGKILL) before the namespaces go, so none outlives the Lan.
    """

    def __init__(self, hosts: Mapping[str, Sequence[str]], prefix_length: int = PREFIX_LENGTH):
        """Create the namespaces, the bridge and one veth per host.

        Args:
            hosts: host name → its addresses on the LAN (the first is its own).
            prefix_length: the LAN's prefix length.

        Raises:
            RuntimeError: a step failed; whatever was created is deleted.
        """
        delete_stale()
        self.tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        try:
            lan = self._namespace("lan")
            ip("-n", lan, "link", "add", "br0", "type", "bridge")
            ip("-n", lan, "link", "set", "br0", "up")
            for host, addresses in hosts.items():
                ns = self._namespace(host)
                ip("link", "add", "eth0", "netns", ns, "type", "veth",
                   "peer", "name", host, "netns", lan)
                ip("-n", lan, "link", "set", "dev", host, "master", "br0", "up")
                for address in addresses:
                    ip("-n", ns, "addr", "add", f"{address}/{prefix_length}", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    def _namespace(self, host: str) -> str:
        name = self.ns(host)
        ip("netns", "add", name)
        self.names.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        # IPv6 would only add router solicitations and DAD to the LAN; the tests use IPv4.
        self.sysctl(host, "net.ipv6.conf.all.disable_ipv6", "1")
        return name

    def ns(self, host: str) -> str:
        """The namespace name of `host` ("lan" is the bridge's)."""
        return f"{self.tag}-{host}"

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` as run inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def sysctl(self, host: str, key: str, value: str) -> None:
        """Set a per-namespace sysctl (net.*) inside `host`."""
        subprocess.run(self.argv(host, ["sysctl", "-qw", f"{key}={value}"]), check=True)

    def run(self, host: str, argv: Sequence[str], timeout: float = 30.0) -> str:
        """Run `argv` in `host` to completion and return its stdout.

        Raises:
            RuntimeError: it failed, quoting its stderr.
        """
        done = subprocess.run(self.argv(host, argv), capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {host} exited {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    def start(self, host: str, argv: Sequence[str], *, log: Path | None = None,
              stdin: int | IO[bytes] | None = subprocess.DEVNULL,
              stdout: int | IO[bytes] | None = None,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` in `host`; stderr (and stdout unless piped) to `log`."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                self.argv(host, argv), stdin=stdin,
                stdout=stdout if stdout is not None else out, stderr=out,
                env=None if env is None else dict(env), start_new_session=True,
            )
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.processes.append(proc)
        return proc

    def addresses(self, host: str) -> list[str]:
        """The IPv4 addresses on `host`'s eth0, without prefix lengths."""
        out = self.run(host, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        return [line.split()[3].split("/")[0] for line in out.splitlines()]

    def close(self) -> None:
        """End every process started here, then delete every namespace. Idempotent."""
        stop_all(self.processes)
        self.processes.clear()
        for name in reversed(self.names):
            with contextlib.suppress(RuntimeError):
                ip("netns", "delete", name)
        self.names.clear()

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop_all(procs: Sequence[subprocess.Popen[bytes]], grace: float = 3.0) -> None:
    """SIGTERM every process group at once, SIGKILL what is left after `grace`; reap all."""
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
