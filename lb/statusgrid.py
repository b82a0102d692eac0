"""The server × pool grid of the status page and of `caslb status`, and each cell's label.

The grid answers "which protocols is cas1 out of?" at a glance: one row per
server, one column per pool, each cell the server's state in that pool as
HAProxy's stats page would name it (UP, UP 1/2, DOWN, DOWN 1/2, DRAIN,
MAINT), with the slow-start share while a server ramps up. A pool that would
refuse every connection has its column header marked NO SERVER.

Everything here is pure and reads only plain values: `member_label` is how
`lb.statuspage` labels a member in the `/status` document, and `build_grid`
turns that document (as served, or as decoded from JSON by the CLI) into a
`Grid`, which `grid_html` and `grid_table` (for the CLI) render. The page and the CLI thus
show one grid, made in one place.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KINDS: tuple[str, ...] = (
    "up", "slowstart", "going-down", "coming-up", "down", "ejected", "drain", "maint",
)
"""Every value of a member's `kind` in the document: what colours its cell."""

LEGEND: tuple[tuple[str, str], ...] = (
    ("up", "UP: in service"),
    ("slowstart", "UP 40%: slow start, at 40% of its weight"),
    ("going-down", "UP 1/2: failing, 1 check left of fall 2 before DOWN"),
    ("coming-up", "DOWN 1/2: passing, 1 of rise 2 passes counted"),
    ("down", "DOWN: failed its checks"),
    ("ejected", "EJECTED: outlier detection has it out"),
    ("drain", "DRAIN: no new traffic (operator)"),
    ("maint", "MAINT: out of service (operator)"),
)

NOT_IN_POOL = "-"

_IN_TRANSITION = {"UP": "going-down", "DOWN": "coming-up"}


def member_label(
    state: str, check_label: str | None, *, eligible: bool, ramp: float,
    ejected_for: float | None = None,
) -> tuple[str, str]:
    """A member's grid label and kind (one of `KINDS`).

    Args:
        state: UP, DOWN, DRAIN or MAINT (admin state wins over health).
        check_label: the probe's own label ("UP 1/2", see
            `probes.state.CheckProgress.label`), None without a probe.
        eligible: whether it may take new traffic.
        ramp: its slow-start factor, 1 when not ramping.
        ejected_for: seconds left of an outlier ejection, None if not ejected.
    """
    if state in ("DRAIN", "MAINT"):
        return state, state.lower()
    text = check_label or state
    if state == "UP" and ejected_for is not None:
        return f"EJECTED {duration(ejected_for)}", "ejected"
    # A label that is more than its state ("UP 1/2") is a transition in progress.
    kind = state.lower() if text == state else _IN_TRANSITION[state]
    if eligible and ramp < 1:
        text = f"{text} {math.floor(ramp * 100)}%"
        kind = "slowstart" if kind == "up" else kind
    return text, kind


def duration(seconds: float) -> str:
    """A short, coarse duration: 42s, 3m05s, 2h05m, 3d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def ago(seconds: float | None) -> str:
    """`duration` + " ago", or "-" for a state unchanged since the start."""
    return "-" if seconds is None else f"{duration(seconds)} ago"


@dataclass(frozen=True)
class Column:
    """One pool: its name, and why its header is marked ("NO SERVER", "PANIC" or "")."""

    pool: str
    note: str = ""


@dataclass(frozen=True)
class Cell:
    """One server in one pool: the label shown and the kind that colours it."""

    label: str
    kind: str


@dataclass(frozen=True)
class Grid:
    """Servers × pools; a cell is None where the pool does not have the server."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[str, tuple[Cell | None, ...]], ...]


def build_grid(document: Mapping[str, Any]) -> Grid:
    """The grid of a `/status` document; servers in the order the pools first list them."""
    pools: Mapping[str, Any] = document.get("pools", {})
    columns = tuple(Column(name, _note(pool)) for name, pool in pools.items())
    cells: dict[str, dict[str, Cell]] = {}
    for name, pool in pools.items():
        for server in pool.get("servers", []):
            cells.setdefault(str(server["name"]), {})[name] = Cell(
                str(server["label"]), str(server["kind"])
            )
    rows = tuple(
        (server, tuple(by_pool.get(c.pool) for c in columns)) for server, by_pool in cells.items()
    )
    return Grid(columns, rows)


def _note(pool: Mapping[str, Any]) -> str:
    if pool.get("no_server"):
        return "NO SERVER"
    return "PANIC" if pool.get("panic") else ""


GRID_STYLE = """
table.grid{font-size:1.05em;margin-bottom:.6em}
table.grid th,table.grid td{padding:6px 14px;text-align:center;min-width:6em}
table.grid th.server,table.grid td.server{text-align:left;background:#eee}
table.grid th.pool{background:#334;color:#fff}
table.grid th.pool.NO-SERVER{background:#c00;color:#fff}
table.grid th.pool.PANIC{background:#e60;color:#fff}
table.grid th small{display:block;font-size:.8em;letter-spacing:.05em}
table.grid td{font-weight:bold}
.up{background:#8fdc8f} .slowstart{background:#d4f5a0} .going-down{background:#ffe066}
.coming-up{background:#ffb366} .down{background:#f08080} .ejected{background:#ff9ec4}
.drain{background:#8fb8ff} .maint{background:#b99be0} td.absent{background:#f4f4f4;color:#999}
ul.legend{list-style:none;padding:0;margin:0 0 1em 0;font-size:.85em}
ul.legend li{display:inline-block;margin:2px 8px 2px 0;padding:1px 6px;border:1px solid #999}
"""


def grid_html(grid: Grid) -> str:
    """The grid as an HTML table with its legend (classes styled by `GRID_STYLE`)."""
    heads = "".join(
        f"<th class=\"pool {c.note.replace(' ', '-')}\">{_e(c.pool)}"
        + (f"<small>{_e(c.note)}</small>" if c.note else "") + "</th>"
        for c in grid.columns
    )
    rows = "".join(
        f"<tr><td class=\"server\">{_e(server)}</td>"
        + "".join(_cell_html(cell) for cell in cells) + "</tr>"
        for server, cells in grid.rows
    )
    legend = "".join(f"<li class=\"{kind}\">{_e(text)}</li>" for kind, text in LEGEND)
    return (
        f"<table class=\"grid\"><tr><th class=\"server\">server</th>{heads}</tr>{rows}</table>"
        f"<ul class=\"legend\">{legend}</ul>"
    )


def _cell_html(cell: Cell | None) -> str:
    if cell is None:
        return f"<td class=\"absent\">{NOT_IN_POOL}</td>"
    return f"<td class=\"{_e(cell.kind)}\">{_e(cell.label)}</td>"


def grid_table(grid: Grid) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The grid as text rows for a fixed-width table: the header, then a row of
    notes if any pool has one, then one row per server."""
    header = ("server", *(c.pool for c in grid.columns))
    rows: list[tuple[str, ...]] = []
    if any(c.note for c in grid.columns):
        rows.append(("", *(c.note for c in grid.columns)))
    rows.extend(
        (server, *(NOT_IN_POOL if cell is None else cell.label for cell in cells))
        for server, cells in grid.rows
    )
    return header, rows


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
