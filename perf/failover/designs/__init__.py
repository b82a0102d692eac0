"""The designs under test, one adapter each, and the registry of their names."""

from __future__ import annotations

from perf.failover.designs.base import Design
from perf.failover.designs.caslb import CASLB_DESIGNS
from perf.failover.designs.dns import DNS_RR
from perf.failover.designs.haproxy import HAPROXY_DESIGNS

DESIGNS: dict[str, Design] = {
    d.name: d for d in (DNS_RR, *CASLB_DESIGNS, *HAPROXY_DESIGNS)
}

__all__ = ["DESIGNS", "Design"]
