"""Outlier ejection in the whole balancer over real sockets: visible through the admin API,
one-client-proof, and EWS-aware."""

from __future__ import annotations

import json
from collections import Counter

import casfarm
import trio
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP

from lb.app import Balancer
from tests.authclients import ntlm_session, post
from tests.smoke.test_admin_app import admin_get
from tests.smoke.test_app_l7 import NAMESPACE, balancer, client, farm_config, spread, wait_for


async def post_ews(
    app: Balancer, farm: casfarm.Farm, n: int, sources: list[str]
) -> Counter[tuple[str, int]]:
    """`n` EWS calls, each on a new connection from the next of `sources`, by (server, status)."""
    seen: Counter[tuple[str, int]] = Counter()
    for i in range(n):
        c = await client(app, farm, sources[i % len(sources)])
        try:
            response = await c.request("POST", "/EWS/Exchange.asmx", body=SOAP)
        finally:
            await c.aclose()
        seen[(response.header("x-feserver") or "?", response.status)] += 1
    return seen


async def test_an_ejected_server_shows_in_status_page_and_metrics() -> None:
    async with casfarm.running(servers=3) as farm, balancer(farm, farm_config(farm)) as app:
        await spread(app, farm, "/EWS/Exchange.asmx", 6)
        farm.inject("cas1", "errors", vdir="ews", status=500)
        users = [f"127.0.2.{i}" for i in range(1, 31)]
        seen = await post_ews(app, farm, 30, users)
        assert seen[("CAS1", 500)] == 3
        assert app.admin_address is not None
        answer = await admin_get(app.admin_address, "/status")
        assert answer.startswith(b"HTTP/1.1 200")
        document = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        ews = {s["name"]: s for s in document["pools"]["ews"]["servers"]}
        assert ews["cas1"]["label"].startswith("EJECTED ") and ews["cas1"]["kind"] == "ejected"
        assert 0 < ews["cas1"]["ejected_for"] <= 30
        assert ews["cas1"]["check"] == "UP"  # its probe is green: only real requests fail
        assert ews["cas2"]["ejected_for"] is None
        owa = {s["name"]: s for s in document["pools"]["owa"]["servers"]}
        assert owa["cas1"]["ejected_for"] is None  # only the EWS pool lost it
        page = await admin_get(app.admin_address, "/")
        assert b"EJECTED " in page
        metrics = (await admin_get(app.admin_address, "/metrics")).decode()
        assert 'caslb_server_ejected{pool="ews",server="cas1"} 1.0' in metrics
        assert 'caslb_server_ejected{pool="ews",server="cas2"} 0.0' in metrics
        assert 'caslb_server_status{pool="ews",server="cas1",state="UP"} 1.0' in metrics


async def test_one_ews_client_whose_calls_fault_ejects_no_server() -> None:
    async with casfarm.running(servers=3) as farm, balancer(farm, farm_config(farm)) as app:
        farm.inject("cas1", "errors", vdir="ews", status=500)  # a SOAP fault, to this client
        seen = await post_ews(app, farm, 30, ["127.0.3.1"])
        assert seen[("CAS1", 500)] == 10  # it keeps its share: the fault is the caller's
        assert app.pools["ews"].ejections.ejected(trio.current_time()) == frozenset()


async def test_one_ews_client_sending_bad_soap_ejects_no_server() -> None:
    """casfarm's own SOAP fault (HTTP 500, soap:Fault ErrorSchemaValidation), 30 times to one
    NTLM client: the client's fault, not the servers', so every server stays in the pool."""
    async with casfarm.running(servers=3, auth=True) as farm, \
            balancer(farm, farm_config(farm)) as app:  # fmt: skip
        await wait_for(lambda: all(m.eligible for p in app.pools.values() for m in p.members))
        host, port = app.addresses["https"]
        session = ntlm_session(farm.ca_path, NAMESPACE)
        url = f"https://{host}:{port}/EWS/Exchange.asmx"
        seen = Counter()
        for _ in range(30):
            answer = await post(session, url, b"<not-soap/>")
            seen[(answer.status, answer.server)] += 1
        session.close()
        assert {status for status, _ in seen} == {500}
        assert app.pools["ews"].ejections.ejected(trio.current_time()) == frozenset()


async def get_owa(app: Balancer, farm: casfarm.Farm, n: int, source: str) -> Counter[str]:
    """`n` OWA requests, each on a new connection from `source`, by server."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        c = await client(app, farm, source)
        try:
            response = await c.request("GET", "/owa/")
        finally:
            await c.aclose()
        seen[response.header("x-feserver") or "?"] += response.status >= 500
    return seen


async def test_one_client_among_many_cannot_eject_a_server() -> None:
    async with casfarm.running(servers=3) as farm, balancer(farm, farm_config(farm)) as app:
        for source in ("127.0.4.1", "127.0.4.2"):  # the OWA pool has seen two clients
            await get_owa(app, farm, 3, source)
        farm.inject("cas1", "errors", vdir="owa", status=500)
        failed = await get_owa(app, farm, 15, "127.0.4.1")  # only one of them asks now
        assert failed["CAS1"] == 5
        assert app.pools["owa"].ejections.ejected(trio.current_time()) == frozenset()
        failed = await get_owa(app, farm, 3, "127.0.4.2")  # a second client fails there too
        assert failed["CAS1"] == 1
        assert app.pools["owa"].ejections.ejected(trio.current_time()) == {"cas1"}
