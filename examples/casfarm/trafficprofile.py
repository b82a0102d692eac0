"""Timing and sizes of casfarm's long-lived and bulky answers, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrafficProfile:
    """Timing and sizes of the long-lived and bulky answers.

    Attributes:
        heartbeat: seconds an ActiveSync Ping (and a MAPI NotificationWait) is held.
        pending_period: seconds between MAPI `PENDING` keep-alives (X-PendingPeriod).
        oab_size: bytes of an OAB `.lzx` download.
        rpc_out_interval: seconds between RTS PDUs on an RPC_OUT_DATA channel.
        ews_keepalive: seconds between keep-alives on a quiet EWS event stream.
    """

    heartbeat: float = 30.0
    pending_period: float = 5.0
    oab_size: int = 4 << 20
    rpc_out_interval: float = 1.0
    ews_keepalive: float = 40.0

    def __post_init__(self) -> None:
        for name in ("heartbeat", "pending_period", "rpc_out_interval", "ews_keepalive"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.oab_size < 0:
            raise ValueError(f"oab_size must be >= 0, got {self.oab_size!r}")
