"""The supervisor/worker messages and metric sums of lb/workers/, without processes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lb.config_model import PoolConfig, ServerConfig
from lb.metrics import Metrics
from lb.pool import Pool
from lb.workers import (
    AdminChange,
    CheckChange,
    Family,
    LineSplitter,
    MergedCollector,
    MetricsUpdate,
    PassiveReport,
    Reloaded,
    ReportFilter,
    Synced,
    WorkerTotals,
    apply_control,
    decode_control,
    decode_worker,
    encode_control,
    encode_worker,
    snapshot,
    traffic_families,
)
from probes.state import AdminState, CheckState


def _pool(name: str = "owa", n: int = 2) -> Pool:
    servers = tuple(
        ServerConfig(f"cas{i}", f"127.0.0.{10 + i}", 443, f"cas{i}.lab.local") for i in range(n)
    )
    return Pool(PoolConfig(name, servers))


@pytest.mark.parametrize("message", [
    CheckChange("owa", "cas1", CheckState.DOWN),
    CheckChange("ews", "cas0", CheckState.UP),
    AdminChange("owa", "cas1", AdminState.DRAIN),
    AdminChange("owa", "cas1", AdminState.MAINT),
    Synced(),
])
def test_control_messages_round_trip_as_one_line(message: object) -> None:
    line = encode_control(message)  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_control(line.rstrip(b"\n")) == message


@pytest.mark.parametrize(("line", "named"), [
    (b"{not json", "not a JSON line"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"t": "reboot"}', "'reboot'"),
    (b'{"t": "check", "pool": "owa", "server": "cas1", "state": "SIDEWAYS"}', "'SIDEWAYS'"),
    (b'{"t": "admin", "pool": "owa", "server": 7, "state": "DRAIN"}', "'server'"),
])
def test_bad_control_lines_are_refused_naming_the_bad_value(line: bytes, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        decode_control(line)


def test_worker_messages_round_trip() -> None:
    families = {"caslb_frontend_http_requests": Family("counter", {
        ("caslb_frontend_http_requests_total",
         (("frontend", "https"), ("protocol", "owa"), ("termination", "complete"))): 3.0,
    })}
    for message in (PassiveReport("owa", "cas1", False, "connect refused"), Reloaded(),
                    MetricsUpdate(families)):
        line = encode_worker(message)
        assert line.count(b"\n") == 1
        assert decode_worker(line) == message


@pytest.mark.parametrize(("line", "named"), [
    (b'{"t": "report", "pool": "owa", "server": "cas1", "ok": "yes", "reason": ""}', "'ok'"),
    (b'{"t": "metrics", "families": {}}', "'families'"),
    (b'{"t": "metrics", "families": [["x", "counter", [["x_total", [], 1]]]]}', "malformed"),
    (b'{"t": "hello"}', "'hello'"),
])
def test_bad_worker_lines_are_refused(line: bytes, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        decode_worker(line)


def test_report_filter_sends_failures_and_only_the_first_success_after_one() -> None:
    f = ReportFilter()
    sent = [f.should_send("owa", "cas1", ok) for ok in (True, True, False, False, True, True)]
    assert sent == [False, False, True, True, True, False]
    # Members are tracked apart.
    assert f.should_send("owa", "cas2", False) and not f.should_send("owa", "cas1", True)
    assert not f.should_send("ews", "cas2", True)


def test_line_splitter_joins_partial_reads_and_refuses_endless_lines() -> None:
    s = LineSplitter(limit=10)
    assert s.feed(b"ab") == []
    assert s.feed(b"c\nde\n\nf") == [b"abc", b"de", b""]
    assert s.feed(b"g\n") == [b"fg"]
    with pytest.raises(ValueError, match="longer than 10"):
        s.feed(b"x" * 11)


def test_snapshot_applied_to_fresh_pools_reproduces_every_state() -> None:
    source = {"owa": _pool("owa"), "ews": _pool("ews")}
    source["owa"].set_check_state("cas1", CheckState.DOWN, 0.0)
    source["ews"].set_admin("cas0", AdminState.MAINT, 0.0)
    messages = snapshot(source)
    assert messages[-1] == Synced()
    copy = {"owa": _pool("owa"), "ews": _pool("ews")}
    for message in messages:
        apply_control(copy, decode_control(encode_control(message)), 5.0)
    state = {(p.name, m.name): (m.check_state, m.admin)
             for pools in (copy,) for p in pools.values() for m in p.members}
    assert state == {(p.name, m.name): (m.check_state, m.admin)
                     for p in source.values() for m in p.members}
    assert not copy["owa"].member("cas1").eligible
    assert not copy["ews"].member("cas0").eligible


def test_changes_for_unknown_pools_or_servers_are_ignored() -> None:
    pools = {"owa": _pool("owa")}
    apply_control(pools, CheckChange("mapi", "cas0", CheckState.DOWN), 0.0)
    apply_control(pools, AdminChange("owa", "cas9", AdminState.DRAIN), 0.0)
    assert all(m.eligible for m in pools["owa"].members)


def _worker_metrics(requests: int, current: int) -> Metrics:
    metrics = Metrics(CollectorRegistry())
    for _ in range(requests):
        metrics.connect_failed("owa", "cas1")
    for _ in range(current):
        metrics.frontend_connection_opened("imap")
    return metrics


def test_totals_sum_workers_and_keep_a_replaced_workers_counters() -> None:
    totals = WorkerTotals()
    totals.update(0, traffic_families(_worker_metrics(3, 2).registry))
    totals.update(1, traffic_families(_worker_metrics(4, 1).registry))
    summed = totals.summed()
    errors = summed["caslb_server_connection_errors"].samples
    assert errors[("caslb_server_connection_errors_total",
                   (("pool", "owa"), ("server", "cas1")))] == 7
    current = summed["caslb_frontend_current_connections"].samples
    assert current[("caslb_frontend_current_connections", (("frontend", "imap"),))] == 3
    assert totals.by_worker("caslb_frontend_connections") == {0: 2.0, 1: 1.0}

    totals.retire(0)  # worker 0 died; its replacement starts from zero
    totals.update(0, traffic_families(_worker_metrics(1, 0).registry))
    summed = totals.summed()
    errors = summed["caslb_server_connection_errors"].samples
    assert errors[("caslb_server_connection_errors_total",
                   (("pool", "owa"), ("server", "cas1")))] == 8
    current = summed["caslb_frontend_current_connections"].samples
    assert current[("caslb_frontend_current_connections", (("frontend", "imap"),))] == 1
    assert totals.by_worker("caslb_frontend_connections") == {0: 2.0, 1: 1.0}


def test_merged_exposition_adds_worker_traffic_to_the_supervisors_own_series() -> None:
    own = CollectorRegistry()
    pools = {"owa": _pool("owa")}
    Metrics(own, pools=lambda: pools)
    totals = WorkerTotals()
    totals.update(0, traffic_families(_worker_metrics(2, 5).registry))
    totals.update(1, traffic_families(_worker_metrics(1, 4).registry))
    exposed = CollectorRegistry(auto_describe=False)
    exposed.register(MergedCollector(own, totals))
    text = generate_latest(exposed).decode()
    lines = text.splitlines()
    assert 'caslb_server_connection_errors_total{pool="owa",server="cas1"} 3.0' in lines
    assert 'caslb_frontend_connections_total{frontend="imap"} 9.0' in lines
    assert 'caslb_worker_frontend_connections_total{worker="0"} 5.0' in lines
    assert 'caslb_worker_frontend_connections_total{worker="1"} 4.0' in lines
    assert 'caslb_server_status{pool="owa",server="cas0",state="UP"} 1.0' in lines
    # Each family is exposed once: the merge replaces, never duplicates.
    assert text.count("# TYPE caslb_frontend_connections_total counter") == 1
