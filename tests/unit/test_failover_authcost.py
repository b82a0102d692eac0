"""The NTLM clients' cost figures, from hand-made records."""

from __future__ import annotations

from pathlib import Path

from perf.failover.authcost import auth_cost, auth_rows
from perf.failover.model import AuthAttempt, ScenarioRecord, Timeline
from perf.failover.report import read_run, write_run


def _record(auth: tuple[AuthAttempt, ...]) -> ScenarioRecord:
    return ScenarioRecord("caslb-l7", "crash", "cas1", ("cas1", "cas2"),
                          Timeline(10.0, 20.0, 30.0), (), (), auth=auth)


def test_costs_count_from_the_fault_and_outages_run_to_the_next_served_request() -> None:
    auth = (
        AuthAttempt(0, 0.0, 0.1, True, 1, 0),  # the first logon, before the fault
        AuthAttempt(0, 11.0, 11.5, False, 0, 0),  # reset: failed
        AuthAttempt(0, 12.0, 12.5, True, 1, 0),  # new connection, new logon
        AuthAttempt(1, 0.0, 0.1, True, 1, 0),
        AuthAttempt(1, 11.0, 11.2, True, 1, 1),  # moved: a 401, a logon, served
        AuthAttempt(1, 25.0, 26.0, False, 0, 0),  # failed to the end of the load
    )
    cost = auth_cost(_record(auth))
    assert cost is not None
    assert (cost.clients, cost.requests, cost.failed, cost.reauths, cost.refused) == (
        2, 6, 2, 2, 1)
    assert (cost.outage_total, cost.outage_max, cost.baseline_logons) == (6.5, 5.0, 2)
    assert auth_rows([_record(auth)]) == [
        "| caslb-l7 | crash | 2 | 6 | 2 | 2 | 1 | 6.50 / 5.00 | 2 |"]


def test_no_authenticating_client_no_row() -> None:
    assert auth_cost(_record(())) is None
    assert auth_rows([_record(())]) == []


def test_the_attempts_and_their_table_read_back_from_results_json(tmp_path: Path) -> None:
    record = _record((AuthAttempt(0, 0.0, 0.1, True, 1, 0),
                      AuthAttempt(0, 11.0, 11.5, False, 0, 1)))
    write_run(tmp_path, [record], {"quick": True}, "")
    [back], _ = read_run(tmp_path / "results.json")
    assert back.auth == record.auth
    text = (tmp_path / "results.md").read_text()
    assert "### What each design cost the NTLM clients" in text
    assert "| caslb-l7 | crash | 1 | 2 | 1 | 0 | 1 | 19.00 / 19.00 | 1 |" in text
