"""Outlier detection is one-client-proof and knows EWS's SOAP faults; ejections can be lifted."""

from __future__ import annotations

from probes.outlier import Outcome, OutlierDetector, OutlierSettings, for_protocol

OK, ERR, GW = Outcome.SUCCESS, Outcome.SERVER_ERROR, Outcome.GATEWAY_FAILURE
TODAY = OutlierSettings(consecutive_errors=3, consecutive_gateway_failures=3)


def warm(det: OutlierDetector, now: float, clients: tuple[str, ...]) -> float:
    """Successes on cas2 and cas3 from each client, so cas1's failures stand out."""
    for client in clients:
        for server in ("cas2", "cas3"):
            det.record(server, OK, now, pool_size=3, client=client)
            now += 0.1
    return now


def fail(
    det: OutlierDetector, now: float, outcome: Outcome, clients: list[str | None]
) -> list[str]:
    """One failure on cas1 per client in turn; the reasons of the ejections they cause."""
    reasons = []
    for client in clients:
        ejection = det.record("cas1", outcome, now, pool_size=3, client=client)
        if ejection is not None:
            reasons.append(ejection.reason)
        now += 0.1
    return reasons


def test_one_client_alone_cannot_eject_a_server_the_others_use() -> None:
    det = OutlierDetector(TODAY)
    now = warm(det, 100.0, ("10.0.0.1", "10.0.0.2"))
    assert fail(det, now, ERR, ["10.0.0.1"] * 20) == []
    assert fail(det, now, GW, ["10.0.0.1"] * 20) == []
    assert det.ejected(now + 5) == frozenset()


def test_a_second_client_in_the_streak_ejects_at_once() -> None:
    det = OutlierDetector(TODAY)
    now = warm(det, 100.0, ("10.0.0.1", "10.0.0.2"))
    assert fail(det, now, ERR, ["10.0.0.1"] * 5 + ["10.0.0.2"]) == ["consecutive_errors"]


def test_a_server_failing_everyone_is_ejected_at_the_third_error_as_before() -> None:
    det = OutlierDetector(TODAY)
    now = warm(det, 100.0, ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
    assert fail(det, now, ERR, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) == ["consecutive_errors"]


def test_connect_failures_are_nobodys_doing_and_eject_at_the_third() -> None:
    det = OutlierDetector(TODAY)
    now = warm(det, 100.0, ("10.0.0.1", "10.0.0.2"))
    assert fail(det, now, GW, [None, None, None]) == ["consecutive_gateway_failures"]


def test_a_pool_that_only_ever_saw_one_client_ejects_on_its_failures() -> None:
    det = OutlierDetector(TODAY)
    now = warm(det, 100.0, ("10.0.0.1",))
    assert fail(det, now, ERR, ["10.0.0.1"] * 3) == ["consecutive_errors"]


def test_ews_500s_from_one_client_never_eject_even_when_it_is_the_only_client() -> None:
    det = OutlierDetector(for_protocol(TODAY, "ews"))
    now = warm(det, 100.0, ("10.0.0.1",))
    assert fail(det, now, ERR, ["10.0.0.1"] * 50) == []


def test_ews_500s_from_two_clients_eject() -> None:
    det = OutlierDetector(for_protocol(TODAY, "EWS"))
    now = warm(det, 100.0, ("10.0.0.1",))
    assert fail(det, now, ERR, ["10.0.0.1", "10.0.0.1", "10.0.0.2"]) == ["consecutive_errors"]


def test_ews_gateway_failures_from_its_only_client_still_eject() -> None:
    det = OutlierDetector(for_protocol(TODAY, "ews"))
    now = warm(det, 100.0, ("10.0.0.1",))
    assert fail(det, now, GW, ["10.0.0.1"] * 3) == ["consecutive_gateway_failures"]


def test_only_soap_fault_protocols_change_the_settings() -> None:
    assert for_protocol(TODAY, "owa") is TODAY
    assert for_protocol(TODAY, None) is TODAY
    assert for_protocol(TODAY, "ews").lone_client_5xx is False


def test_lift_ends_an_ejection_with_a_clean_streak_and_keeps_the_back_off() -> None:
    det = OutlierDetector(TODAY)
    now = warm(det, 100.0, ("10.0.0.1",))
    assert fail(det, now, GW, [None] * 3) == ["consecutive_gateway_failures"]
    assert det.ejection_end("cas1") == now + 0.2 + 30
    assert det.lift("cas1") is True
    assert det.lift("cas1") is False
    assert not det.is_ejected("cas1", now + 1)
    now = warm(det, now + 1, ("10.0.0.1",))
    assert fail(det, now, GW, [None, None]) == []  # the streak started over
    ejection = det.record("cas1", GW, now + 1, pool_size=3)
    assert ejection is not None and ejection.times_ejected == 2


def test_forget_drops_a_server() -> None:
    det = OutlierDetector(TODAY)
    fail(det, 0.0, GW, [None] * 3)
    det.forget("cas1")
    assert det.ejection_end("cas1") is None
    assert det.ejected(1.0) == frozenset()
