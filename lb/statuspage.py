"""The status document (`GET /status`) and the HTML status page (`GET /`).

Both are pure: `status_document` reads the pools once into plain JSON-able
data, and `render_html` turns that document into one self-contained page (no
scripts, no external assets) that refreshes itself, like HAProxy's stats page.
The page is built from the document, never from the pools, so the two can
never disagree.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from lb.metrics.collectors import LastCheckLookup, server_state
from lb.pool import Member, Pool
from probes.checks import CheckResult

REFRESH_SECONDS = 5

Document = dict[str, Any]


def status_document(
    pools: Mapping[str, Pool],
    *,
    frontends: Mapping[str, int],
    last_check: LastCheckLookup | None = None,
) -> Document:
    """Everything an operator asks about the balancer, as JSON-able data.

    Args:
        pools: the live pools by name.
        frontends: current client connections per frontend.
        last_check: `(pool, server)` → last check result, or None when unknown.

    Returns:
        `{"pools": {name: {"panic", "active_servers", "servers": [...]}},
        "frontends": {name: {"current_connections"}}}`.
    """
    return {
        "pools": {
            name: pool_document(pool, last_check) for name, pool in sorted(pools.items())
        },
        "frontends": {
            name: {"current_connections": count} for name, count in sorted(frontends.items())
        },
    }


def pool_document(pool: Pool, last_check: LastCheckLookup | None = None) -> Document:
    """One pool: its panic flag, how many members are eligible, and each member."""
    servers = [member_document(pool.name, m, last_check) for m in pool.members]
    return {
        "panic": bool(pool.panicking),
        "active_servers": sum(1 for s in servers if s["eligible"]),
        "servers": servers,
    }


def member_document(
    pool: str, member: Member, last_check: LastCheckLookup | None = None
) -> Document:
    """One member of `pool` as the status API shows it."""
    result = last_check(pool, member.name) if last_check else None
    return {
        "name": member.name,
        "address": f"{member.host}:{member.port}",
        "fqdn": member.fqdn,
        "weight": member.weight,
        "state": server_state(member),
        "check": member.check_state.name,
        "admin": member.admin.name,
        "eligible": bool(member.eligible),
        "active": member.active,
        "total": member.total,
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
tr.UP{background:#c0f0c0} tr.DOWN{background:#f4b0b0}
tr.DRAIN{background:#b0d0ff} tr.MAINT{background:#c8a8e8}
.panic{color:#b00;font-weight:bold}
"""

_COLUMNS = (
    "server", "address", "state", "check", "admin", "eligible",
    "active", "total", "weight", "last check",
)


def render_html(document: Document) -> str:
    """A small HTML page of the status document: one table per pool, coloured by state."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        f"<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">",
        f"<title>caslb status</title><style>{_STYLE}</style></head><body>",
        "<h1>caslb status</h1>",
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
    cells = (
        server["name"], server["address"], server["state"], server["check"], server["admin"],
        "yes" if server["eligible"] else "no", server["active"], server["total"],
        server["weight"], _last_check_text(server["last_check"]),
    )
    tds = "".join(f"<td>{_e(c)}</td>" for c in cells)
    return f"<tr class=\"{_e(server['state'])}\">{tds}</tr>"


def _last_check_text(check: Mapping[str, Any] | None) -> str:
    if check is None:
        return "-"
    ms = check["duration"] * 1000
    detail = f" {check['detail']}" if check["detail"] else ""
    return f"{check['reason']} in {ms:.1f} ms{detail}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
