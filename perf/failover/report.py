"""Write a run's results: JSON with every raw figure, Markdown tables, SVG timelines."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perf.failover.authcost import AUTH_HEAD, auth_cost, auth_rows
from perf.failover.measures import ProtocolFigures, ScenarioFigures, per_second, scenario_figures
from perf.failover.model import (
    KEPT_ALIVE,
    NEW_CONNECTIONS,
    AuthAttempt,
    ChoiceSample,
    RequestRecord,
    ScenarioRecord,
    Timeline,
)
from perf.failover.svg import timeline_svg


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def record_json(record: ScenarioRecord) -> dict[str, Any]:
    """Every raw figure of one scenario, requests as compact rows."""
    return {
        "design": record.design,
        "fault": record.fault,
        "faulty": record.faulty,
        "servers": list(record.servers),
        "timeline": dataclasses.asdict(record.timeline),
        "notes": list(record.notes),
        "farm_counts": {k: dict(v) for k, v in record.farm_counts.items()},
        "request_columns": ["protocol", "started", "finished", "server", "error"],
        "requests": [
            [r.protocol, round(r.started, 4), round(r.finished, 4), r.server, r.error]
            for r in record.requests
        ],
        "samples": [{"at": round(s.at, 4), "chosen": dict(s.chosen)} for s in record.samples],
        "auth_columns": list(AUTH_COLUMNS),
        "auth": [
            [a.client, round(a.started, 4), round(a.finished, 4), a.served, a.logons, a.refused]
            for a in record.auth
        ],
    }


AUTH_COLUMNS = ("client", "started", "finished", "served", "logons", "refused")


def figures_json(figures: ScenarioFigures) -> dict[str, Any]:
    """The computed measures of one scenario."""
    return {
        "errors": figures.errors,
        "detection": figures.detection,
        "faulty_farm_requests": figures.faulty_farm_requests,
        "protocols": {p.protocol: dataclasses.asdict(p) for p in figures.protocols},
    }


def _affected(figures: ScenarioFigures) -> list[ProtocolFigures]:
    return [p for p in figures.protocols if p.detection is not None]


def summary_row(figures: ScenarioFigures) -> str:
    """One Markdown row: a design's result for one fault, over every protocol."""
    protos = figures.protocols
    detected = _affected(figures)
    if not figures.sampled:
        detection = "n/a (no balancer)"
    elif detected:
        slowest = max(detected, key=lambda p: p.detection or 0.0)
        detection = f"{_fmt(figures.detection)} – {_fmt(slowest.detection)} ({len(detected)})"
    else:
        detection = "never"
    failover = max((p.failover for p in protos), default=0.0)
    recov = [p.recovery_detect for p in protos if p.recovery_detect is not None]
    faulty_share = _faulty_share(figures)
    return (
        f"| {figures.design} | {detection} | {failover:.2f} | {figures.errors} "
        f"| {sum(p.faulty_responses for p in protos)} "
        f"| {sum(p.faulty_after_detection for p in protos)} "
        f"| {_fmt(max(recov)) if recov else '–'} | {faulty_share} |"
    )


def _faulty_share(figures: ScenarioFigures) -> str:
    total = sum(sum(p.spread.values()) for p in figures.protocols)
    if not total:
        return "–"
    mine = sum(p.spread.get(figures.faulty, 0) for p in figures.protocols)
    return f"{100 * mine / total:.0f}%"


SUMMARY_HEAD = (
    "| design | detection s (first – slowest, protocols) | failover s | client errors "
    "| answers from faulty server | …after detection | recovery s | faulty share after |\n"
    "|---|---|---|---|---|---|---|---|"
)

DETAIL_HEAD = (
    "| design | protocol | requests | detection s | failover s | errors (kinds) "
    "| faulty answers | after detection | recovery s (chosen / traffic) |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


KEPT_HEAD = (
    "| design | kept-alive clients' first answer from it, s after clearing "
    "| their answers from it after clearing | new connections' answers from it |\n"
    "|---|---|---|---|"
)


def kept_row(figures: ScenarioFigures) -> str | None:
    """One Markdown row: do kept-alive clients return to the recovered server; None without them."""
    by_name = {p.protocol: p for p in figures.protocols}
    kept = by_name.get(KEPT_ALIVE)
    if kept is None:
        return None
    fresh = by_name.get(NEW_CONNECTIONS)
    return (
        f"| {figures.design} | {_fmt(kept.recovery_traffic)} | {_percent(kept.recovered_share)} "
        f"| {_percent(None if fresh is None else fresh.recovered_share)} |"
    )


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def detail_rows(figures: ScenarioFigures) -> list[str]:
    """Markdown rows, one per protocol of one scenario."""
    rows = []
    for p in figures.protocols:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(p.error_kinds.items()))
        detection = _fmt(p.detection) if figures.sampled else "n/a"
        rows.append(
            f"| {figures.design} | {p.protocol} | {p.requests} | {detection} "
            f"| {p.failover:.2f} | {p.errors}{f' ({kinds})' if kinds else ''} "
            f"| {p.faulty_responses} | {p.faulty_after_detection} "
            f"| {_fmt(p.recovery_detect)} / {_fmt(p.recovery_traffic)} |"
        )
    return rows


def markdown(figures: Sequence[ScenarioFigures], preamble: str = "") -> str:
    """A Markdown report: one summary table per fault, protocol detail folded."""
    out = [preamble] if preamble else []
    for fault in dict.fromkeys(f.fault for f in figures):
        of_fault = [f for f in figures if f.fault == fault]
        out += [f"### {fault}", "", SUMMARY_HEAD, *(summary_row(f) for f in of_fault), ""]
        kept = [row for f in of_fault if (row := kept_row(f)) is not None]
        if kept:
            out += ["After clearing, the recovered server's share:", "", KEPT_HEAD, *kept, ""]
        out += ["<details><summary>per protocol</summary>", "", DETAIL_HEAD]
        for f in of_fault:
            out += detail_rows(f)
        out += ["", "</details>", ""]
    return "\n".join(out)


def write_run(
    out_dir: Path, records: Sequence[ScenarioRecord], settings: dict[str, Any], preamble: str
) -> list[ScenarioFigures]:
    """Write results.json, results.md and one SVG per scenario into `out_dir`.

    Returns:
        The figures of every scenario, in the order given.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = [scenario_figures(r) for r in records]
    doc = {
        "settings": settings,
        "scenarios": [
            {**record_json(r), "figures": figures_json(f), "auth_cost": _cost_json(r)}
            for r, f in zip(records, figures, strict=True)
        ],
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    notes = dict.fromkeys(f"- {r.design}: {n}" for r in records for n in r.notes[1:])
    if notes:
        preamble += "\nNotes:\n" + "\n".join(notes) + "\n"
    text = markdown(figures, preamble)
    if rows := auth_rows(records):
        text += (
            "\n### What each design cost the NTLM clients\n\nOutlook-style EWS clients, one "
            "NTLM logon per connection (docs/benchmarks.md says how each count is made).\n\n"
            f"{AUTH_HEAD}\n" + "\n".join(rows) + "\n"
        )
    (out_dir / "results.md").write_text(text)
    for r, f in zip(records, figures, strict=True):
        ok, failed = per_second(r.requests, r.timeline.end_at)
        svg = timeline_svg(
            f"{r.design} · {r.fault} on {r.faulty}",
            ok,
            failed,
            (r.timeline.fault_at, r.timeline.clear_at),
            f.detection,
        )
        (out_dir / f"timeline-{r.design}-{r.fault}.svg").write_text(svg)
    return figures


def record_from_json(doc: dict[str, Any]) -> ScenarioRecord:
    """Rebuild a scenario's raw record from its results.json entry."""
    cols = doc["request_columns"]
    return ScenarioRecord(
        design=doc["design"],
        fault=doc["fault"],
        faulty=doc["faulty"],
        servers=tuple(doc["servers"]),
        timeline=Timeline(**doc["timeline"]),
        requests=tuple(
            RequestRecord(**dict(zip(cols, row, strict=True))) for row in doc["requests"]
        ),
        samples=tuple(ChoiceSample(s["at"], s["chosen"]) for s in doc["samples"]),
        farm_counts=doc["farm_counts"],
        notes=tuple(doc["notes"]),
        auth=tuple(
            AuthAttempt(**dict(zip(AUTH_COLUMNS, row, strict=True))) for row in doc.get("auth", ())
        ),
    )


def _cost_json(record: ScenarioRecord) -> dict[str, Any] | None:
    cost = auth_cost(record)
    return None if cost is None else dataclasses.asdict(cost)


def read_run(path: Path) -> tuple[list[ScenarioRecord], dict[str, Any]]:
    """Every record and the settings of a results.json written by write_run.

    Raises:
        ValueError: naming the file when it is not a results document.
    """
    try:
        doc = json.loads(path.read_text())
        return [record_from_json(s) for s in doc["scenarios"]], doc["settings"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a failover results file: {exc!r}") from None
