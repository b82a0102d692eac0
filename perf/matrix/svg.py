"""Scaling curves as hand-written SVG: requests/s and p99 against connections, a line per proxy.

One file per body size, TLS or plain, keep-alive or not. Both panels use a log
scale: HAProxy and mitmproxy differ by two orders of magnitude, and a linear
axis would flatten every proxy but the fastest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from perf.failover.svg import LEFT, PALETTE, RIGHT, WIDTH, legend, polyline
from perf.matrix.plan import BODIES, PROXIES

PANEL, GAP, TOP = 220, 60, 40
HEIGHT = TOP + 2 * PANEL + GAP + 40


def _decades(values: Sequence[float]) -> tuple[int, int]:
    low = math.floor(math.log10(min(values)))
    high = math.ceil(math.log10(max(values)))
    return low, max(high, low + 1)


def _panel(
    top: float, label: str, xs: Sequence[int], series: dict[str, list[float | None]],
) -> list[str]:
    values = [v for vs in series.values() for v in vs if v is not None and v > 0]
    if not values:
        return []
    low, high = _decades(values)
    plot_w = WIDTH - LEFT - RIGHT

    def x(i: int) -> float:
        return LEFT + plot_w * (i + 0.5) / len(xs)

    def y(v: float) -> float:
        return top + PANEL * (1 - (math.log10(v) - low) / (high - low))

    out = [f'<text x="{LEFT}" y="{top - 8}" font-size="12">{escape(label)}</text>',
           f'<line x1="{LEFT}" x2="{LEFT}" y1="{top}" y2="{top + PANEL}" stroke="#000"/>',
           f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{top + PANEL}" y2="{top + PANEL}" '
           'stroke="#000"/>']
    for d in range(low, high + 1):
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(10**d):.1f}" '
                   f'y2="{y(10**d):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(10**d) + 4:.1f}" text-anchor="end">'
                   f'{_tick(10.0**d)}</text>')
    for i, c in enumerate(xs):
        out.append(f'<text x="{x(i):.1f}" y="{top + PANEL + 14}" text-anchor="middle">{c}</text>')
    out += _lines(series, x, y)
    return out


def _lines(series: dict[str, list[float | None]], x: Callable[[int], float],
           y: Callable[[float], float]) -> list[str]:
    out = []
    for proxy, vs in series.items():
        colour = _colour(proxy)
        points = [(x(i), y(v)) for i, v in enumerate(vs) if v is not None and v > 0]
        out.append(polyline(points, colour))
        out += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>'
                for px, py in points]
    return out


def _colour(proxy: str) -> str:
    # the same colour for a proxy in every plot
    return PALETTE[PROXIES.index(proxy) % len(PALETTE)]


def _tick(v: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def curve_svg(title: str, rows: list[dict[str, Any]]) -> str:
    """Requests/s (top) and p99 ms (bottom) against connections for the rows of one curve."""
    xs = sorted({r["connections"] for r in rows})
    proxies = [p for p in PROXIES if any(r["proxy"] == p for r in rows)]
    by = {(r["proxy"], r["connections"]): r for r in rows}

    def series(field: str) -> dict[str, list[float | None]]:
        return {p: [by[(p, c)][field] if (p, c) in by else None for c in xs] for p in proxies}

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{LEFT}" y="18" font-size="13">{escape(title)}</text>']
    parts += _panel(TOP, "requests/s (log scale)", xs, series("throughput"))
    parts += _panel(TOP + PANEL + GAP, "p99 latency, ms (log scale)", xs, series("p99_ms"))
    parts.append(f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2:.1f}" y="{HEIGHT - 8}" '
                 'text-anchor="middle">concurrent connections (wrk)</text>')
    for n, p in enumerate(proxies):
        parts.append(legend(TOP + 10 + 16 * n, _colour(p), p))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_curves(out: Path, rows: list[dict[str, Any]]) -> list[str]:
    """One SVG per body, TLS, keep-alive that has rows; the file names, in table order."""
    names = []
    for tls in (False, True):
        for ka in (True, False):
            for body in BODIES:
                group = [r for r in rows
                         if r["body"] == body and r["tls"] == tls and r["keepalive"] == ka]
                if not group:
                    continue
                mode = f"{'tls' if tls else 'plain'}-{'keepalive' if ka else 'close'}"
                name = f"l7-{body}-{mode}.svg"
                title = (f"L7 {body} bodies, {'TLS' if tls else 'plain'}, "
                         f"{'keep-alive' if ka else 'Connection: close'}")
                (out / name).write_text(curve_svg(title, group))
                names.append(name)
    return names
