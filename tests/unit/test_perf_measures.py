"""The failover harness's measures and report, on hand-made records."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from perf.failover.measures import per_second, scenario_figures
from perf.failover.model import KEPT_ALIVE, ChoiceSample, RequestRecord, ScenarioRecord, Timeline
from perf.failover.report import markdown, write_run

SERVERS = ("CAS1", "CAS2", "CAS3")


def _record() -> ScenarioRecord:
    reqs = [
        RequestRecord("owa", 1.0, 1.1, "CAS1"),
        RequestRecord("owa", 2.0, 2.1, "CAS2"),
        # fault at 5: one reset, one answer from the faulty server before detection
        RequestRecord("owa", 5.1, 5.2, None, "reset"),
        RequestRecord("owa", 5.3, 5.4, "CAS1"),
        RequestRecord("owa", 6.5, 6.6, "CAS1"),  # after detection at 6.0
        RequestRecord("owa", 7.0, 7.5, None, "timeout"),
        # cleared at 10; back in choice at 11; traffic from 11.2
        RequestRecord("owa", 11.2, 11.3, "CAS1"),
        RequestRecord("owa", 11.4, 11.5, "CAS2"),
        RequestRecord("owa", 11.6, 11.7, "CAS3"),
        RequestRecord("ews", 3.0, 3.1, "CAS3"),
    ]
    samples = [
        ChoiceSample(4.0, {"owa": True, "ews": True}),
        ChoiceSample(6.0, {"owa": False, "ews": True}),
        ChoiceSample(11.0, {"owa": True, "ews": True}),
    ]
    return ScenarioRecord(
        design="d",
        fault="crash",
        faulty="CAS1",
        servers=SERVERS,
        timeline=Timeline(5.0, 10.0, 12.0),
        requests=tuple(reqs),
        samples=tuple(samples),
        farm_counts={"fault": {"CAS1": 10}, "clear": {"CAS1": 13}},
    )


def test_figures_follow_the_definitions() -> None:
    figures = scenario_figures(_record())
    owa = next(p for p in figures.protocols if p.protocol == "owa")
    assert owa.detection == 1.0
    assert owa.failover == 2.5
    assert owa.errors == 2
    assert owa.error_kinds == {"reset": 1, "timeout": 1}
    assert owa.faulty_responses == 2
    assert owa.faulty_after_detection == 1
    assert owa.recovery_detect == 1.0
    assert owa.recovery_traffic == pytest.approx(1.2)
    assert owa.spread == {"CAS1": 1, "CAS2": 1, "CAS3": 1}
    ews = next(p for p in figures.protocols if p.protocol == "ews")
    assert ews.detection is None and ews.errors == 0 and ews.failover == 0.0
    assert figures.faulty_farm_requests == 3
    assert figures.errors == 2 and figures.detection == 1.0


def test_kept_alive_clients_show_the_recovered_server_s_share_after_clearing() -> None:
    kept = [
        RequestRecord(KEPT_ALIVE, 4.0, 4.1, "CAS1"),  # before the fault: not counted
        RequestRecord(KEPT_ALIVE, 10.5, 10.6, "CAS2"),
        RequestRecord(KEPT_ALIVE, 11.5, 11.6, "CAS1"),  # back on the recovered server at 1.5
        RequestRecord(KEPT_ALIVE, 11.7, 11.8, None, "reset"),  # failed: not an answer
        RequestRecord(KEPT_ALIVE, 11.8, 11.9, "CAS3"),
        RequestRecord(KEPT_ALIVE, 11.9, 11.95, "CAS1"),
    ]
    record = dataclasses.replace(_record(), requests=(*_record().requests, *kept))
    figures = scenario_figures(record)
    by_name = {p.protocol: p for p in figures.protocols}
    assert by_name[KEPT_ALIVE].recovery_traffic == pytest.approx(1.5)
    assert by_name[KEPT_ALIVE].recovered_share == 0.5
    assert by_name["owa"].recovered_share == pytest.approx(1 / 3, abs=1e-3)
    assert by_name["ews"].recovered_share is None  # no answer after clearing
    md = markdown([figures])
    assert "| d | 1.50 | 50% | – |" in md  # no new-connections load in this record
    assert "kept-alive" not in markdown([scenario_figures(_record())])


def test_per_second_buckets_by_server_and_failure() -> None:
    ok, failed = per_second(_record().requests, 12.0)
    assert ok["CAS1"][5] == 1 and ok["CAS1"][11] == 1
    assert failed[5] == 1 and failed[7] == 1 and sum(failed) == 2


def test_timeline_rejects_disordered_phases() -> None:
    with pytest.raises(ValueError, match="bad timeline"):
        Timeline(5.0, 4.0, 12.0)


def test_write_run_produces_json_markdown_and_svg(tmp_path: Path) -> None:
    figures = write_run(tmp_path, [_record()], {"quick": True}, "# run")
    doc = json.loads((tmp_path / "results.json").read_text())
    scenario = doc["scenarios"][0]
    assert scenario["figures"]["protocols"]["owa"]["errors"] == 2
    assert len(scenario["requests"]) == 10
    md = (tmp_path / "results.md").read_text()
    assert "### crash" in md and "| d |" in md
    svg = ET.parse(tmp_path / "timeline-d-crash.svg").getroot()
    assert svg.tag.endswith("svg")
    assert "never" in markdown(figures).split("| ews |")[1]


async def test_recorder_names_servers_from_headers_and_banners() -> None:
    import base64

    from perf.failover.recorder import Recorder

    rec = Recorder(["cas1", "cas2"])
    tag = base64.b64encode("CAS2.LAB.LOCAL".encode("utf-16-le")).decode()
    assert rec.server_named("CAS1") == "cas1"
    assert rec.server_named(f"* OK The Microsoft Exchange IMAP4 service is ready. [{tag}]") == (
        "cas2"
    )
    assert rec.server_named("220 cas1.lab.local Microsoft ESMTP MAIL Service ready") == "cas1"
    assert rec.server_named("CAS9") is None and rec.server_named(None) is None


def test_results_json_reads_back_into_the_same_figures(tmp_path: Path) -> None:
    from perf.failover.report import read_run

    record = _record()
    write_run(tmp_path, [record], {"quick": False}, "")
    records, settings = read_run(tmp_path / "results.json")
    assert settings == {"quick": False}
    assert records == [record]
    assert scenario_figures(records[0]) == scenario_figures(record)


def test_read_run_names_a_foreign_file(tmp_path: Path) -> None:
    from perf.failover.report import read_run

    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a failover results file"):
        read_run(path)
