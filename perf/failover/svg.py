"""A timeline plot as hand-written SVG: answers per second by server, failures in red.

No plotting library: a few polylines on a fixed canvas, the fault window shaded
and the moment of detection marked, so a reader sees at a glance when errors
happened and when traffic left and came back to the faulty server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 50, 130, 30, 40
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22")
FAILED_COLOUR = "#d62728"


def nice_ceiling(value: int) -> int:
    for step in (5, 10, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000):
        if value <= step:
            return step
    return value


def polyline(points: Sequence[tuple[float, float]], colour: str, dash: str = "") -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.6"{extra} points="{coords}"/>'


def timeline_svg(
    title: str,
    ok_by_server: Mapping[str, Sequence[int]],
    failed: Sequence[int],
    window: tuple[float, float],
    detection: float | None = None,
) -> str:
    """Render one scenario's timeline.

    Args:
        title: the caption (design and fault).
        ok_by_server: server -> successful answers in each second.
        failed: failed requests in each second.
        window: (fault injected, fault cleared), in seconds since the start.
        detection: when the balancer stopped choosing the server, if it did.

    Returns:
        A standalone SVG document.
    """
    seconds = max([len(failed), *(len(v) for v in ok_by_server.values()), 1])
    peak = nice_ceiling(max([1, *failed, *(max(v, default=0) for v in ok_by_server.values())]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(sec: float) -> float:
        return LEFT + plot_w * sec / seconds

    def y(count: float) -> float:
        return TOP + plot_h * (1 - count / peak)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="13">{escape(title)}</text>',
        f'<rect x="{x(window[0]):.1f}" y="{TOP}" width="{x(window[1]) - x(window[0]):.1f}" '
        f'height="{plot_h}" fill="#f4d9d9" stroke="none"/>',
        f'<text x="{x(window[0]) + 3:.1f}" y="{TOP + 12}" fill="#a33">fault</text>',
    ]
    if detection is not None:
        dx = x(window[0] + detection)
        parts.append(
            f'<line x1="{dx:.1f}" x2="{dx:.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
            f'stroke="#555" stroke-dasharray="3,3"/>'
        )
        parts.append(f'<text x="{dx + 3:.1f}" y="{TOP + 24}" fill="#555">detected</text>')
    parts += _axes(seconds, peak, x, y)
    legend_y = TOP + 10
    for i, (server, counts) in enumerate(sorted(ok_by_server.items())):
        colour = PALETTE[i % len(PALETTE)]
        parts.append(polyline([(x(s + 0.5), y(c)) for s, c in enumerate(counts)], colour))
        parts.append(legend(legend_y, colour, f"{server} ok/s"))
        legend_y += 16
    parts.append(polyline([(x(s + 0.5), y(c)) for s, c in enumerate(failed)], FAILED_COLOUR))
    parts.append(legend(legend_y, FAILED_COLOUR, "failed/s"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def legend(at_y: float, colour: str, label: str) -> str:
    lx = WIDTH - RIGHT + 12
    return (
        f'<line x1="{lx}" x2="{lx + 18}" y1="{at_y}" y2="{at_y}" stroke="{colour}" '
        f'stroke-width="2"/><text x="{lx + 22}" y="{at_y + 4}">{escape(label)}</text>'
    )


def _axes(
    seconds: int, peak: int, x: Callable[[float], float], y: Callable[[float], float]
) -> list[str]:
    base, top = y(0), y(peak)
    out = [
        f'<line x1="{LEFT}" x2="{x(seconds):.1f}" y1="{base:.1f}" y2="{base:.1f}" stroke="#000"/>',
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{top:.1f}" y2="{base:.1f}" stroke="#000"/>',
        f'<text x="{LEFT - 6}" y="{top + 4:.1f}" text-anchor="end">{peak}</text>',
        f'<text x="{LEFT - 6}" y="{base + 4:.1f}" text-anchor="end">0</text>',
        f'<text x="{x(seconds / 2):.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
        "seconds since load started</text>",
    ]
    step = 5 if seconds <= 60 else 10
    for s in range(0, seconds + 1, step):
        out.append(
            f'<text x="{x(s):.1f}" y="{base + 14:.1f}" text-anchor="middle">{s}</text>'
        )
    return out
