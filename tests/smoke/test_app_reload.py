"""Reloading a running balancer: frontends replaced on the same sockets, nothing dropped."""

from __future__ import annotations

import tomllib

import casfarm
import trio

from lb.app import Balancer
from lb.config import parse
from probes.state import AdminState
from tests.smoke.test_app_l7 import balancer, client, farm_config


def pool_total(app: Balancer, pool: str) -> int:
    return sum(m.total for m in app.pools[pool].members)


async def test_reload_replaces_a_frontend_without_refusing_or_dropping() -> None:
    async with casfarm.running(servers=2) as farm:
        # Without ECP in the protocols, /ecp falls to the default pool (owa).
        after = farm_config(farm)
        with_ecp = after.replace('protocols = ["owa",', 'protocols = ["ecp", "owa",')
        async with balancer(farm, with_ecp) as app:
            kept = await client(app, farm)
            assert (await kept.request("GET", "/ecp/")).status == 200
            assert pool_total(app, "ecp") == 1
            address = app.addresses["https"]

            refused = 0

            async def knock(n: int) -> None:
                nonlocal refused
                for _ in range(n):
                    try:
                        c = await client(app, farm)
                    except OSError:
                        refused += 1
                        continue
                    await c.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(knock, 30)
                assert await app.reload(parse(tomllib.loads(after))) == []

            assert refused == 0 and app.addresses["https"] == address
            assert "ecp" not in app.pools
            fresh = await client(app, farm)
            owa_before = pool_total(app, "owa")
            assert (await fresh.request("GET", "/ecp/")).status == 200
            assert pool_total(app, "owa") == owa_before + 1  # new frontend: /ecp → owa
            # The connection opened before the reload is still served by the old frontend.
            assert (await kept.request("GET", "/ecp/")).status == 200
            await kept.aclose()
            await fresh.aclose()


async def test_reload_keeps_health_and_drain_state() -> None:
    async with casfarm.running(servers=2) as farm:
        text = farm_config(farm)
        async with balancer(farm, text) as app:
            app.pools["ews"].set_admin("cas2", AdminState.DRAIN, trio.current_time())
            await app.reload(parse(tomllib.loads(text.replace('rise = 2', 'rise = 3'))))
            assert app.pools["ews"].member("cas2").admin is AdminState.DRAIN
            assert app.pools["owa"].member("cas2").admin is AdminState.READY
            assert app.pools["ews"].config.check is not None
            assert app.pools["ews"].config.check.timing.rise == 3


async def test_a_replaced_l7_frontend_ends_with_its_last_connection() -> None:
    async with casfarm.running(servers=2) as farm:
        after = farm_config(farm)
        with_ecp = after.replace('protocols = ["owa",', 'protocols = ["ecp", "owa",')
        async with balancer(farm, with_ecp) as app:
            kept = await client(app, farm)
            assert (await kept.request("GET", "/owa/")).status == 200
            old = app._served["https"]
            await app.reload(parse(tomllib.loads(after)))
            assert app._served["https"] is not old
            assert not old.scope.cancel_called  # still serving `kept`
            assert (await kept.request("GET", "/owa/")).status == 200
            await kept.aclose()
            # Its accept loop, parked on the shut gate, holds a connection slot;
            # that must not keep the old frontend alive for ever.
            with trio.fail_after(10):
                while not old.scope.cancel_called:
                    await trio.sleep(0.05)
