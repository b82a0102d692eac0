"""The supervisor/worker messages and metric sums of lb/workers/, without processes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lb.config.model import PoolConfig, ServerConfig
from lb.metrics import Metrics
from lb.pool import Pool
from lb.workers import (
    AdminChange,
    CheckChange,
    ConfigAgreement,
    Family,
    GapDetector,
    LineSplitter,
    MemberState,
    MergedCollector,
    MetricsUpdate,
    PassiveReport,
    Reloaded,
    ReportFilter,
    Resync,
    Sequencer,
    Snapshot,
    Stamp,
    WorkerTotals,
    apply_control,
    config_hash,
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
    Snapshot((MemberState("owa", "cas1", CheckState.DOWN, AdminState.DRAIN),
              MemberState("ews", "cas0", CheckState.UP, AdminState.READY))),
    Snapshot(()),
])
def test_control_messages_round_trip_as_one_line(message: object) -> None:
    line = encode_control(message, Stamp(7, "abc"))  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_control(line.rstrip(b"\n")) == (Stamp(7, "abc"), message)


@pytest.mark.parametrize(("line", "named"), [
    (b"{not json", "not a JSON line"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"t": "reboot"}', "'reboot'"),
    (b'{"t": "check", "seq": 1, "cfg": "h", "pool": "owa", "server": "cas1",'
     b' "state": "SIDEWAYS"}', "'SIDEWAYS'"),
    (b'{"t": "admin", "seq": 1, "cfg": "h", "pool": "owa", "server": 7, "state": "DRAIN"}',
     "'server'"),
    (b'{"t": "admin", "cfg": "h", "pool": "owa", "server": "cas1", "state": "DRAIN"}', "'seq'"),
    (b'{"t": "admin", "seq": 1, "pool": "owa", "server": "cas1", "state": "DRAIN"}', "'cfg'"),
    (b'{"t": "snapshot", "seq": 1, "cfg": "h", "members": [["owa", "cas1", "UP"]]}',
     "malformed snapshot member"),
    (b'{"t": "snapshot", "seq": 1, "cfg": "h", "members": [["owa", "cas1", "UP", "OFF"]]}',
     "'OFF'"),
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
                    Resync(3), MetricsUpdate(families)):
        line = encode_worker(message, Stamp(2, "abc"))
        assert line.count(b"\n") == 1
        assert decode_worker(line) == (Stamp(2, "abc"), message)


@pytest.mark.parametrize(("line", "named"), [
    (b'{"t": "report", "seq": 1, "cfg": "h", "pool": "owa", "server": "cas1", "ok": "yes",'
     b' "reason": ""}', "'ok'"),
    (b'{"t": "metrics", "seq": 1, "cfg": "h", "families": {}}', "'families'"),
    (b'{"t": "metrics", "seq": 1, "cfg": "h",'
     b' "families": [["x", "counter", [["x_total", [], 1]]]]}', "malformed"),
    (b'{"t": "resync", "seq": 1, "cfg": "h", "missing": -1}', "'missing'"),
    (b'{"t": "reloaded", "seq": true, "cfg": "h"}', "'seq'"),
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
    message = snapshot(source)
    assert len(message.members) == 4
    copy = {"owa": _pool("owa"), "ews": _pool("ews")}
    _, decoded = decode_control(encode_control(message, Stamp(1, "h")))
    apply_control(copy, decoded, 5.0)
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


def test_a_snapshot_that_agrees_changes_nothing_not_even_a_drain_deadline() -> None:
    pools = {"owa": _pool("owa")}
    pools["owa"].set_admin("cas1", AdminState.DRAIN, 0.0)
    deadline_before = pools["owa"]._deadline["cas1"]
    apply_control(pools, snapshot(pools), 50.0)  # a periodic snapshot, much later
    assert pools["owa"]._deadline["cas1"] == deadline_before
    apply_control(pools, Snapshot((MemberState("mapi", "cas0", CheckState.DOWN,
                                               AdminState.READY),
                                   MemberState("owa", "cas9", CheckState.DOWN,
                                               AdminState.READY))), 50.0)
    assert all(m.check_state is CheckState.UP for m in pools["owa"].members)


def test_sequencer_numbers_lines_from_one_and_carries_the_config_it_is_given() -> None:
    sequence = Sequencer("old")
    assert [sequence.next() for _ in range(2)] == [Stamp(1, "old"), Stamp(2, "old")]
    sequence.config = "new"
    assert sequence.next() == Stamp(3, "new")


@pytest.mark.parametrize(("seqs", "missing"), [
    ([1, 2, 3], [0, 0, 0]),
    ([1, 2, 5, 6], [0, 0, 2, 0]),
    ([3], [2]),                   # the first lines never came
    ([1, 2, 3, 1, 2], [0] * 5),   # a restarted sender counts from 1 again
    ([4, 4], [3, 0]),
])
def test_gap_detector_counts_the_lines_lost_before_each_one(
    seqs: list[int], missing: list[int]
) -> None:
    gaps = GapDetector()
    assert [gaps.missing(seq) for seq in seqs] == missing


def test_a_dropped_line_is_a_gap_the_receiver_sees() -> None:
    sequence, gaps = Sequencer("h"), GapDetector()
    lines = [encode_control(CheckChange("owa", "cas1", CheckState.DOWN), sequence.next())
             for _ in range(4)]
    del lines[1:3]  # two lines the sender could not queue
    seen = [gaps.missing(decode_control(line)[0].seq) for line in lines]
    assert seen == [0, 2]


def test_config_hash_is_stable_across_parses_and_changes_with_the_config() -> None:
    a = PoolConfig("owa", (ServerConfig("cas1", "127.0.0.1", 443, "cas1.lab"),))
    b = PoolConfig("owa", (ServerConfig("cas1", "127.0.0.1", 443, "cas1.lab"),))
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(
        PoolConfig("owa", (ServerConfig("cas1", "127.0.0.1", 443, "cas1.lab", weight=3),)))


def test_agreement_reports_when_every_worker_runs_the_supervisors_config() -> None:
    agreement = ConfigAgreement("v1", workers=2)
    first = agreement.heard(0, "v1")
    assert first is not None and not first.agreed and "1 not heard yet" in first.text
    both = agreement.heard(1, "v1")
    assert both is not None and both.agreed and not both.warn
    assert agreement.heard(1, "v1") is None  # no news: nothing to log

    agreement.supervisor_runs("v2")  # SIGHUP: the supervisor reloads first
    waiting = agreement.heard(0, "v1")
    assert waiting is not None and not waiting.agreed and "worker 0 runs v1" in waiting.text
    assert agreement.heard(0, "v2", reloaded=True) is not None
    done = agreement.heard(1, "v2", reloaded=True)
    assert done is not None and done.agreed and "all 2 workers" in done.text


def test_agreement_warns_about_a_worker_that_reloaded_into_another_config() -> None:
    agreement = ConfigAgreement("v2", workers=2)
    agreement.heard(0, "v2")
    verdict = agreement.heard(1, "v1", reloaded=True)
    assert verdict is not None and verdict.warn and "worker 1 runs v1" in verdict.text
    again = agreement.heard(1, "v1", reloaded=True)  # each failed reload warns
    assert again is not None and again.warn
    agreement.gone(1)
    assert not agreement.agreed and agreement.runs(1) is None


def test_line_splitter_scans_only_new_bytes_for_a_line_arriving_in_pieces() -> None:
    s = LineSplitter(limit=1 << 20)
    for _ in range(1000):
        assert s.feed(b"x" * 100) == []
    assert s.feed(b"\nab\ncd") == [b"x" * 100_000, b"ab"]
    assert s.feed(b"\n") == [b"cd"]
    assert len(s._buffer) <= 3  # the consumed head was dropped


def test_the_protocol_module_is_a_leaf() -> None:
    import ast
    from pathlib import Path

    import lb.workers.messages as protocol

    tree = ast.parse(Path(protocol.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert {name for name in imported if name.split(".")[0] in ("lb", "trio")} == set()
    # Both pure: the states and outcomes the lines carry.
    assert {name for name in imported if name.startswith("probes")} <= {
        "probes.state", "probes.outlier"}
