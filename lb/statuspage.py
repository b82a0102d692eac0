"""The status document (`GET /status`) and the HTML status page (`GET /`).

Both are pure: `status_document` reads the pools, and what their owners
report beside them (last check results, the probes' health counters,
ejections), once into plain JSON-able data, taking the time as an argument;
`render_html` turns that document into one self-contained page (no scripts,
no external assets) that refreshes itself, like HAProxy's stats page: the
server × pool grid of lb/statusgrid.py first, then a table per pool. The page
is built from the document, never from the pools, so the two can never
disagree.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lb.metrics.collectors import LastCheckLookup, no_check_results, server_state
from lb.pool import Member, Pool
from lb.statusgrid import GRID_STYLE, ago, build_grid, duration, grid_html, member_label
from probes.checks import CheckResult
from probes.state import CheckProgress

REFRESH_SECONDS = 5

Document = dict[str, Any]

ProgressLookup = Callable[[str, str], CheckProgress | None]
"""`(pool, server)` → the health counter of that pool's check on it, None without a probe."""

EjectionLookup = Callable[[str, str], float | None]
"""`(pool, server)` → when its outlier ejection ends (the pools' clock), None if not ejected."""


def no_progress(pool: str, server: str) -> CheckProgress | None:
    """A `ProgressLookup` for a balancer that runs no checks of its own."""
    return None


@dataclass(frozen=True)
class Lookups:
    """Where the document reads what the pools themselves do not hold.

    Attributes:
        ejected_until: None to read ejections from the pools, which own them
            (`Pool.ejections`); a lookup to show another owner's.
    """

    last_check: LastCheckLookup = no_check_results
    progress: ProgressLookup = no_progress
    ejected_until: EjectionLookup | None = None


def status_document(
    pools: Mapping[str, Pool],
    *,
    frontends: Mapping[str, int],
    now: float,
    lookups: Lookups = Lookups(),
) -> Document:
    """Everything an operator asks about the balancer, as JSON-able data.

    Args:
        pools: the live pools by name.
        frontends: current client connections per frontend.
        now: the pools' clock now (trio.current_time()): ages and slow start
            are computed from it, so the same state and `now` give the same document.
        lookups: check results, health counters and ejections, from their owners.

    Returns:
        `{"pools": {name: {"protocol", "panic", "no_server", "active_servers",
        "servers": [...]}}, "frontends": {name: {"current_connections"}}}`.
    """
    return {
        "pools": {
            name: pool_document(pool, now, lookups) for name, pool in sorted(pools.items())
        },
        "frontends": {
            name: {"current_connections": count} for name, count in sorted(frontends.items())
        },
    }


def pool_document(pool: Pool, now: float, lookups: Lookups = Lookups()) -> Document:
    """One pool: its panic flag, whether it refuses all, how many members are eligible, each."""
    servers = [member_document(pool, m, now, lookups) for m in pool.members]
    return {
        "protocol": pool.config.protocol,
        "panic": bool(pool.panicking),
        "no_server": pool.refuses_all,
        "active_servers": sum(1 for s in servers if s["eligible"]),
        "servers": servers,
    }


def member_document(
    pool: Pool, member: Member, now: float, lookups: Lookups = Lookups()
) -> Document:
    """One member of `pool` as the status API shows it."""
    result = lookups.last_check(pool.name, member.name)
    progress = lookups.progress(pool.name, member.name)
    until = (
        pool.ejections.ejection_end(member.name) if lookups.ejected_until is None
        else lookups.ejected_until(pool.name, member.name)
    )
    ejected_for = None if until is None or until <= now else round(until - now, 1)
    weighed = pool.candidate(member, now)
    state = server_state(member)
    label, kind = member_label(
        state, None if progress is None else progress.label,
        eligible=member.eligible, ramp=weighed.ramp, ejected_for=ejected_for,
    )
    return {
        "name": member.name,
        "address": f"{member.host}:{member.port}",
        "fqdn": member.fqdn,
        "weight": member.weight,
        "effective_weight": round(weighed.effective_weight, 2),
        "slowstart": round(weighed.ramp, 3),
        "state": state,
        "label": label,
        "kind": kind,
        "check": member.check_state.name,
        "check_progress": None if progress is None else {
            "health": progress.counter, "rise": progress.rise, "fall": progress.fall,
        },
        "admin": member.admin.name,
        "eligible": bool(member.eligible),
        "active": member.active,
        "total": member.total,
        "seconds_since_change": (
            None if member.last_change is None else round(now - member.last_change, 1)
        ),
        "ejected_for": ejected_for,
        "last_check": None if result is None else check_document(result),
    }


def check_document(result: CheckResult) -> Document:
    """A check result: success, reason, detail and duration in seconds."""
    return {
        "ok": bool(result.ok),
        "reason": result.reason.name,
        "detail": str(result.detail),
        "duration": round(float(result.duration), 6),
    }


_STYLE = """
body{font-family:sans-serif;margin:1em;background:#fafafa}
h1{font-size:1.3em} h2{font-size:1.1em;margin-top:1.2em}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #999;padding:2px 8px;text-align:left}
th{background:#dde}
.panic{color:#b00;font-weight:bold}
"""

_COLUMNS = (
    "server", "address", "state", "check", "admin", "eligible", "active", "total",
    "weight", "effective weight", "last change", "ejected", "last check",
)


def render_html(document: Document) -> str:
    """The status page: the server × pool grid first, then frontends, then one table per pool."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        f"<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">",
        f"<title>caslb status</title><style>{_STYLE}{GRID_STYLE}</style></head><body>",
        "<h1>caslb status</h1>",
        grid_html(build_grid(document)),
        _frontends_html(document.get("frontends", {})),
    ]
    for name, pool in document.get("pools", {}).items():
        parts.append(_pool_html(name, pool))
    parts.append("</body></html>")
    return "".join(parts)


def _frontends_html(frontends: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{_e(fe['current_connections'])}</td></tr>"
        for name, fe in frontends.items()
    )
    return (
        "<h2>Frontends</h2><table><tr><th>frontend</th><th>current connections</th></tr>"
        f"{rows}</table>"
    )


def _pool_html(name: str, pool: Mapping[str, Any]) -> str:
    panic = " <span class=\"panic\">PANIC</span>" if pool["panic"] else ""
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    rows = "".join(_server_row(s) for s in pool["servers"])
    return (
        f"<h2>pool {_e(name)} ({pool['active_servers']}/{len(pool['servers'])} active)"
        f"{panic}</h2><table><tr>{head}</tr>{rows}</table>"
    )


def _server_row(server: Mapping[str, Any]) -> str:
    ejected = server["ejected_for"]
    cells = (
        server["name"], server["address"], server["label"], server["check"], server["admin"],
        "yes" if server["eligible"] else "no", server["active"], server["total"],
        server["weight"], server["effective_weight"], ago(server["seconds_since_change"]),
        "-" if ejected is None else f"for {duration(ejected)}",
        _last_check_text(server["last_check"]),
    )
    tds = "".join(f"<td>{_e(c)}</td>" for c in cells)
    return f"<tr class=\"{_e(server['kind'])}\">{tds}</tr>"


def _last_check_text(check: Mapping[str, Any] | None) -> str:
    if check is None:
        return "-"
    ms = check["duration"] * 1000
    detail = f" {check['detail']}" if check["detail"] else ""
    return f"{check['reason']} in {ms:.1f} ms{detail}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
