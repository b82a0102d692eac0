"""Shared fixtures for all test levels."""

from collections.abc import AsyncIterator

import casfarm
import pytest

pytest_plugins = ["tests.noskip"]


@pytest.fixture
async def farm() -> AsyncIterator[casfarm.Farm]:
    """A running 3-server casfarm on loopback (ports 0), with short long-polls.

    ActiveSync Ping and MAPI NotificationWait are held 0.2 s, MAPI PENDING every
    0.05 s, OAB downloads are 300 kB and RPC_OUT_DATA sends a PDU every 10 ms.
    """
    async with casfarm.running(
        servers=3, heartbeat=0.2, pending_period=0.05, oab_size=300_000, rpc_out_interval=0.01
    ) as running_farm:
        yield running_farm
