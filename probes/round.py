"""One round of probes: every server × every protocol, once, concurrently.

This is the core of ``caslb probe``: the CLI says which servers and which
protocols; :func:`probe_round` runs each check once and returns one row per
(server, protocol) in a stable order, for a table. :func:`run_checks` is the
engine under it, for callers (a config file's pools) that already hold
(target, spec) pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import trio

from probes.catalog import PROTOCOLS, protocol
from probes.checks import CheckResult, CheckSpec, Target, run_check
from probes.runner import Check
from probes.state import CheckState

__all__ = ["ProbeHost", "ProbeRow", "probe_round", "run_checks"]

HTTPS = "https"  # the port key shared by every HTTP protocol


@dataclass(frozen=True)
class ProbeHost:
    """A server to probe: its name, the address to dial, and ports that differ from the catalog.

    Attributes:
        fqdn: the server's FQDN (Host header, SNI, expected healthcheck body).
        host: the address to dial.
        ports: port by protocol name, or ``"https"`` for every HTTP protocol.
    """

    fqdn: str
    host: str
    ports: Mapping[str, int] = field(default_factory=dict)

    def port(self, name: str, *, starttls: bool = False) -> int:
        """The port to dial for a protocol: given for it, for https, or the catalog's."""
        proto = protocol(name)
        if proto.name in self.ports:
            return self.ports[proto.name]
        if proto.vdir is not None and HTTPS in self.ports:
            return self.ports[HTTPS]
        if starttls and proto.starttls_port is not None:
            return proto.starttls_port
        return proto.port

    def target(self, name: str, *, starttls: bool = False) -> Target:
        """The Target for one protocol on this server."""
        return Target(self.fqdn, self.host, self.port(name, starttls=starttls))


@dataclass(frozen=True)
class ProbeRow:
    """One server × protocol verdict."""

    server: str
    protocol: str
    target: Target
    result: CheckResult

    @property
    def state(self) -> CheckState:
        """UP when the check passed."""
        return CheckState.UP if self.result.ok else CheckState.DOWN


async def probe_round(
    targets: Sequence[ProbeHost],
    specs: Mapping[str, CheckSpec],
    *,
    max_concurrent: int = 16,
    check: Check = run_check,
) -> list[ProbeRow]:
    """Run every spec against every host once.

    Args:
        targets: the servers, in the order rows should come.
        specs: check spec by protocol name (keys from the catalog), in row order.
        max_concurrent: most checks in flight at once.
        check: the check coroutine (tests may inject one).

    Returns:
        One row per (host, protocol), hosts outer, protocols inner.

    Raises:
        KeyError: a protocol name is not in the catalog.
        ValueError: a spec's CA file cannot be loaded.
    """
    unknown = [name for name in specs if name.lower() not in PROTOCOLS]
    if unknown:
        protocol(unknown[0])  # raises the catalog's KeyError naming the known ones
    jobs = [
        (host, name, host.target(name, starttls=spec.starttls), spec)
        for host in targets
        for name, spec in specs.items()
    ]
    results = await run_checks(
        [(target, spec) for _, _, target, spec in jobs],
        max_concurrent=max_concurrent,
        check=check,
    )
    return [
        ProbeRow(host.fqdn, protocol(name).name, target, result)
        for (host, name, target, _), result in zip(jobs, results, strict=True)
    ]


async def run_checks(
    jobs: Sequence[tuple[Target, CheckSpec]],
    *,
    max_concurrent: int = 16,
    check: Check = run_check,
) -> list[CheckResult]:
    """Run each (target, spec) check once, concurrently; results in job order.

    Raises:
        ValueError: a spec's CA file cannot be loaded (before any check runs).
    """
    for spec in dict.fromkeys(spec for _, spec in jobs):
        spec.tls_context()
    results: list[CheckResult | None] = [None] * len(jobs)
    limiter = trio.CapacityLimiter(max_concurrent)

    async def one(i: int, target: Target, spec: CheckSpec) -> None:
        async with limiter:
            results[i] = await check(spec, target)

    async with trio.open_nursery() as nursery:
        for i, (target, spec) in enumerate(jobs):
            nursery.start_soon(one, i, target, spec)
    done = [r for r in results if r is not None]
    assert len(done) == len(jobs)  # every task stored its result or raised
    return done
