"""Metrics: event counters, histograms and label values, read back from a private registry."""

from __future__ import annotations

import inspect
import tomllib

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lb.build import known_refusals
from lb.config import parse
from lb.l4.events import L4Events
from lb.l7.events import L7Events, RequestRecord, Termination
from lb.metrics import Metrics, code_class
from lb.seams import ProbeKey
from probes.checks import CheckResult
from probes.outlier import Ejection
from probes.state import CheckState, Transition
from probes.wire import Reason


def _metrics(now: float = 0.0) -> tuple[Metrics, CollectorRegistry]:
    clock = {"now": now}
    registry = CollectorRegistry()
    return Metrics(registry, now=lambda: clock["now"]), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.mark.parametrize(
    ("status", "cls"),
    [(100, "1xx"), (200, "2xx"), (302, "3xx"), (404, "4xx"), (503, "5xx"), (599, "5xx"),
     (99, "other"), (600, "other"), (0, "other")],
)
def test_code_class_follows_haproxy(status: int, cls: str) -> None:
    assert code_class(status) == cls


def test_check_series_are_labelled_by_the_probe_key_s_server_and_pool() -> None:
    m, r = _metrics()
    m.on_probe(ProbeKey(server="cas2", pool="owa"), _result(True, Reason.OK, 0.01), None)
    assert value(r, "caslb_server_check_results_total",
                 server="cas2", protocol="owa", reason="OK") == 1
    assert value(r, "caslb_server_check_results_total",
                 server="owa", protocol="cas2", reason="OK") is None


def test_frontend_connections_count_up_and_down() -> None:
    m, r = _metrics()
    m.frontend_connection_opened("https")
    m.frontend_connection_opened("https")
    m.frontend_connection_opened("imap")
    m.frontend_connection_closed("https")
    assert value(r, "caslb_frontend_current_connections", frontend="https") == 1
    assert value(r, "caslb_frontend_connections_total", frontend="https") == 2
    assert m.frontend_connections() == {"https": 1, "imap": 1}
    # A close without an open (a bug elsewhere) must not drive the gauge negative.
    m.frontend_connection_closed("smtp")
    assert m.frontend_connections()["smtp"] == 0


def _record(status: int | None, duration: float, *, server: str | None = "cas1",
            path: str = "/EWS/Exchange.asmx",
            termination: Termination = Termination.COMPLETE) -> RequestRecord:
    return RequestRecord(
        frontend="https", client="127.0.0.1:5000", method="POST", path=path, pool="ews",
        server=server, status=status, bytes_in=300, bytes_out=2000, duration=duration,
        termination=termination,
    )


def test_requests_count_by_code_class_protocol_and_duration() -> None:
    m, r = _metrics()
    m.request_finished(_record(200, 0.02))
    m.request_finished(_record(503, 0.5))
    m.request_finished(_record(503, 0.001, server=None, termination=Termination.NO_SERVER))
    m.request_finished(_record(None, 0.3, termination=Termination.CLIENT_ABORT))
    m.request_finished(_record(200, 0.01, path="/owa/", server="cas2"))
    fe = {"frontend": "https"}
    assert value(r, "caslb_frontend_http_responses_total", **fe, protocol="ews", code="5xx") == 2
    assert value(r, "caslb_frontend_http_responses_total", **fe, protocol="ews", code="2xx") == 1
    assert value(r, "caslb_frontend_http_responses_total", **fe, protocol="owa", code="2xx") == 1
    assert value(r, "caslb_server_http_responses_total", pool="ews", server="cas1",
                 code="5xx") == 1
    assert value(r, "caslb_frontend_http_requests_total", **fe, protocol="ews",
                 termination="client_abort") == 1
    assert value(r, "caslb_frontend_refused_connections_total", **fe, pool="ews",
                 reason="no_server") == 1
    assert value(r, "caslb_http_request_duration_seconds_count", **fe, protocol="ews") == 4
    assert value(r, "caslb_http_request_duration_seconds_bucket", **fe, protocol="ews",
                 le="0.025") == 2
    assert value(r, "caslb_frontend_bytes_out_total", **fe) == 5 * 2000
    assert value(r, "caslb_server_bytes_in_total", pool="ews", server="cas1") == 3 * 300


def test_unknown_paths_count_as_protocol_other() -> None:
    m, r = _metrics()
    m.request_finished(_record(404, 0.001, path="/nowhere", server=None))
    assert value(r, "caslb_frontend_http_responses_total", frontend="https",
                 protocol="other", code="4xx") == 1


@pytest.mark.parametrize("events", [L4Events, L7Events])
def test_metrics_has_every_frontend_event_with_the_same_parameters(events: type) -> None:
    names = [n for n, v in vars(events).items() if not n.startswith("_") and callable(v)]
    assert names
    for name in names:
        want = inspect.signature(getattr(events, name)).parameters
        got = inspect.signature(getattr(Metrics, name)).parameters
        assert list(got)[: len(want)] == list(want), name
        assert all(got[p].kind == want[p].kind for p in want), name


def test_bytes_count_at_both_levels() -> None:
    m, r = _metrics()
    m.bytes_relayed("imaps", "imap", "cas1", to_server=100, to_client=4000)
    m.bytes_relayed("imaps", "imap", "cas2", to_server=10, to_client=0)
    assert value(r, "caslb_frontend_bytes_in_total", frontend="imaps") == 110
    assert value(r, "caslb_frontend_bytes_out_total", frontend="imaps") == 4000
    assert value(r, "caslb_server_bytes_out_total", pool="imap", server="cas1") == 4000
    assert value(r, "caslb_server_bytes_out_total", pool="imap", server="cas2") is None


def test_server_event_counters() -> None:
    m, r = _metrics()
    m.server_connected("owa", "cas1", 0.003)
    m.connect_failed("owa", "cas2")
    m.retried("owa", "cas2", "connect")
    m.redispatched("owa", "cas2")
    m.first_response_timeout("owa", "cas2")
    m.replayed("owa", "cas3")
    m.ejected("owa", Ejection("cas2", until=40.0, times_ejected=1, reason="consecutive_errors"))
    m.tls_handshake_failed("https", "timeout")
    m.refused("https", "owa", "no_server")
    srv = {"pool": "owa", "server": "cas2"}
    assert value(r, "caslb_server_connect_time_seconds_count", pool="owa", server="cas1") == 1
    for name in ("connection_errors", "retries", "redispatches", "first_response_timeouts"):
        assert value(r, f"caslb_server_{name}_total", **srv) == 1, name
    assert value(r, "caslb_server_ejections_total", **srv, reason="consecutive_errors") == 1
    assert value(r, "caslb_server_replays_total", pool="owa", server="cas3") == 1
    assert value(r, "caslb_frontend_tls_handshake_failures_total", frontend="https") == 1
    assert value(r, "caslb_frontend_refused_connections_total",
                 frontend="https", pool="owa", reason="no_server") == 1


def test_every_name_is_prefixed_and_counters_end_in_total() -> None:
    m, r = _metrics()
    m.frontend_connection_opened("https")
    m.request_finished(_record(200, 0.01))
    m.retried("owa", "cas1")
    families = list(text_string_to_metric_families(generate_latest(r).decode()))
    assert families
    for family in families:
        # process_* are the standard process series every exporter shares
        assert family.name.startswith(("caslb_", "process_")), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


def test_two_metrics_objects_never_share_series() -> None:
    a, ra = _metrics()
    _, rb = _metrics()
    a.retried("owa", "cas1")
    assert value(ra, "caslb_server_retries_total", pool="owa", server="cas1") == 1
    assert value(rb, "caslb_server_retries_total", pool="owa", server="cas1") is None


def test_up_down_transitions_count_only_up_to_down() -> None:
    m, r = _metrics()
    key = ProbeKey("cas1", "owa")
    m.on_probe(key, None, Transition(CheckState.UP, CheckState.DOWN, 5.0, "reset"))
    m.on_probe(key, None, Transition(CheckState.DOWN, CheckState.UP, 9.0, "ok"))
    m.on_probe(key, None, Transition(CheckState.UP, CheckState.DOWN, 12.0, "reset"))
    assert value(r, "caslb_server_check_up_down_total", server="cas1", protocol="owa") == 2


def test_inconclusive_checks_are_counted_apart_from_results() -> None:
    m, r = _metrics()
    m.check_inconclusive(ProbeKey("cas1", "owa"))
    assert value(r, "caslb_server_check_inconclusive_total", server="cas1", protocol="owa") == 1
    assert value(r, "caslb_server_check_results_total", server="cas1", protocol="owa",
                 reason="TIMEOUT") is None


def _result(ok: bool, reason: Reason, duration: float) -> CheckResult:
    return CheckResult(ok=ok, reason=reason, detail="", duration=duration)


def test_detection_latency_runs_from_first_failed_check_start_to_down() -> None:
    clock = {"now": 0.0}
    r = CollectorRegistry()
    m = Metrics(r, now=lambda: clock["now"])
    key = ProbeKey("cas1", "ews")
    clock["now"] = 10.0
    m.on_probe(key, _result(True, Reason.OK, 0.01), None)
    # A black hole: two timed-out checks of 1 s each; the first started at 19.0.
    clock["now"] = 20.0
    m.on_probe(key, _result(False, Reason.TIMEOUT, 1.0), None)
    clock["now"] = 21.25
    down = Transition(CheckState.UP, CheckState.DOWN, 21.25, "timeout")
    m.on_probe(key, _result(False, Reason.TIMEOUT, 1.0), down)
    assert value(r, "caslb_server_detection_latency_seconds_sum",
                 server="cas1", protocol="ews") == pytest.approx(2.25)
    assert value(r, "caslb_server_detection_latency_seconds_bucket",
                 server="cas1", protocol="ews", le="2.0") == 0
    assert value(r, "caslb_server_detection_latency_seconds_bucket",
                 server="cas1", protocol="ews", le="3.0") == 1
    assert value(r, "caslb_server_check_results_total",
                 server="cas1", protocol="ews", reason="TIMEOUT") == 2
    assert value(r, "caslb_server_check_duration_seconds_count",
                 server="cas1", protocol="ews") == 3


def test_a_success_between_failures_restarts_the_detection_clock() -> None:
    clock = {"now": 0.0}
    r = CollectorRegistry()
    m = Metrics(r, now=lambda: clock["now"])
    key = ProbeKey("cas1", "owa")
    clock["now"] = 5.0
    m.on_probe(key, _result(False, Reason.RESET, 0.0), None)
    clock["now"] = 6.0
    m.on_probe(key, _result(True, Reason.OK, 0.0), None)  # flap: back to good
    clock["now"] = 30.0
    m.on_probe(key, _result(False, Reason.RESET, 0.0), None)
    clock["now"] = 30.5
    m.on_probe(key, _result(False, Reason.RESET, 0.0),
               Transition(CheckState.UP, CheckState.DOWN, 30.5, "reset"))
    assert value(r, "caslb_server_detection_latency_seconds_sum",
                 server="cas1", protocol="owa") == pytest.approx(0.5)


def as_l7_events(metrics: Metrics) -> L7Events:
    """Type-checks (mypy) that Metrics satisfies the L7 frontend's Protocol structurally."""
    return metrics


def as_l4_events(metrics: Metrics) -> L4Events:
    """Type-checks (mypy) that Metrics satisfies the L4 frontend's Protocol structurally."""
    return metrics


def test_what_metrics_exposes_is_chosen_at_construction() -> None:
    own, exposed = CollectorRegistry(), CollectorRegistry()
    assert Metrics(own).exposed is own
    m = Metrics(CollectorRegistry(), exposed=exposed)
    assert m.exposed is exposed and m.registry is not exposed


def test_series_the_config_makes_known_are_exported_at_zero_before_any_event() -> None:
    metrics, registry = _metrics()
    fe, srv = {"frontend": "https"}, {"pool": "ews", "server": "cas1"}
    assert value(registry, "caslb_frontend_connections_total", **fe) is None
    metrics.declare(["https"], [("ews", "cas1")])
    assert value(registry, "caslb_frontend_connections_total", **fe) == 0
    assert value(registry, "caslb_frontend_tls_handshake_failures_total", **fe) == 0
    assert value(registry, "caslb_frontend_current_connections", **fe) == 0
    assert value(registry, "caslb_server_connection_errors_total", **srv) == 0
    assert value(registry, "caslb_server_http_responses_total", code="5xx", **srv) == 0
    assert value(registry, "caslb_server_connect_time_seconds_count", **srv) == 0
    assert value(registry, "caslb_server_check_up_down_total", server="cas1", protocol="ews") == 0
    metrics.frontend_connection_opened("https")
    assert value(registry, "caslb_frontend_connections_total", **fe) == 1


THREE_MODES = """
[servers.cas1]
address = "127.0.0.1"
[pools.p]
servers = ["cas1"]
port = 1
check = { kind = "tcp" }
[frontends.https]
bind = "127.0.0.1:1"
mode = "http"
default_pool = "p"
tls = { cert = "c", key = "k" }
[frontends.tls]
bind = "127.0.0.1:2"
mode = "sni"
sni = { "mail.contoso.test" = "p" }
[frontends.imaps]
bind = "127.0.0.1:3"
mode = "tcp"
pool = "p"
"""


def test_refusals_before_any_pool_are_exported_at_zero_for_the_frontends_that_count_them(
) -> None:
    config = parse(tomllib.loads(THREE_MODES))
    assert sorted(known_refusals(config.frontends)) == [
        ("imaps", "limit"), ("tls", "limit"), ("tls", "no_route")]
    metrics, registry = _metrics()
    metrics.declare([], [], refusals=known_refusals(config.frontends))
    refused = "caslb_frontend_refused_connections_total"
    assert value(registry, refused, frontend="tls", pool="", reason="no_route") == 0
    assert value(registry, refused, frontend="imaps", pool="", reason="limit") == 0
    assert value(registry, refused, frontend="https", pool="", reason="limit") is None


def test_build_info_and_process_series_are_exported() -> None:
    _, registry = _metrics()
    text = generate_latest(registry).decode()
    [line] = [ln for ln in text.splitlines() if ln.startswith("caslb_build_info{")]
    assert line.endswith(" 1.0") and 'python="3.' in line and "version=" in line
    assert value(registry, "process_open_fds") is not None
    assert value(registry, "process_cpu_seconds_total") is not None
