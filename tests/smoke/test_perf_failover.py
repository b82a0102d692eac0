"""`python -m perf failover --quick` end to end: farm and balancer processes, real clients.

Asserts the output's shape and sanity (who got traffic, who was detected),
never timings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from perf.__main__ import app
from perf.failover.designs import DESIGNS

pytestmark = pytest.mark.smoke


def _available(*names: str) -> list[str]:
    return [n for n in names if n in DESIGNS and DESIGNS[n].unavailable() is None]


def _run(tmp_path: Path, designs: list[str], faults: str) -> dict[str, Any]:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["failover", "--quick", "--designs", ",".join(designs), "--faults", faults,
         "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "### crash" in (out / "results.md").read_text()
    doc: dict[str, Any] = json.loads((out / "results.json").read_text())
    for s in doc["scenarios"]:
        assert (out / f"timeline-{s['design']}-{s['fault']}.svg").read_text().startswith("<svg")
    return doc


def _answered_by(scenario: dict[str, Any], server: str, start: float, end: float) -> int:
    cols = scenario["request_columns"]
    rows = [dict(zip(cols, r, strict=True)) for r in scenario["requests"]]
    return sum(
        1
        for r in rows
        # answered within the window: a request started just before `end` (the clear
        # is sent after `end` is stamped) may be served once the fault is gone
        if r["server"] == server and r["error"] is None and start <= r["started"]
        and r["finished"] < end
    )


def _errors_before(scenario: dict[str, Any], fault_at: float) -> list[dict[str, Any]]:
    cols = scenario["request_columns"]
    rows = [dict(zip(cols, r, strict=True)) for r in scenario["requests"]]
    return [r for r in rows if r["error"] is not None and r["finished"] < fault_at][:5]


def test_quick_crash_matrix_is_sane(tmp_path: Path) -> None:
    designs = ["dns-rr", *_available("caslb-l7", "haproxy-http")]
    doc = _run(tmp_path, designs, "crash")
    ran = [d for d in designs if d not in doc["settings"]["skipped"]]
    assert "dns-rr" in ran
    assert [s["design"] for s in doc["scenarios"]] == ran
    assert doc["settings"]["quick"] is True
    for s in doc["scenarios"]:
        t = s["timeline"]
        figures = s["figures"]
        # the crashed server answers nobody while it is down, the others carry the load
        assert s["farm_counts"]["clear"]["cas1"] == s["farm_counts"]["fault"]["cas1"]
        assert _answered_by(s, "cas1", t["in_force_at"], t["clear_at"]) == 0
        for other in ("cas2", "cas3"):
            assert _answered_by(s, other, t["fault_at"], t["clear_at"]) > 0
        # before the fault every protocol worked without error
        baseline = {k: p["baseline_errors"] for k, p in figures["protocols"].items()}
        assert not any(baseline.values()), (s["design"], baseline, _errors_before(s, t["fault_at"]))
        assert {"owa", "ews-ntlm", "mapi", "rpc", "owa-new"} <= set(figures["protocols"])
        # the new-connections load ran: at least one second's worth over the whole load
        rate = doc["settings"]["mix"]["new_connections_per_second"]
        assert rate > 0 and figures["protocols"]["owa-new"]["requests"] >= rate
        # every NTLM client logged on once before the fault, and nothing moved it;
        # after it, whoever lost cas1 logged on again and was served
        cost = s["auth_cost"]
        clients = doc["settings"]["mix"]["clients"]["ews-ntlm"]
        assert (cost["clients"], cost["baseline_logons"]) == (clients, clients), cost
        assert cost["refused"] <= cost["reauths"] <= clients, cost  # one lost server each
        served_after = [a for a in s["auth"] if a[1] >= t["clear_at"] and a[3]]
        assert {a[0] for a in served_after} == {a[0] for a in s["auth"]}, cost
        if s["design"] == "dns-rr":
            assert s["samples"] == [] and figures["detection"] is None
        else:
            # a balancer stops choosing the crashed server, for every protocol
            assert all(p["detection"] is not None for p in figures["protocols"].values())


def test_listing_and_bad_names() -> None:
    runner = CliRunner()
    listing = runner.invoke(app, [])
    assert listing.exit_code == 0
    assert "dns-rr" in listing.output and "ews_inactive" in listing.output
    bad = runner.invoke(app, ["failover", "--designs", "nope"])
    assert bad.exit_code == 2 and "unknown design nope" in bad.output
