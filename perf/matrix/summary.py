"""The headline table of a matrix run: one line per figure the targets of issue 12 name.

README.md's performance table is this table from the committed sample run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from perf.matrix.plan import DIRECT_ROW_KEY, PROXIES

Row = dict[str, Any]
# (what, the key of the row with {proxy} in it, the figure shown)
L7_LINES: list[tuple[str, str, Callable[[Row], str]]] = [
    ("L7 100 B keep-alive, 64 connections: req/s", "l7 {} c64 100B plain ka",
     lambda r: f"{r['throughput']:,.0f}"),
    ("… CPU per request, µs", "l7 {} c64 100B plain ka", lambda r: f"{r['cpu_per_op']:.0f}"),
    ("… p50 / p99, ms", "l7 {} c64 100B plain ka",
     lambda r: f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"),
    ("L7 100 B keep-alive, 256 connections: p50 / p99, ms", "l7 {} c256 100B plain ka",
     lambda r: f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"),
    ("L7 100 B at 1 connection: p50, ms", "l7 {} c1 100B plain ka",
     lambda r: f"{r['p50_ms']:.3f}"),
    ("L7 TLS-terminated 100 B keep-alive, 64 conns: CPU µs/req", "l7 {} c64 100B tls ka",
     lambda r: f"{r['cpu_per_op']:.0f}"),
    ("L7 TLS, a new connection per request, 64 conns: CPU µs/req", "l7 {} c64 100B tls close",
     lambda r: f"{r['cpu_per_op']:.0f}"),
    ("L7 plain, a new connection per request, 64 conns: CPU µs/req",
     "l7 {} c64 100B plain close", lambda r: f"{r['cpu_per_op']:.0f}"),
    ("L7 1 MiB bodies keep-alive, 16 conns: CPU ms per MiB", "l7 {} c16 1MiB plain ka",
     lambda r: f"{r['cpu_per_op'] / 1000:.2f}"),
    ("L4 bulk 1 stream (iperf3): Gbit/s, CPU ms/GB", "l4 {} P1",
     lambda r: f"{r['throughput']:.1f}, {r['cpu_per_op']:.0f}"),
    ("L4 bulk 8 streams: Gbit/s, CPU ms/GB", "l4 {} P8",
     lambda r: f"{r['throughput']:.1f}, {r['cpu_per_op']:.0f}"),
]
IDLE_LINES = [("l4", "L4"), ("l7", "L7 keep-alive, plain"), ("l7-tls", "L7 keep-alive, TLS")]


def _idle_line(document: dict[str, Any], layer: str, label: str,
               proxies: list[str]) -> list[str] | None:
    found = {r["proxy"]: r["points"][-1] for r in document["idle"] if r["layer"] == layer}
    if not found:
        return None
    count = max(p["connections"] for p in found.values())
    cells = [f"{found[p]['kib_per_connection']:.1f}" if p in found else "–" for p in proxies]
    return [f"memory per idle connection, {label}, at {count:,}: KiB", *cells]


def _added_line(rows: dict[str, Row], proxies: list[str]) -> str:
    """The p50 each proxy adds at 1 connection over wrk straight at the origin."""
    direct = rows[DIRECT_ROW_KEY]["p50_ms"]
    cells = []
    for p in proxies:
        row = rows.get(DIRECT_ROW_KEY.replace("direct", p))
        cells.append("–" if row is None or p == "direct" else f"{row['p50_ms'] - direct:.3f}")
    return "| … added p50 at 1 connection (over direct), ms | " + " | ".join(cells) + " |"


def summary(document: dict[str, Any]) -> str:
    """A Markdown table: a figure per line, a proxy per column; rows the run lacks left out."""
    rows = {r["key"]: r for r in (*document["l7"], *document["l4"])}
    proxies = [p for p in PROXIES
               if any(r["proxy"] == p for r in rows.values())]
    lines = ["| measure | " + " | ".join(proxies) + " |", "|---" * (len(proxies) + 1) + "|"]
    for what, key, show in L7_LINES:
        cells = [show(rows[key.format(p)]) if key.format(p) in rows else "–" for p in proxies]
        if any(c != "–" for c in cells):
            lines.append(f"| {what} | " + " | ".join(cells) + " |")
        if key == DIRECT_ROW_KEY.replace("direct", "{}") and DIRECT_ROW_KEY in rows:
            lines.append(_added_line(rows, proxies))
    for layer, label in IDLE_LINES:
        line = _idle_line(document, layer, label, proxies)
        if line:
            lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)
