"""Network namespaces for tests that need more than loopback: a client, a balancer
and servers on separate hosts, joined by veth links (needs root, `ip` from iproute2).

    with netns.lab() as lab:
        client, balancer = lab.namespace("client"), lab.namespace("balancer")
        lab.link(client, ["10.1.0.2/24"], balancer, ["10.1.0.1/24"])
        balancer.start(["caslb", "run", "caslb.toml"])
        client.run("curl", "-s", "http://10.1.0.1:8001/")

Every namespace of a lab is named after the process and a random token, so
concurrent runs never meet; both ends of a link are created inside their
namespaces, so the host's own interfaces are never touched. Leaving the `with`
block, by any exit, stops the processes started in the lab and deletes its
namespaces (their links go with them).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

STOP_TIMEOUT = 5.0


@dataclass
class Namespace:
    """One network namespace: its name, its role in the lab, and the processes started in it."""

    name: str
    role: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ip(self, *args: str) -> None:
        """Run `ip ARGS` in this namespace (e.g. `ip("route", "add", "default", "via", gw)`)."""
        _check(["ip", "-n", self.name, *args])

    def must(self, *argv: str, stdin: str = "") -> None:
        """Run a set-up command here (`nft -f -` with the rules on `stdin`); raise if it fails."""
        _check(["ip", "netns", "exec", self.name, *argv], stdin)

    def run(self, *argv: str, timeout: float = 10.0) -> subprocess.CompletedProcess[bytes]:
        """Run a command here to its end; its output captured, its exit status not checked."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True,
                              timeout=timeout, check=False)

    def start(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start a long-running command here; the lab stops it when it closes."""
        process = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **popen)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """Terminate this namespace's processes (killed if they outlive STOP_TIMEOUT).

        Pipes the processes were started with are closed too.
        """
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()


class Lab:
    """The namespaces of one test (or module), deleted together by `close`."""

    def __init__(self) -> None:
        self._prefix = f"caslb-{os.getpid()}-{secrets.token_hex(3)}"
        self._namespaces: list[Namespace] = []

    def namespace(self, role: str) -> Namespace:
        """A new namespace for `role` ("client", "balancer", ...), its loopback up.

        IPv6 duplicate address detection is off: it would keep each new address,
        link-local ones included, tentative (unusable) for a second or more.
        """
        made = Namespace(f"{self._prefix}-{role}", role)
        _check(["ip", "netns", "add", made.name])
        self._namespaces.append(made)
        made.must("sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
                  "net.ipv6.conf.default.accept_dad=0")
        made.ip("link", "set", "lo", "up")
        return made

    def link(
        self, a: Namespace, a_addresses: Sequence[str], b: Namespace, b_addresses: Sequence[str]
    ) -> None:
        """A veth pair between `a` and `b`, each end with its addresses ("10.1.0.1/24"), up.

        Each end is named after the namespace at the other end, so a namespace
        may have several links; "v-" and a role make at most 15 characters
        (the kernel's limit on interface names).
        """
        a_end, b_end = f"v-{b.role}", f"v-{a.role}"
        a.ip("link", "add", a_end, "type", "veth", "peer", "name", b_end, "netns", b.name)
        for space, end, addresses in ((a, a_end, a_addresses), (b, b_end, b_addresses)):
            for address in addresses:
                space.ip("address", "add", address, "dev", end)
            space.ip("link", "set", end, "up")

    def close(self) -> None:
        """Stop every process started in the lab, then delete its namespaces."""
        for space in self._namespaces:
            space.stop()
        for space in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "delete", space.name], capture_output=True,
                           check=False)
        self._namespaces.clear()


@contextmanager
def lab() -> Iterator[Lab]:
    """A lab whose namespaces and processes are gone when the block exits, however."""
    made = Lab()
    try:
        yield made
    finally:
        made.close()


def _check(argv: list[str], stdin: str = "") -> None:
    result = subprocess.run(argv, input=stdin.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.decode(errors='replace').strip()}")
