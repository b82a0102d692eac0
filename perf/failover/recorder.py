"""Collects what clients saw, stamped on the harness's clock."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

import trio

from perf.failover.model import AuthAttempt, RequestRecord


class Recorder:
    """An append-only log of finished requests, times relative to `origin`."""

    def __init__(self, servers: Iterable[str]) -> None:
        self.origin = trio.current_time()
        self.servers = tuple(s.lower() for s in servers)
        self.records: list[RequestRecord] = []
        self.auth: list[AuthAttempt] = []

    def now(self) -> float:
        """Seconds since the load started."""
        return trio.current_time() - self.origin

    def add(self, protocol: str, started: float, server: str | None, error: str | None) -> None:
        """Log one finished request begun at `started` (from `now()`)."""
        self.records.append(RequestRecord(protocol, started, self.now(), server, error))

    def add_auth(self, attempt: AuthAttempt) -> None:
        """Log one finished request of an authenticating client."""
        self.auth.append(attempt)

    def server_named(self, text: str | None) -> str | None:
        """The farm server a header or banner names, lower case, or None.

        Exchange names itself in X-FEServer ("CAS1") and, in mail banners, as a
        base64 FQDN in brackets; both forms are accepted.
        """
        if not text:
            return None
        lowered = text.lower()
        if lowered in self.servers:
            return lowered
        for blob in re.findall(r"\[([A-Za-z0-9+/=]{4,})\]", text):
            try:
                raw = base64.b64decode(blob, validate=True)
            except (binascii.Error, ValueError):
                continue
            # Exchange encodes the FQDN as UTF-16LE; accept plain ASCII too
            for encoding in ("utf-16-le", "ascii"):
                found = self._find(raw.decode(encoding, "replace").lower())
                if found:
                    return found
        return self._find(lowered)

    def _find(self, text: str) -> str | None:
        for name in self.servers:
            if re.search(rf"\b{re.escape(name)}\b", text):
                return name
        return None
