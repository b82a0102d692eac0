"""The pool owns its outlier ejections: shown in the status document and metrics, kept on
reconfigure, lifted by a check that goes UP after DOWN."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry

from lb.config import PoolConfig, ServerConfig
from lb.metrics import Metrics
from lb.pool import Pool
from lb.statuspage import render_html, status_document
from probes.outlier import Outcome, OutlierSettings
from probes.state import CheckState

GW = Outcome.GATEWAY_FAILURE
SETTINGS = OutlierSettings(consecutive_errors=3, consecutive_gateway_failures=3,
                           max_ejection_percent=50)


def config(outlier: OutlierSettings | None = SETTINGS, *, servers: int = 3) -> PoolConfig:
    members = tuple(ServerConfig(f"cas{i}", "127.0.0.1", 443, f"cas{i}.lab")
                    for i in range(1, servers + 1))
    return PoolConfig("owa", members, protocol="owa", outlier=outlier)


def eject_cas1(pool: Pool, now: float) -> None:
    for i in range(3):
        pool.ejections.record("cas2", Outcome.SUCCESS, now + i, client="10.0.0.1")
    for _ in range(3):
        pool.ejections.record("cas1", GW, now + 3, client=None)  # connect failures
    assert pool.ejections.ejected(now + 3) == {"cas1"}


def test_an_ejection_shows_in_the_status_document_and_page() -> None:
    pool = Pool(config())
    eject_cas1(pool, 100.0)
    doc = status_document({"owa": pool}, frontends={}, now=107.0)
    cas1, cas2, _ = doc["pools"]["owa"]["servers"]
    assert (cas1["label"], cas1["kind"], cas1["ejected_for"]) == ("EJECTED 26s", "ejected", 26.0)
    assert cas2["ejected_for"] is None and cas2["label"] == "UP"
    assert "EJECTED 26s" in render_html(doc)
    after = status_document({"owa": pool}, frontends={}, now=140.0)
    assert after["pools"]["owa"]["servers"][0]["ejected_for"] is None


def test_the_ejected_gauge_is_read_from_the_pool_at_scrape_time() -> None:
    pool = Pool(config())
    clock = {"now": 100.0}
    registry = CollectorRegistry()
    Metrics(registry, pools=lambda: {"owa": pool}, now=lambda: clock["now"])

    def ejected(server: str) -> float | None:
        return registry.get_sample_value("caslb_server_ejected",
                                         {"pool": "owa", "server": server})

    assert ejected("cas1") == 0.0
    eject_cas1(pool, 100.0)
    clock["now"] = 104.0
    assert (ejected("cas1"), ejected("cas2")) == (1.0, 0.0)
    status = {"pool": "owa", "server": "cas1", "state": "UP"}
    assert registry.get_sample_value("caslb_server_status", status) == 1.0  # its check says UP
    clock["now"] = 200.0
    assert ejected("cas1") == 0.0


def test_a_check_up_after_down_lifts_the_ejection() -> None:
    pool = Pool(config())
    eject_cas1(pool, 100.0)
    pool.set_check_state("cas1", CheckState.UP, 104.0)  # no transition: still ejected
    assert pool.ejections.is_ejected("cas1", 104.0)
    pool.set_check_state("cas1", CheckState.DOWN, 104.0)
    assert pool.ejections.is_ejected("cas1", 105.0)  # DOWN does not lift: it is out anyway
    pool.set_check_state("cas1", CheckState.UP, 106.0)
    assert not pool.ejections.is_ejected("cas1", 106.0)
    assert pool.ejections.ejected_until("cas1", 106.0) is None


def test_reconfigure_keeps_ejections_and_applies_new_settings() -> None:
    pool = Pool(config())
    eject_cas1(pool, 100.0)
    ejections = pool.ejections
    new = replace(SETTINGS, base_ejection_time=60.0)
    pool.reconfigure(config(new), 105.0)
    assert pool.ejections is ejections and pool.ejections.is_ejected("cas1", 105.0)
    assert pool.ejections.enabled


def test_reconfigure_forgets_removed_servers_and_turning_off_forgets_all() -> None:
    pool = Pool(config())
    eject_cas1(pool, 100.0)
    pool.reconfigure(config(), 104.0)
    assert pool.ejections.is_ejected("cas1", 104.0)
    pool.reconfigure(config(None), 105.0)
    assert not pool.ejections.enabled and pool.ejections.ejected(105.0) == frozenset()
    assert pool.ejections.record("cas1", GW, 106.0, client=None) is None
    pool.reconfigure(config(), 107.0)
    eject_cas1(pool, 107.0)
    two = replace(config(), servers=config().servers[1:])
    pool.reconfigure(two, 111.0)
    assert pool.ejections.ejection_end("cas1") is None


def test_an_ews_pool_needs_two_clients_for_500s() -> None:
    pool = Pool(replace(config(), protocol="ews"))
    for i in range(3):
        pool.ejections.record("cas2", Outcome.SUCCESS, 100.0 + i, client="10.0.0.1")
    for _ in range(10):
        pool.ejections.record("cas1", Outcome.SERVER_ERROR, 103.0, client="10.0.0.1")
    assert pool.ejections.ejected(103.0) == frozenset()
    pool.ejections.record("cas1", Outcome.SERVER_ERROR, 103.0, client="10.0.0.2")
    assert pool.ejections.ejected(103.0) == {"cas1"}
