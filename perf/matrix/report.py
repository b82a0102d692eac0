"""results.json, results.md and the SVG curves of a matrix run, from its results document."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from perf.matrix.plan import BODIES, IDLE_LAYERS, PROXIES
from perf.matrix.summary import summary
from perf.matrix.svg import write_curves

L7_GROUPS = [(tls, ka) for tls in (False, True) for ka in (True, False)]


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _cpu(row: dict[str, Any]) -> str:
    each = row["cpu_by_process"]
    digits = 1 if row["cpu_per_op"] < 10 else 0
    text = _num(row["cpu_per_op"], digits)
    if len(each) > 1:  # a supervisor and its workers, nginx's master and worker
        text += " (" + " + ".join(_num(c, digits) for c in each) + ")"
    return text


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _order(rows: Iterable[dict[str, Any]], proxies: tuple[str, ...]) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[int, int, int]:
        return (list(BODIES).index(r["body"]) if "body" in r else 0,
                r.get("connections", r.get("streams", 0)), proxies.index(r["proxy"]))

    return sorted(rows, key=key)


def _loads(document: dict[str, Any]) -> str:
    loads = [r["load"] for part in ("l7", "l4", "idle") for r in document.get(part, [])]
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–"


def _head(document: dict[str, Any]) -> list[str]:
    # "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://…" and the like, first words only
    versions = ", ".join(v.split(" - ")[0].split(" Copyright")[0].split(" (")[0]
                         for v in document.get("versions", {}).values())
    pins = document.get("pinning", {})
    return [
        f"## Benchmark matrix{' (--quick)' if document.get('quick') else ''}", "",
        f"Run of {document.get('started')} at commit {document.get('commit')}, "
        f"{document.get('seconds')} s per row, {document.get('cpus')} CPUs, 1-minute load "
        f"average {_loads(document)} over the rows. Each proxy pinned to CPU "
        f"{pins.get('proxy')}, wrk, iperf3 and the nginx origin to CPU "
        f"{pins.get('clients and origin')}, caslb --workers 2 (caslb-2w) to CPUs "
        f"{pins.get('caslb-2w')}. {versions}.", "",
        "CPU is user + system time of every process of the proxy, read from /proc over the "
        "row, per request (L7) or per GB carried (L4); with more than one process, each "
        "one's share follows, parent first. \"vs HAProxy\" is the throughput over HAProxy's "
        "in the same row of the same run. Load is the 1-minute load average at the row's end.",
    ]


def _l7(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for tls, ka in L7_GROUPS:
        group = [r for r in rows if r["tls"] == tls and r["keepalive"] == ka]
        if not group:
            continue
        out += ["", f"### L7 {'TLS-terminated' if tls else 'plain'}, "
                f"{'keep-alive' if ka else 'new connection per request (Connection: close)'}",
                "", "| body | conns | proxy | req/s | p50 ms | p99 ms | max ms | CPU µs/req "
                "| vs HAProxy | errors | load |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in _order(group, PROXIES):
            out.append(
                f"| {r['body']} | {r['connections']} | {r['proxy']} | {_num(r['throughput'])} "
                f"| {_num(r['p50_ms'], 2)} | {_num(r['p99_ms'], 2)} "
                f"| {_num(r.get('max_ms'), 1)} | {_cpu(r)} "
                f"| {_ratio(r['ratio'])} | {r['errors']} | {r['load']:.1f} |")
    return out


def _l4(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = ["", "### L4 bulk (iperf3 through a tcp relay)", "",
           "| streams | proxy | Gbit/s | CPU ms/GB | vs HAProxy | load |",
           "|---|---|---|---|---|---|"]
    for r in _order(rows, PROXIES):
        out.append(f"| {r['streams']} | {r['proxy']} | {_num(r['throughput'], 2)} | {_cpu(r)} "
                   f"| {_ratio(r['ratio'])} | {r['load']:.1f} |")
    return out


def _idle(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    base = {(r["layer"], p["connections"]): p["kib_per_connection"]
            for r in rows if r["proxy"] == "haproxy" for p in r["points"]}
    out = ["", "### Idle memory (connections kept alive after one 100 B answer)", "",
           "| layer | proxy | connections | RSS MiB | KiB per connection | vs HAProxy |",
           "|---|---|---|---|---|---|"]
    points = sorted(((r, p) for r in rows for p in r["points"]), key=lambda rp: (
        IDLE_LAYERS.index(rp[0]["layer"]), rp[1]["connections"], PROXIES.index(rp[0]["proxy"])))
    for r, p in points:
        theirs = base.get((r["layer"], p["connections"]))
        ratio = f"{p['kib_per_connection'] / theirs:.1f}×" if theirs else "–"
        out.append(f"| {r['layer']} | {r['proxy']} | {p['connections']:,} "
                   f"| {p['rss_kib'] / 1024:.1f} | {p['kib_per_connection']:.2f} | {ratio} |")
    return out


def markdown(document: dict[str, Any], svgs: list[str]) -> str:
    """The tables of results.md, then the curves and the rows that failed."""
    lines = [*_head(document), "", "### Summary", "", summary(document)]
    lines += _l7(document["l7"]) + _l4(document["l4"]) + _idle(document["idle"])
    if svgs:
        lines += ["", "### Scaling curves", ""] + [f"![{s}]({s})" for s in svgs]
    failed = document.get("failed") or {}
    if failed:
        lines += ["", "### Rows that failed", ""] + [f"- `{k}`: {v}" for k, v in failed.items()]
    return "\n".join(lines) + "\n"


def write_run(out: Path, document: dict[str, Any]) -> None:
    """results.json, one SVG per body/TLS/keep-alive curve, results.md citing them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    svgs = write_curves(out, document["l7"])
    (out / "results.md").write_text(markdown(document, svgs))
