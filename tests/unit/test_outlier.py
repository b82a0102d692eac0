"""Passive outlier detection: eject a server whose errors stand out, never on farm-wide bursts."""

from __future__ import annotations

import pytest

from probes.outlier import Ejection, Outcome, OutlierDetector, OutlierSettings

OK, ERR, GW = Outcome.SUCCESS, Outcome.SERVER_ERROR, Outcome.GATEWAY_FAILURE
SERVERS = ("cas1", "cas2", "cas3")


def round_robin(
    det: OutlierDetector, start: float, rounds: int, outcome_of: dict[str, Outcome]
) -> tuple[float, list[Ejection]]:
    """Send `rounds` requests to each server in turn, 0.1 s apart."""
    now, ejections = start, []
    for _ in range(rounds):
        for server in SERVERS:
            if det.is_ejected(server, now):
                continue
            ej = det.record(server, outcome_of[server], now, pool_size=len(SERVERS))
            if ej is not None:
                ejections.append(ej)
            now += 0.1
    return now, ejections


def test_a_5xx_only_server_is_ejected_at_the_fifth_error() -> None:
    det = OutlierDetector(OutlierSettings(max_ejection_percent=50))
    now, _ = round_robin(det, 100.0, 20, {"cas1": OK, "cas2": OK, "cas3": OK})
    now, ejections = round_robin(det, now, 5, {"cas1": ERR, "cas2": OK, "cas3": OK})
    assert [e.server for e in ejections] == ["cas1"]
    assert ejections[0].reason == "consecutive_errors"
    assert ejections[0].times_ejected == 1
    assert det.ejected(now) == {"cas1"}


def test_a_farm_wide_burst_ejects_nobody() -> None:
    # Mailbox database failover: every server fails the same requests at once.
    det = OutlierDetector(OutlierSettings(max_ejection_percent=100))
    now, _ = round_robin(det, 100.0, 20, {s: OK for s in SERVERS})
    now, ejections = round_robin(det, now, 10, {s: ERR for s in SERVERS})
    assert ejections == []
    assert det.ejected(now) == frozenset()


def test_gateway_failures_trip_their_own_rule() -> None:
    settings = OutlierSettings(consecutive_gateway_failures=3, consecutive_errors=100)
    det = OutlierDetector(settings)
    for t in range(3):
        det.record("cas2", OK, 10.0 + t, pool_size=3)
    ejections = [det.record("cas1", GW, 20.0 + t, pool_size=3) for t in range(3)]
    assert ejections[:2] == [None, None]
    assert ejections[2] is not None and ejections[2].reason == "consecutive_gateway_failures"


def test_a_success_resets_the_streak() -> None:
    det = OutlierDetector(OutlierSettings(consecutive_errors=3))
    det.record("cas2", OK, 1.0, pool_size=3)
    for outcome in (ERR, ERR, OK, ERR, ERR):
        assert det.record("cas1", outcome, 2.0, pool_size=3) is None


def test_ejection_time_grows_with_each_ejection_and_is_capped() -> None:
    s = OutlierSettings(consecutive_errors=1, base_ejection_time=30, max_ejection_time=70)
    det = OutlierDetector(s)
    det.record("cas2", OK, 0.0, pool_size=3)
    durations = []
    now = 1.0
    for _ in range(4):
        ej = det.record("cas1", ERR, now, pool_size=3)
        assert ej is not None
        durations.append(ej.until - now)
        assert det.is_ejected("cas1", ej.until - 0.01)
        assert not det.is_ejected("cas1", ej.until)
        now = ej.until
    assert durations == [30, 60, 70, 70]


def test_back_off_is_forgotten_after_a_quiet_period() -> None:
    s = OutlierSettings(consecutive_errors=1, base_ejection_time=10, max_ejection_time=20)
    det = OutlierDetector(s)
    first = det.record("cas1", ERR, 0.0, pool_size=3)
    assert first is not None
    later = det.record("cas1", ERR, 500.0, pool_size=3)
    assert later is not None and later.times_ejected == 1


def test_max_ejection_percent_caps_but_one_is_always_allowed() -> None:
    s = OutlierSettings(consecutive_errors=1, max_ejection_percent=10)
    det = OutlierDetector(s)
    det.record("cas3", OK, 0.0, pool_size=3)
    assert det.record("cas1", ERR, 1.0, pool_size=3) is not None  # 10% of 3 < 1, one allowed
    assert det.record("cas2", ERR, 1.0, pool_size=3) is None  # a second would exceed
    assert det.ejected(2.0) == {"cas1"}


def test_repr_names_the_ejected() -> None:
    det = OutlierDetector(OutlierSettings(consecutive_errors=1))
    det.record("cas1", ERR, 1.0, pool_size=2)
    assert "cas1" in repr(det)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"consecutive_errors": 0}, "consecutive_errors"),
        ({"base_ejection_time": 0}, "base_ejection_time"),
        ({"max_ejection_percent": 101}, "max_ejection_percent"),
        ({"stand_out_margin": -0.1}, "stand_out_margin"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OutlierSettings(**kwargs)  # type: ignore[arg-type]


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        OutlierDetector().record("cas1", OK, 0.0, pool_size=0)
