"""The pure component-state model, fault set and health decisions of casfarm."""

from __future__ import annotations

import pytest
from casfarm.components import (
    Component,
    ComponentState,
    ComponentStates,
    HealthCache,
    Requester,
)
from casfarm.faults import (
    Fault,
    FaultKind,
    FaultSet,
    HealthAnswer,
    healthcheck_answer,
    request_failure,
)
from casfarm.vdirs import is_healthcheck, vdir_for_path, vdir_named
from hypothesis import given
from hypothesis import strategies as st

EWS = Component.EWS_PROXY
SWO = Component.SERVER_WIDE_OFFLINE
A, INA, D = ComponentState.ACTIVE, ComponentState.INACTIVE, ComponentState.DRAINING


def test_no_entries_means_active_everywhere() -> None:
    states = ComponentStates()
    assert all(states.effective(c) is A for c in Component)
    assert states.healthcheck_passes(EWS)


def test_inactive_from_any_requester_wins_over_draining_and_active() -> None:
    states = (
        ComponentStates()
        .set(EWS, A, Requester.MAINTENANCE, 1.0)
        .set(EWS, D, Requester.SIDELINED, 2.0)
        .set(EWS, INA, Requester.HEALTH_API, 3.0)
    )
    assert states.effective(EWS) is INA
    assert not states.healthcheck_passes(EWS)
    cleared = states.set(EWS, A, Requester.HEALTH_API, 4.0)
    assert cleared.effective(EWS) is D
    assert cleared.healthcheck_passes(EWS), "Draining still counts as online"


def test_newest_entry_per_requester_wins_and_stale_one_is_ignored() -> None:
    states = ComponentStates().set(EWS, INA, Requester.FUNCTIONAL, 10.0)
    stale = states.set(EWS, A, Requester.FUNCTIONAL, 5.0)
    assert stale.effective(EWS) is INA
    assert states.set(EWS, A, Requester.FUNCTIONAL, 11.0).effective(EWS) is A


def test_server_wide_offline_not_active_fails_every_healthcheck() -> None:
    for state in (INA, D):
        states = ComponentStates().set(SWO, state, Requester.MAINTENANCE, 1.0)
        assert not any(states.healthcheck_passes(c) for c in Component)


def test_mail_refuses_when_component_or_server_wide_offline_inactive() -> None:
    imap = Component.IMAP_PROXY
    assert ComponentStates().accepts_sessions(imap)
    assert not ComponentStates().set(imap, INA, Requester.HEALTH_API, 0).accepts_sessions(imap)
    assert not ComponentStates().set(SWO, INA, Requester.MAINTENANCE, 0).accepts_sessions(imap)
    assert ComponentStates().set(imap, D, Requester.MAINTENANCE, 0).accepts_sessions(imap)


def test_describe_lists_effective_state_and_requesters() -> None:
    view = ComponentStates().set(EWS, INA, Requester.HEALTH_API, 0).describe()
    assert view["EwsProxy"] == {"state": "Inactive", "requesters": {"HealthApi": "Inactive"}}
    assert view["OwaProxy"] == {"state": "Active", "requesters": {}}


@pytest.mark.parametrize(
    ("parse", "bad"),
    [(Component.parse, "EwsProxyy"), (ComponentState.parse, "Up"), (Requester.parse, "Me")],
)
def test_parsers_name_the_bad_value(parse: object, bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        parse(bad)  # type: ignore[operator]


def test_parsers_are_case_insensitive() -> None:
    assert Component.parse("ewsproxy") is EWS
    assert ComponentState.parse("inactive") is INA
    assert Requester.parse("healthapi") is Requester.HEALTH_API


def test_health_cache_shows_a_change_only_after_the_delay() -> None:
    off = ComponentStates().set(EWS, INA, Requester.HEALTH_API, 100.0)
    cache = HealthCache(delay=15.0).record(off, 100.0)
    assert cache.visible(100.0).effective(EWS) is A
    assert cache.visible(114.9).effective(EWS) is A
    assert cache.visible(115.0).effective(EWS) is INA
    assert cache.current is off


def test_health_cache_without_delay_is_immediate() -> None:
    off = ComponentStates().set(EWS, INA, Requester.HEALTH_API, 5.0)
    assert HealthCache().record(off, 5.0).visible(5.0).effective(EWS) is INA


def test_health_cache_rejects_negative_delay() -> None:
    with pytest.raises(ValueError, match="-1"):
        HealthCache(delay=-1.0)


@given(
    st.lists(st.tuples(st.floats(0, 50), st.booleans()), min_size=1, max_size=12),
    st.floats(0, 20),
    st.floats(0, 80),
)
def test_health_cache_matches_a_full_replay(
    changes: list[tuple[float, bool]], delay: float, probe_after: float
) -> None:
    """Pruning never changes the answer: compare with the unpruned history."""
    cache = HealthCache(delay=delay)
    now, full = 0.0, [(float("-inf"), ComponentStates())]
    for step, inactive in changes:
        now += step
        states = ComponentStates().set(EWS, INA if inactive else A, Requester.HEALTH_API, now)
        cache = cache.record(states, now)
        full.append((now, states))
    at = now + probe_after
    expected = [s for t, s in full if t <= at - delay][-1]
    assert cache.visible(at) == expected


def test_vdir_lookup_by_path_is_case_insensitive_and_ignores_query() -> None:
    ews = vdir_for_path("/ews/Exchange.asmx")
    assert ews is not None and ews.component is EWS
    assert vdir_for_path("/Autodiscover/autodiscover.json?@x/mapi/") == vdir_named("autodiscover")
    assert vdir_for_path("/owafoo") is None
    assert vdir_for_path("/") is None


def test_only_get_on_healthcheck_htm_is_a_health_check() -> None:
    assert is_healthcheck("GET", "/EWS/HealthCheck.htm")
    assert not is_healthcheck("HEAD", "/EWS/healthcheck.htm")
    assert not is_healthcheck("GET", "/EWS/healthcheck.html")


def test_unknown_vdir_is_named() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        vdir_named("nope")


OWA = vdir_named("owa")
EWS_VDIR = vdir_named("ews")


def test_healthcheck_answer_precedence() -> None:
    fine = ComponentStates()
    ews_off = fine.set(EWS, INA, Requester.HEALTH_API, 0)
    pool = FaultSet().with_fault(Fault(FaultKind.APP_POOL_STOPPED, vdir="ews"))
    assert healthcheck_answer(fine, FaultSet(), EWS_VDIR, 0) is HealthAnswer.OK
    assert healthcheck_answer(ews_off, FaultSet(), EWS_VDIR, 0) is HealthAnswer.RESET
    assert healthcheck_answer(ews_off, FaultSet(), OWA, 0) is HealthAnswer.OK
    assert healthcheck_answer(ews_off, pool, EWS_VDIR, 0) is HealthAnswer.APP_POOL_STOPPED
    assert healthcheck_answer(fine, pool, OWA, 0) is HealthAnswer.OK
    wrong = FaultSet().with_fault(Fault(FaultKind.WRONG_BODY))
    assert healthcheck_answer(fine, wrong, OWA, 0) is HealthAnswer.WRONG_BODY
    assert healthcheck_answer(ews_off, wrong, EWS_VDIR, 0) is HealthAnswer.RESET


def test_flap_alternates_up_and_down_each_period() -> None:
    faults = FaultSet().with_fault(Fault(FaultKind.FLAP, seconds=2.0, since=10.0))
    answers = [
        healthcheck_answer(ComponentStates(), faults, OWA, t).value
        for t in (10, 11.9, 12, 13.9, 14)
    ]
    assert answers == ["ok", "ok", "reset", "reset", "ok"]


def test_errors_fault_per_vdir_or_everywhere() -> None:
    ews_only = FaultSet().with_fault(Fault(FaultKind.ERRORS, vdir="EWS", status=503))
    assert request_failure(ews_only, EWS_VDIR) == 503
    assert request_failure(ews_only, OWA) is None
    everywhere = FaultSet().with_fault(Fault(FaultKind.ERRORS))
    assert request_failure(everywhere, OWA) == 500
    assert request_failure(everywhere, None) == 500


def test_fault_set_replaces_same_key_and_clears_individually() -> None:
    faults = (
        FaultSet()
        .with_fault(Fault(FaultKind.SLOW, seconds=1.0))
        .with_fault(Fault(FaultKind.SLOW, seconds=3.0))
        .with_fault(Fault(FaultKind.APP_POOL_STOPPED, vdir="owa"))
        .with_fault(Fault(FaultKind.APP_POOL_STOPPED, vdir="ews"))
    )
    assert faults.added_latency() == 3.0
    assert len(faults.faults) == 3
    fewer = faults.without(FaultKind.APP_POOL_STOPPED, vdir="/owa")
    assert [f.vdir for f in fewer.faults if f.kind is FaultKind.APP_POOL_STOPPED] == ["ews"]
    assert fewer.without(FaultKind.SLOW).added_latency() == 0.0
    assert faults.without().faults == ()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": FaultKind.APP_POOL_STOPPED}, "needs a vdir"),
        ({"kind": FaultKind.CRASH, "vdir": "owa"}, "takes no vdir"),
        ({"kind": FaultKind.ERRORS, "vdir": "nope"}, "'nope'"),
        ({"kind": FaultKind.SLOW, "seconds": -1.0}, "-1"),
        ({"kind": FaultKind.BAD_CERT, "mode": "stale"}, "'stale'"),
        ({"kind": FaultKind.ERRORS, "status": 404}, "404"),
        ({"kind": FaultKind.FLAP, "seconds": 0.0}, "flap period"),
    ],
)
def test_bad_fault_parameters_are_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Fault(**kwargs)  # type: ignore[arg-type]


def test_fault_kind_parse() -> None:
    assert FaultKind.parse("App-Pool-Stopped") is FaultKind.APP_POOL_STOPPED
    with pytest.raises(ValueError, match="'melt'"):
        FaultKind.parse("melt")
    assert Fault(FaultKind.BAD_CERT).mode == "wrong_name"
