"""DNS round robin: no balancer, clients hold every server's address.

The clients model Windows: addresses tried in turn, a reset (crash) fails over
at once, a silent host (black hole) costs the client's connect timeout. There
is no health check, so nothing ever stops choosing a server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from perf.failover.connect import Endpoint
from perf.failover.designs.base import HTTP_LOAD, MAIL_LISTENER, Design, always_available
from perf.failover.farm import FarmInfo
from perf.failover.settings import ProbeSettings


@dataclass(frozen=True)
class DnsRunning:
    """Endpoints listing every server; no balancer state."""

    endpoints: Mapping[str, Endpoint]
    notes: tuple[str, ...] = ()

    async def chosen(self, server: str) -> dict[str, bool] | None:
        """Always None: DNS keeps handing out every address."""
        return None


def dns_endpoints(farm: FarmInfo) -> dict[str, Endpoint]:
    """Each protocol's name resolves to every server, in farm order."""
    out = {}
    for protocol in HTTP_LOAD:
        addresses = tuple((s.host, s.ports["https"]) for s in farm.servers)
        out[protocol] = Endpoint(addresses, farm.namespace, tls=True)
    for protocol, listener in MAIL_LISTENER.items():
        addresses = tuple((s.host, s.ports[listener]) for s in farm.servers)
        out[protocol] = Endpoint(addresses, farm.namespace, tls=listener != "smtp")
    return out


@asynccontextmanager
async def _start(farm: FarmInfo, probes: ProbeSettings, workdir: Path) -> AsyncIterator[DnsRunning]:
    yield DnsRunning(dns_endpoints(farm))


DNS_RR = Design(
    name="dns-rr",
    summary="DNS round robin, no balancer: clients fail over themselves",
    start=_start,
    unavailable=always_available,
)
