"""The L7 frontend over real loopback sockets and TLS both ways, in front of casfarm.

The frontend is built directly (no config) over a round-robin pool from the
integration rig, so these tests exercise the proxy alone: health probes play
no part, and a crashed server stays a candidate the proxy must route around.
"""

from __future__ import annotations

import contextlib
import logging
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import casfarm
import h11
import pytest
import trio
import trustme

from lb.l7.events import RecordingEvents, Termination
from lb.l7.frontend import HttpFrontend
from lb.l7.routing import RouteTable
from lb.l7.settings import HttpFrontendSettings
from lb.l7.upstream import UpstreamSettings
from lb.tls import Certificate, client_context, server_context
from probes.outlier import OutlierSettings
from tests.farmclient import HttpClient, https_client
from tests.integration.test_l7_rig import ROUTES, FakeMember, FakePool, ejections_for

NAMESPACE = "mail.lab.local"


@dataclass
class Front:
    port: int
    frontend: HttpFrontend
    pools: dict[str, FakePool]
    events: RecordingEvents
    ca_file: Path

    async def client(self) -> HttpClient:
        return await https_client(
            "127.0.0.1", self.port, ca_path=self.ca_file, server_hostname=NAMESPACE
        )

    async def get(self, path: str, method: str = "GET", body: bytes = b"") -> tuple[int, str]:
        """One request on a fresh connection: (status, X-FEServer)."""
        c = await self.client()
        try:
            response = await c.request(method, path, body=body)
        finally:
            await c.aclose()
        return response.status, response.header("x-feserver") or "-"


@asynccontextmanager
async def l7_front(
    farm: casfarm.Farm,
    tmp_path: Path,
    *,
    upstream_ca: Path | None = None,
    verify: bool = True,
    outlier: OutlierSettings | None = None,
    handshake_timeout: float = 10.0,
) -> AsyncIterator[Front]:
    ca = trustme.CA()
    ca_file = tmp_path / "front-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = tmp_path / "front.pem"
    ca.issue_cert(NAMESPACE).private_key_and_cert_chain_pem.write_to_path(str(leaf))
    settings = HttpFrontendSettings(
        name="https",
        routes=RouteTable(vdirs=ROUTES),
        tls=server_context(Certificate(leaf)),
        handshake_timeout=handshake_timeout,
    )
    pools = {
        name: FakePool(
            name,
            [FakeMember(s.name, s.host, s.ports["https"], s.fqdn) for s in farm.servers],
        )
        for name in sorted(set(ROUTES.values()))
    }
    tls = client_context(upstream_ca or farm.ca_path, verify=verify)
    events = RecordingEvents()
    frontend = HttpFrontend(
        settings,
        pools,  # type: ignore[arg-type]
        upstream=UpstreamSettings(connect_timeout=2, tls=tls, response_timeout=10),
        events=events,
        ejections=ejections_for(pools, outlier),
    )
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(frontend.serve, listeners)
        yield Front(port, frontend, pools, events, ca_file)
        nursery.cancel_scope.cancel()


async def test_each_vdir_reaches_its_pool_over_tls_both_ways(tmp_path: Path) -> None:
    paths = {
        "/owa/": "owa",
        "/EWS/Exchange.asmx": "ews",
        "/mapi/emsmdb/": "mapi",
        "/Autodiscover/autodiscover.json": "autodiscover",
        "/OAB/x/oab.xml": "oab",
    }
    async with casfarm.running(servers=3) as farm, l7_front(farm, tmp_path) as front:
        c = await front.client()
        try:
            for path in paths:
                response = await c.request("GET", path)
                assert response.status == 200, (path, response.body[:200])
                assert response.header("x-feserver") in {"CAS1", "CAS2", "CAS3"}
        finally:
            await c.aclose()
        seen = Counter(vdir for counts in farm.requests.values() for vdir in counts)
    assert [r.pool for r in front.events.requests] == list(paths.values())
    assert set(seen) >= {"owa", "ews", "mapi", "autodiscover", "oab"}
    # One keep-alive client, five pools: one upstream connection per pool, no more.
    assert sum(m.total for p in front.pools.values() for m in p.members) == 5


async def test_bridging_with_the_wrong_ca_fails_clearly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = tmp_path / "wrong-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong))
    async with (
        casfarm.running(servers=2) as farm,
        l7_front(farm, tmp_path, upstream_ca=wrong) as front,
    ):
        status, _ = await front.get("/owa/")
    assert status == 503
    assert any("certificate verify failed" in r.getMessage() for r in caplog.records)
    assert front.events.requests[0].termination is Termination.NO_SERVER


async def test_bridging_without_verification_works_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = tmp_path / "wrong-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong))
    async with (
        casfarm.running(servers=2) as farm,
        l7_front(farm, tmp_path, upstream_ca=wrong, verify=False) as front,
    ):
        assert (await front.get("/owa/"))[0] == 200
    assert any("OFF" in r.getMessage() for r in caplog.records if r.name == "caslb.tls")


async def test_rpc_channels_and_big_downloads_stream_with_flat_memory(tmp_path: Path) -> None:
    in_size = out_size = 24 << 20
    piece = b"\x05" * 65536
    target = "/rpc/rpcproxy.dll?mbx@lab.local:6001"
    async with (
        casfarm.running(servers=1, oab_size=out_size, rpc_out_interval=0.01) as farm,
        l7_front(farm, tmp_path) as front,
    ):
        in_ch, out_ch, oab = await front.client(), await front.client(), await front.client()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            await out_ch.send_request("RPC_OUT_DATA", target, [("content-length", "76")], b"r" * 76)
            head = await out_ch.read_head()
            assert head.status_code == 200
            await in_ch.send_request(
                "RPC_IN_DATA", target, [("content-length", str(1 << 30))], end=False
            )
            await oab.send_request("GET", "/OAB/x/full.lzx")
            assert (await oab.read_head()).status_code == 200
            downloaded = pdus = 0
            for _ in range(in_size // len(piece)):
                await in_ch.send_body(piece)  # the IN channel never gets an answer
                downloaded += len(await oab.read_data() or b"")
            while (data := await oab.read_data()) is not None:
                downloaded += len(data)
            while pdus < 3:
                pdus += bool(await out_ch.read_data())
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
            for c in (in_ch, out_ch, oab):
                await c.aclose()
        with trio.fail_after(5):
            while len(front.events.requests) < 3:
                await trio.sleep(0.01)
    assert downloaded == out_size
    records = {r.method: r for r in front.events.requests}
    assert records["RPC_IN_DATA"].bytes_in >= in_size - len(piece)
    assert records["RPC_IN_DATA"].status is None  # it never had a response
    assert records["RPC_IN_DATA"].termination is Termination.CLIENT_ABORT  # not a bad request
    # 48 MB went through; the balancer, the farm and the clients together held a few MB.
    assert peak < 6 << 20, f"peak traced memory {peak} bytes"


async def test_crashed_server_under_load_yields_no_client_error_on_new_requests(
    tmp_path: Path,
) -> None:
    statuses: Counter[int] = Counter()
    servers: Counter[str] = Counter()
    crashed = trio.Event()

    async def worker(front: Front, n: int) -> None:
        c = await front.client()  # a kept-alive client, its upstream may be on cas2
        try:
            for i in range(n):
                response = await c.request("GET", f"/owa/{i}")
                statuses[response.status] += 1
                servers[response.header("x-feserver") or "-"] += crashed.is_set()
                status, server = await front.get(f"/EWS/Exchange.asmx?{i}")
                statuses[status] += 1
                servers[server] += crashed.is_set()
        finally:
            await c.aclose()

    async with (
        casfarm.running(servers=3) as farm,
        l7_front(farm, tmp_path) as front,
        trio.open_nursery() as nursery,
    ):
        for _ in range(3):
            nursery.start_soon(worker, front, 12)
        while sum(statuses.values()) < 15:
            await trio.sleep(0.005)
        farm.inject("cas2", "crash")
        crashed.set()
    assert statuses == {200: 72}
    assert servers["CAS2"] == 0
    assert any(server == "cas2" for _, server, _ in front.events.retries)


async def test_outlier_detection_ejects_a_5xx_only_server_behind_a_green_probe(
    tmp_path: Path,
) -> None:
    outlier = OutlierSettings(consecutive_errors=5, max_ejection_percent=34)
    async with (
        casfarm.running(servers=3) as farm,
        l7_front(farm, tmp_path, outlier=outlier) as front,
    ):
        farm.inject("cas1", "errors", vdir="ews", status=500)
        results = Counter([await front.get("/EWS/Exchange.asmx") for _ in range(30)])
        owa = Counter([await front.get("/owa/") for _ in range(6)])
    assert results[(500, "CAS1")] == 5  # then ejected: HAProxy would have failed 10
    assert sum(n for (status, _), n in results.items() if status == 200) == 25
    assert owa[(200, "CAS1")] == 2  # only the EWS pool lost it
    assert [(p, e.server) for p, e in front.events.ejections] == [("ews", "cas1")]


async def test_outlier_detection_ignores_a_farm_wide_burst(tmp_path: Path) -> None:
    outlier = OutlierSettings(consecutive_errors=3, max_ejection_percent=100)
    async with (
        casfarm.running(servers=3) as farm,
        l7_front(farm, tmp_path, outlier=outlier) as front,
    ):
        for s in farm.servers:
            farm.inject(s.name, "errors", vdir="ews", status=503)
        burst = Counter([(await front.get("/EWS/Exchange.asmx"))[0] for _ in range(15)])
        for s in farm.servers:
            farm.clear(s.name)
        after = Counter([(await front.get("/EWS/Exchange.asmx"))[1] for _ in range(6)])
    assert burst == {503: 15}
    assert front.events.ejections == []
    assert after == {"CAS1": 2, "CAS2": 2, "CAS3": 2}


async def test_failed_and_stalled_handshakes_cost_one_connection_and_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="caslb.l7")
    async with (
        casfarm.running(servers=1) as farm,
        l7_front(farm, tmp_path, handshake_timeout=0.2) as front,
    ):
        garbage = await trio.open_tcp_stream("127.0.0.1", front.port)
        await garbage.send_all(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP on the TLS port
        with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
            while await garbage.receive_some(100):  # perhaps an alert, then the close
                pass
        await garbage.aclose()
        stalled = await trio.open_tcp_stream("127.0.0.1", front.port)
        try:
            with trio.fail_after(5):
                assert await stalled.receive_some(100) == b""  # closed by the timeout
        finally:
            await stalled.aclose()
        assert (await front.get("/owa/"))[0] == 200  # the listener lives on
    reasons = [reason for _, reason in front.events.handshake_failures]
    assert len(reasons) == 2
    assert any("timeout" in r for r in reasons)


async def test_malformed_requests_get_4xx_while_others_are_served(tmp_path: Path) -> None:
    async with casfarm.running(servers=1) as farm, l7_front(farm, tmp_path) as front:
        good = await front.client()
        bad = await front.client()
        try:
            assert (await good.request("GET", "/owa/")).status == 200
            await bad.stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            bad.conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            bad.conn.send(h11.EndOfMessage())
            assert (await bad.read_response()).status == 400
            assert (await good.request("GET", "/owa/")).status == 200
        finally:
            await good.aclose()
            await bad.aclose()
