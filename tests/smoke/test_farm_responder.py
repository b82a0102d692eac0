"""Managed Availability in casfarm, on the wire: a failing protocol is taken out, then back."""

from __future__ import annotations

import casfarm
import pytest
import trio
from casfarm.responder import ResponderPolicy

from tests.smoke.test_farm_faults import _status

pytestmark = pytest.mark.smoke

FAST = ResponderPolicy(probe_interval=0.05, failures=2, offline_after=0.1)


async def _until(farm: casfarm.Farm, target: str, wanted: int | str, name: str = "cas1") -> None:
    with trio.fail_after(10):
        while await _status(farm, target, name) != wanted:
            await trio.sleep(0.05)


async def test_errors_behind_a_green_check_end_with_the_protocol_offlined_and_back() -> None:
    async with casfarm.running(responder=FAST) as farm:
        assert await _status(farm, "/EWS/healthcheck.htm") == 200
        farm.inject("cas1", "errors", vdir="ews", status=500)
        # the check itself never sees the 500s: Managed Availability's probes do
        await _until(farm, "/EWS/healthcheck.htm", "reset")
        assert farm.component_state("cas1", "EwsProxy") is casfarm.ComponentState.INACTIVE
        assert await _status(farm, "/owa/healthcheck.htm") == 200  # that protocol alone
        assert await _status(farm, "/EWS/healthcheck.htm", "cas2") == 200

        farm.clear("cas1", "errors")
        await _until(farm, "/EWS/healthcheck.htm", 200)
        done = [(a.server, a.component.value, a.state.value) for a in farm.responder_actions]
        assert done == [("cas1", "EwsProxy", "Inactive"), ("cas1", "EwsProxy", "Active")]


async def test_a_maintenance_state_is_not_the_responders_to_lift() -> None:
    async with casfarm.running(responder=FAST) as farm:
        farm.set_component("cas1", "EwsProxy", "Inactive", requester="Maintenance")
        await _until(farm, "/EWS/healthcheck.htm", "reset")
        for _ in range(10):  # rounds pass with every local probe green: nothing to do
            await trio.sleep(FAST.probe_interval)
        assert farm.responder_actions == []
        assert await _status(farm, "/EWS/healthcheck.htm") == "reset"
