"""What a scenario cost the clients that log on with NTLM. Pure: no I/O, no clock.

Definitions (counted from the fault's injection to the end of the run):

- failed: requests that ended in an error, or refused even after a new logon.
- reauths: NTLM handshakes after the fault. An Outlook-style client logs on
  once per connection, so each is a connection lost (a new one needs a logon)
  or moved (the server it now reaches does not know it: a 401, then a logon).
- refused: 401s the clients saw, challenges of their handshakes apart.
- outage: per client, from the start of a request that failed to the end of
  its next served one (or the end of the load); `outage_total` sums the
  clients', `outage_max` is the longest one client had.
- baseline_logons: handshakes before the fault, one per client when nothing
  moved or broke them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

from perf.failover.model import AuthAttempt, ScenarioRecord


@dataclass(frozen=True)
class AuthCost:
    """The authenticated clients' cost in one (design, fault)."""

    design: str
    fault: str
    clients: int
    requests: int
    failed: int
    reauths: int
    refused: int
    outage_total: float
    outage_max: float
    baseline_logons: int


def _outages(attempts: Sequence[AuthAttempt], since: float, end: float) -> list[float]:
    """Each stretch one client spent without service, after `since`."""
    out, began = [], None
    for a in attempts:
        if a.finished < since:
            continue
        if not a.served and began is None:
            began = a.started
        elif a.served and began is not None:
            out.append(a.finished - began)
            began = None
    if began is not None:
        out.append(end - began)
    return out


def auth_cost(record: ScenarioRecord) -> AuthCost | None:
    """The cost figures of one scenario; None when no client logged on."""
    if not record.auth:
        return None
    t = record.timeline
    after = [a for a in record.auth if a.finished >= t.fault_at]
    outages: list[float] = []
    for _, mine in groupby(record.auth, key=lambda a: a.client):
        outages += _outages(sorted(mine, key=lambda a: a.started), t.fault_at, t.end_at)
    return AuthCost(
        design=record.design,
        fault=record.fault,
        clients=len({a.client for a in record.auth}),
        requests=len(record.auth),
        failed=sum(1 for a in after if not a.served),
        reauths=sum(a.logons for a in after),
        refused=sum(a.refused for a in after),
        outage_total=round(sum(outages), 3),
        outage_max=round(max(outages, default=0.0), 3),
        baseline_logons=sum(a.logons for a in record.auth if a.finished < t.fault_at),
    )


AUTH_HEAD = (
    "| design | fault | NTLM clients | requests | failed | re-authentications | 401s seen "
    "| time without service s (all clients / longest) | logons before the fault |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def auth_rows(records: Iterable[ScenarioRecord]) -> list[str]:
    """Markdown rows of the authenticated clients' cost, one per scenario that had them."""
    rows = []
    for record in records:
        cost = auth_cost(record)
        if cost is None:
            continue
        rows.append(
            f"| {cost.design} | {cost.fault} | {cost.clients} | {cost.requests} | {cost.failed} "
            f"| {cost.reauths} | {cost.refused} | {cost.outage_total:.2f} / "
            f"{cost.outage_max:.2f} | {cost.baseline_logons} |"
        )
    return rows
