"""The whole balancer at L7 over real loopback sockets, in front of casfarm."""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import casfarm
import trio
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP

from lb.app import Balancer, serve
from lb.config import parse
from tests.farmclient import HttpClient, https_client

NAMESPACE = "mail.lab.local"


def farm_config(farm: casfarm.Farm, mode: str = "l7", extra: str = "") -> str:
    servers = ",\n".join(
        f'  {{ name = "{s.name}", address = "{s.host}", fqdn = "{s.fqdn}", '
        f'ports = {{ https = {s.ports["https"]} }} }}'
        for s in farm.servers
    )
    cert = Path(farm.ca_path).parent / "cas1.pem"
    return f"""
[exchange]
namespace = "{NAMESPACE}"
mode = "{mode}"
bind = "127.0.0.1"
protocols = ["owa", "ews", "mapi", "eas", "rpc", "autodiscover"]
ca_file = "{farm.ca_path}"
tls = {{ cert = "{cert}", key = "{cert}" }}
inter = "200ms"
fastinter = "100ms"
rise = 2
fall = 2
timeout = "1s"
servers = [
{servers}
]
{extra}
"""


def balancer(farm: casfarm.Farm, text: str) -> AbstractAsyncContextManager[Balancer]:
    """The balancer of config `text` in front of `farm` (see `serving`)."""
    return serving(text)


@asynccontextmanager
async def serving(text: str) -> AsyncIterator[Balancer]:
    """The whole balancer of config `text`, each frontend on its own loopback port 0."""
    config = parse(tomllib.loads(text))
    listeners = {
        fe.name: await trio.open_tcp_listeners(0, host="127.0.0.1") for fe in config.frontends
    }
    admin = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        app: Balancer = await nursery.start(
            lambda task_status: serve(
                config, listeners=listeners, admin_listeners=admin, task_status=task_status
            )
        )
        yield app
        nursery.cancel_scope.cancel()


async def client(app: Balancer, farm: casfarm.Farm, source: str | None = None) -> HttpClient:
    host, port = app.addresses["https"]
    return await https_client(host, port, ca_path=farm.ca_path, server_hostname=NAMESPACE,
                              local_address=source)


async def spread(app: Balancer, farm: casfarm.Farm, path: str, n: int) -> Counter[str]:
    """Which servers answer `n` requests for `path`, each on a new connection."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        c = await client(app, farm)
        try:
            response = await c.request("GET", path)
        finally:
            await c.aclose()
        assert response.status == 200, (path, response.status, response.body[:200])
        seen[response.header("x-feserver") or "?"] += 1
    return seen


async def wait_for(condition: Callable[[], bool], limit: float = 10.0) -> None:
    with trio.fail_after(limit):
        while not condition():
            await trio.sleep(0.05)


async def test_one_inactive_component_moves_only_its_protocol() -> None:
    async with casfarm.running(servers=3) as farm, balancer(farm, farm_config(farm)) as app:
        assert set(await spread(app, farm, "/EWS/Exchange.asmx", 6)) == {"CAS1", "CAS2", "CAS3"}
        farm.set_component("cas1", "EwsProxy", "Inactive", requester="HealthApi")
        await wait_for(lambda: not app.pools["ews"].member("cas1").eligible)
        ews = await spread(app, farm, "/EWS/Exchange.asmx", 6)
        owa = await spread(app, farm, "/owa/", 6)
        assert "CAS1" not in ews and sum(ews.values()) == 6
        assert owa["CAS1"] == 2
        assert all(app.pools[p].member("cas1").eligible for p in ("owa", "mapi", "eas", "rpc"))


async def test_keep_alive_client_uses_one_upstream_connection_per_pool() -> None:
    async with casfarm.running(servers=2) as farm, balancer(farm, farm_config(farm)) as app:
        def leases() -> int:
            return sum(m.total for p in ("owa", "ews") for m in app.pools[p].members)

        before = leases()
        c = await client(app, farm)
        try:
            answered = {(await c.request("GET", "/owa/")).header("x-feserver") for _ in range(5)}
            ews = {(await c.request("POST", "/EWS/Exchange.asmx", body=SOAP)).header(
                "x-feserver") for _ in range(3)}
        finally:
            await c.aclose()
        assert len(answered) == 1 and len(ews) == 1
        assert leases() - before == 2  # one for /owa, one for /EWS: never one per request


async def test_crashed_server_costs_no_client_error_on_new_requests() -> None:
    async with casfarm.running(servers=3) as farm, balancer(farm, farm_config(farm)) as app:
        farm.inject("cas2", "crash")
        seen = await spread(app, farm, "/owa/", 12)  # would raise on any non-200
        assert "CAS2" not in seen
        await wait_for(lambda: not app.pools["owa"].member("cas2").eligible)


async def test_graceful_stop_refuses_new_connections_and_ends() -> None:
    async with casfarm.running(servers=1) as farm, balancer(farm, farm_config(farm)) as app:
        await spread(app, farm, "/owa/", 1)
        app.stop()
        with trio.fail_after(10):
            await app.stopped.wait()
        host, port = app.addresses["https"]
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return
        await stream.aclose()
        raise AssertionError("a stopped balancer accepted a connection")


async def test_errors_behind_a_green_probe_eject_the_server_after_three() -> None:
    async with casfarm.running(servers=3) as farm, balancer(farm, farm_config(farm)) as app:
        await spread(app, farm, "/EWS/Exchange.asmx", 6)  # every server has a good record
        farm.inject("cas1", "errors", vdir="ews", status=500)
        statuses: Counter[tuple[str, int]] = Counter()
        for i in range(30):
            # Many users: one client alone cannot eject, and EWS's 500s need two.
            c = await client(app, farm, f"127.0.1.{1 + i}")
            try:
                response = await c.request("POST", "/EWS/Exchange.asmx", body=SOAP)
            finally:
                await c.aclose()
            statuses[(response.header("x-feserver") or "?", response.status)] += 1
        assert statuses[("CAS1", 500)] == 3  # then ejected from the EWS pool
        assert sum(n for (server, _), n in statuses.items() if server == "CAS1") == 3
        assert app.pools["owa"].member("cas1").eligible  # probes still green everywhere
