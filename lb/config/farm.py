"""The `[exchange]` farm as shorthand.py validated it: what expand.py turns into tables.

Its own module so that reading (shorthand.py) and expanding (expand.py) both
depend on it and not on each other.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Not in the catalog (one protocol, two listeners): the Client Frontend connector.
SUBMISSION_PORT = 587
PORT_NAMES = ("https", "imaps", "imap", "pops", "pop", "smtp", "submission")
MAIL_PORT_NAMES = {"imap": "imaps", "pop": "pops", "smtp": "smtp"}  # protocol → port name
# The clear ports whose session upgrades with STARTTLS / STLS (143, 110): protocol → port name.
STARTTLS_PORT_NAMES = {"imap": "imap", "pop": "pop"}


class ExchangeMode(enum.Enum):
    """How the shorthand fronts the https protocols."""

    L7 = "l7"
    L4 = "l4"
    L4_SNI = "l4-sni"


@dataclass(frozen=True)
class FarmServer:
    """One CAS server of the shorthand; ports by port name."""

    name: str
    host: str
    fqdn: str
    weight: int
    ports: Mapping[str, int]


@dataclass(frozen=True)
class Farm:
    """The validated `[exchange]` table."""

    namespace: str
    mode: ExchangeMode
    bind: str
    servers: tuple[FarmServer, ...]
    protocols: tuple[str, ...]
    listen: Mapping[str, int]
    tls: Mapping[str, Any] | None
    verify: bool
    ca_file: str | None
    l4_check: str
    hostnames: Mapping[str, tuple[str, ...]]
    pool_settings: Mapping[str, Any]
    check_settings: Mapping[str, Any]
    # The lab's comparison: other designs of the same farm, each on its own https port.
    compare: Mapping[ExchangeMode, int] = field(default_factory=dict)

    @property
    def modes(self) -> tuple[ExchangeMode, ...]:
        """Every design this farm is fronted by: `mode` first, then `compare`'s."""
        return (self.mode, *self.compare)
