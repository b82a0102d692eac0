"""caslb designs (filled in as `caslb run` lands)."""

from __future__ import annotations

from perf.failover.designs.base import Design

CASLB_DESIGNS: tuple[Design, ...] = ()
