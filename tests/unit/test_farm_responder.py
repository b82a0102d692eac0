"""casfarm's Managed Availability responder, as pure decisions (casfarm.responder)."""

from __future__ import annotations

from dataclasses import replace

from casfarm.components import Component, ComponentState, ComponentStates, Requester
from casfarm.faults import Fault, FaultKind, FaultSet
from casfarm.responder import Monitor, ResponderPolicy, ServerView, local_probe_passes, step
from casfarm.vdirs import vdir_named

POLICY = ResponderPolicy(probe_interval=15.0, failures=3, offline_after=420.0)
EWS = Component.EWS_PROXY
HEALTHY = FaultSet()
EWS_ERRORS = FaultSet().with_fault(Fault(FaultKind.ERRORS, vdir="ews"))


def farm(**faults: FaultSet) -> list[ServerView]:
    return [ServerView(name, faults.get(name, HEALTHY)) for name in ("cas1", "cas2", "cas3")]


def rounds(views: list[ServerView], times: list[float]) -> list[list[tuple[str, str]]]:
    """The actions of each round, as (server, state), each applied as the farm does."""
    monitors: dict[tuple[str, Component], Monitor] = {}
    seen = []
    for now in times:
        monitors, actions = step(POLICY, monitors, views, now)
        seen.append([(a.server, a.state.value) for a in actions if a.component is EWS])
        for a in actions:
            i = next(i for i, v in enumerate(views) if v.name == a.server)
            states = views[i].states.set(a.component, a.state, Requester.HEALTH_API, now)
            views[i] = replace(views[i], states=states)
    return seen


def test_local_probes_fail_on_what_breaks_real_requests_only() -> None:
    ews, owa = vdir_named("ews"), vdir_named("owa")
    assert local_probe_passes(HEALTHY, ews, 15)
    assert not local_probe_passes(EWS_ERRORS, ews, 15) and local_probe_passes(EWS_ERRORS, owa, 15)
    stopped = FaultSet().with_fault(Fault(FaultKind.APP_POOL_STOPPED, vdir="ews"))
    assert not local_probe_passes(stopped, ews, 15)
    assert not local_probe_passes(FaultSet().with_fault(Fault(FaultKind.HANG)), owa, 15)
    slow = FaultSet().with_fault(Fault(FaultKind.SLOW, seconds=2.0))
    assert local_probe_passes(slow, owa, 15) and not local_probe_passes(slow, owa, 1)
    # the health check's own faults are not what a real request meets
    assert local_probe_passes(FaultSet().with_fault(Fault(FaultKind.WRONG_BODY)), owa, 15)


def test_the_offline_responder_acts_offline_after_seconds_after_the_monitor_fired() -> None:
    times = [15.0 * i for i in range(1, 35)]
    seen = rounds(farm(cas1=EWS_ERRORS), times)
    # the monitor fires at the 3rd failure (t=45 s); 420 s later the responder acts, once
    acted = [t for t, actions in zip(times, seen, strict=True) if actions]
    assert acted == [465.0]
    assert seen[times.index(465.0)] == [("cas1", "Inactive")]


def test_passing_probes_bring_the_component_back_and_reset_the_monitor() -> None:
    monitors: dict[tuple[str, Component], Monitor] = {}
    now = 0.0
    for now in (15.0, 30.0, 45.0, 465.0):
        monitors, actions = step(POLICY, monitors, farm(cas1=EWS_ERRORS), now)
    assert [(a.server, a.component, a.state) for a in actions] == [
        ("cas1", EWS, ComponentState.INACTIVE)]
    monitors, actions = step(POLICY, monitors, farm(), now + 15)
    assert [(a.server, a.state) for a in actions] == [("cas1", ComponentState.ACTIVE)]
    assert monitors[("cas1", EWS)] == Monitor()
    _, again = step(POLICY, monitors, farm(), now + 30)
    assert again == []  # nothing left to lift


def test_the_responder_keeps_a_majority_of_servers_in_service() -> None:
    both = rounds(farm(cas1=EWS_ERRORS, cas2=EWS_ERRORS), [15.0, 30.0, 45.0, 465.0, 480.0])
    # of three servers, two must stay: only one of the two failing ones is offlined
    assert [a for r in both for a in r] == [("cas1", "Inactive")]


def test_servers_already_out_count_against_the_quorum() -> None:
    out = ComponentStates().set(EWS, ComponentState.INACTIVE, Requester.MAINTENANCE, 0.0)
    views = farm(cas1=EWS_ERRORS)
    views[1] = ServerView("cas2", HEALTHY, out)  # cas2's EWS is in maintenance
    assert [a for r in rounds(views, [15.0, 30.0, 45.0, 465.0]) for a in r] == []


def test_a_crashed_server_runs_no_probes() -> None:
    crashed = FaultSet().with_fault(Fault(FaultKind.CRASH))
    monitors, actions = step(POLICY, {}, farm(cas1=crashed), 15.0)
    assert actions == [] and not any(server == "cas1" for server, _ in monitors)
