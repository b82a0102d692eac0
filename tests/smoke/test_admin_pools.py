"""The admin API over loopback on real pools: live metrics, /status, the page, actions, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from lb.admin import serve_admin
from lb.cli import app
from lb.config.model import PoolConfig, ServerConfig
from lb.metrics import Metrics
from lb.pool import Pool
from probes.checks import CheckResult
from probes.state import AdminState, CheckState
from probes.wire import Reason
from tests.smoke.test_admin_http import http

pytestmark = pytest.mark.smoke

Sample = tuple[str, dict[str, str], float]


def make_pools(panic_threshold: float = 0.0) -> dict[str, Pool]:
    def server(name: str, last: int) -> ServerConfig:
        return ServerConfig(name, "127.0.0.1", 1, f"{name}.lab.example", weight=last)

    owa = PoolConfig("owa", (server("cas1", 1), server("cas2", 2), server("cas3", 3)),
                     protocol="owa", panic_threshold=panic_threshold)
    ews = PoolConfig("ews-pool", (server("cas1", 1), server("cas2", 1)), protocol="ews")
    return {p.name: Pool(p) for p in (owa, ews)}


class Balancer:
    """A running admin server on loopback over real pools."""

    def __init__(self, pools: dict[str, Pool], metrics: Metrics, port: int,
                 changes: list[tuple[str, str, AdminState]],
                 checks: dict[tuple[str, str], CheckResult]) -> None:
        self.pools, self.metrics, self.port, self.changes = pools, metrics, port, changes
        self.checks = checks
        self.url = f"http://127.0.0.1:{port}"

    def checked(self, pool: str, server: str, result: CheckResult) -> None:
        """The last check result of `server` in `pool`, as the health wiring keeps it."""
        self.checks[(pool, server)] = result

    async def samples(self, name: str) -> list[Sample]:
        status, _, body = await http(self.port, "GET", "/metrics")
        assert status == 200
        return [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.name == name
        ]

    async def one_hot(self, name: str, pool: str, server: str) -> dict[str, float]:
        return {
            labels["state"]: value
            for _, labels, value in await self.samples(name)
            if labels["pool"] == pool and labels["server"] == server
        }

    async def gauge(self, name: str, **want: str) -> float:
        values = [v for _, labels, v in await self.samples(name) if labels == want]
        assert len(values) == 1, (name, want)
        return values[0]

    async def status(self) -> dict[str, Any]:
        status, headers, body = await http(self.port, "GET", "/status")
        assert status == 200 and headers["content-type"] == "application/json"
        doc: dict[str, Any] = json.loads(body)
        return doc

    async def post(self, target: str) -> tuple[int, dict[str, Any]]:
        status, _, body = await http(self.port, "POST", target)
        return status, json.loads(body)


async def start(nursery: trio.Nursery, pools: dict[str, Pool]) -> Balancer:
    checks: dict[tuple[str, str], CheckResult] = {}

    def last_check(pool: str, server: str) -> CheckResult | None:
        return checks.get((pool, server))

    metrics = Metrics(CollectorRegistry(), pools=lambda: pools, last_check=last_check)
    changes: list[tuple[str, str, AdminState]] = []
    listeners = await nursery.start(
        lambda task_status: serve_admin(
            ("127.0.0.1", 0), pools=pools, metrics=metrics, last_check=last_check,
            task_status=task_status, on_admin=lambda *change: changes.append(change),
        )
    )
    return Balancer(pools, metrics, listeners[0].socket.getsockname()[1], changes, checks)


@pytest.fixture
async def lb(nursery: trio.Nursery) -> Balancer:
    return await start(nursery, make_pools())


def hot(state: str, states: Iterable[str] = ("UP", "DOWN", "DRAIN", "MAINT")) -> dict[str, float]:
    return {s: 1.0 if s == state else 0.0 for s in states}


async def test_server_status_is_one_hot_and_follows_the_pool_live(lb: Balancer) -> None:
    owa = lb.pools["owa"]
    assert await lb.one_hot("caslb_server_status", "owa", "cas1") == hot("UP")
    owa.set_check_state("cas1", CheckState.DOWN, trio.current_time())
    assert await lb.one_hot("caslb_server_status", "owa", "cas1") == hot("DOWN")
    # The other pool's member of the same name has its own health.
    assert await lb.one_hot("caslb_server_status", "ews-pool", "cas1") == hot("UP")
    owa.set_admin("cas1", AdminState.MAINT, trio.current_time())
    assert await lb.one_hot("caslb_server_status", "owa", "cas1") == hot("MAINT")
    owa.set_check_state("cas1", CheckState.UP, trio.current_time())
    owa.set_admin("cas1", AdminState.DRAIN, trio.current_time())
    assert await lb.one_hot("caslb_server_status", "owa", "cas1") == hot("DRAIN")


async def test_pool_gauges_read_live(lb: Balancer) -> None:
    assert await lb.gauge("caslb_pool_active_servers", pool="owa") == 3
    assert await lb.gauge("caslb_pool_servers", pool="owa") == 3
    lb.pools["owa"].set_check_state("cas2", CheckState.DOWN, trio.current_time())
    assert await lb.gauge("caslb_pool_active_servers", pool="owa") == 2
    assert await lb.gauge("caslb_server_eligible", pool="owa", server="cas2") == 0
    assert await lb.gauge("caslb_server_weight", pool="owa", server="cas3") == 3
    assert await lb.gauge("caslb_pool_panic", pool="owa") == 0


async def test_connections_come_from_the_pool_leases(lb: Balancer) -> None:
    owa = lb.pools["owa"]
    member = owa.member("cas2")
    with owa.lease(member), owa.lease(member):
        assert await lb.gauge("caslb_server_current_connections", pool="owa",
                              server="cas2") == 2
    assert await lb.gauge("caslb_server_current_connections", pool="owa", server="cas2") == 0
    assert await lb.gauge("caslb_server_connections_total", pool="owa", server="cas2") == 2


async def test_panic_gauge(nursery: trio.Nursery) -> None:
    lb = await start(nursery, make_pools(panic_threshold=0.5))
    now = trio.current_time()
    lb.pools["owa"].set_check_state("cas1", CheckState.DOWN, now)
    lb.pools["owa"].set_check_state("cas2", CheckState.DOWN, now)
    assert await lb.gauge("caslb_pool_panic", pool="owa") == 1
    assert (await lb.status())["pools"]["owa"]["panic"] is True


async def test_check_status_is_one_hot_over_reasons(lb: Balancer) -> None:
    assert await lb.one_hot("caslb_server_check_status", "owa", "cas1") == {}  # no check yet
    reasons = [r.name for r in Reason]
    lb.checked("owa", "cas1", CheckResult(True, Reason.OK, "", 0.01))
    assert await lb.one_hot("caslb_server_check_status", "owa", "cas1") == hot("OK", reasons)
    lb.checked("owa", "cas1", CheckResult(False, Reason.RESET, "rst", 0.002))
    assert await lb.one_hot("caslb_server_check_status", "owa", "cas1") == hot("RESET", reasons)
    assert await lb.one_hot("caslb_server_check_status", "owa", "cas2") == {}


async def test_status_document_shape(lb: Balancer) -> None:
    lb.metrics.frontend_connection_opened("https")
    lb.checked("owa", "cas2", CheckResult(False, Reason.BAD_STATUS, "HTTP 503", 0.004))
    doc = await lb.status()
    assert doc["frontends"] == {"https": {"current_connections": 1}}
    pools = doc["pools"]
    assert isinstance(pools, dict)
    assert sorted(pools) == ["ews-pool", "owa"]
    owa = pools["owa"]
    assert owa["panic"] is False and owa["active_servers"] == 3
    assert [s["name"] for s in owa["servers"]] == ["cas1", "cas2", "cas3"]
    cas2 = owa["servers"][1]
    assert cas2 == {
        "name": "cas2", "address": "127.0.0.1:1", "fqdn": "cas2.lab.example", "weight": 2,
        "effective_weight": 2, "slowstart": 1.0, "state": "UP", "label": "UP", "kind": "up",
        "check": "UP", "check_progress": None, "admin": "READY", "eligible": True,
        "active": 0, "total": 0, "seconds_since_change": None, "ejected_for": None,
        "last_check": {"ok": False, "reason": "BAD_STATUS", "detail": "HTTP 503",
                       "duration": 0.004},
    }
    assert owa["servers"][0]["last_check"] is None


async def test_drain_defaults_to_every_pool_of_the_server(lb: Balancer) -> None:
    status, body = await lb.post("/servers/cas1/drain")
    assert status == 200
    assert body["server"] == "cas1" and body["admin"] == "DRAIN"
    assert sorted(body["pools"]) == ["ews-pool", "owa"]
    for pool in lb.pools.values():
        assert pool.member("cas1").admin is AdminState.DRAIN
        assert pool.member("cas2").admin is AdminState.READY
    assert await lb.one_hot("caslb_server_status", "ews-pool", "cas1") == hot("DRAIN")
    status, body = await lb.post("/servers/cas1/enable")
    assert status == 200 and body["admin"] == "READY"
    assert lb.changes == [
        ("owa", "cas1", AdminState.DRAIN), ("ews-pool", "cas1", AdminState.DRAIN),
        ("owa", "cas1", AdminState.READY), ("ews-pool", "cas1", AdminState.READY),
    ]
    assert all(p.member("cas1").admin is AdminState.READY for p in lb.pools.values())


async def test_actions_narrowed_by_pool_or_protocol(lb: Balancer) -> None:
    status, body = await lb.post("/servers/cas2/maint?pool=owa")
    assert status == 200 and list(body["pools"]) == ["owa"]
    assert lb.pools["owa"].member("cas2").admin is AdminState.MAINT
    assert lb.pools["ews-pool"].member("cas2").admin is AdminState.READY
    status, body = await lb.post("/servers/cas2/drain?protocol=EWS")
    assert status == 200 and list(body["pools"]) == ["ews-pool"]
    assert lb.pools["ews-pool"].member("cas2").admin is AdminState.DRAIN
    assert lb.pools["owa"].member("cas2").admin is AdminState.MAINT
    status, body = await lb.post("/servers/cas3/drain?protocol=ews")
    assert status == 404
    assert body == {"error": "unknown server 'cas3' in the selected pools"}
    status, body = await lb.post("/servers/cas9/drain")
    assert (status, body) == (404, {"error": "unknown server 'cas9'"})


async def test_status_page_is_a_coloured_self_refreshing_table(lb: Balancer) -> None:
    lb.pools["owa"].set_check_state("cas3", CheckState.DOWN, trio.current_time())
    await lb.post("/servers/cas2/drain?pool=owa")
    status, headers, body = await http(lb.port, "GET", "/")
    page = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert '<meta http-equiv="refresh"' in page
    assert "<script" not in page and "http://" not in page  # self-contained
    assert '<tr class="down"><td>cas3</td>' in page
    assert '<tr class="drain"><td>cas2</td>' in page
    assert '<tr class="up"><td>cas1</td>' in page
    assert page.index('<table class="grid">') < page.index("pool owa (1/3 active)")
    assert "pool owa (1/3 active)" in page


async def test_names_are_escaped_in_the_page(nursery: trio.Nursery) -> None:
    odd = PoolConfig("<b>pool</b>", (ServerConfig("cas&<1>", "127.0.0.1", 1, "x"),))
    lb = await start(nursery, {odd.name: Pool(odd)})
    _, _, body = await http(lb.port, "GET", "/")
    assert "cas&amp;&lt;1&gt;" in body.decode() and "<b>pool</b>" not in body.decode()


async def cli(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = await trio.to_thread.run_sync(lambda: runner.invoke(app, list(args)))
    return result.exit_code, result.stdout, result.stderr


async def test_cli_drain_status_enable_round_trip(lb: Balancer) -> None:
    code, out, _ = await cli("drain", "cas1", "--protocol", "ews", "--admin", lb.url)
    assert code == 0, out
    assert out.splitlines()[0] == "cas1: admin DRAIN in 1 pool(s)"
    assert lb.pools["ews-pool"].member("cas1").admin is AdminState.DRAIN
    assert lb.pools["owa"].member("cas1").admin is AdminState.READY

    lb.checked("owa", "cas2", CheckResult(False, Reason.RESET, "", 0.0015))
    code, out, _ = await cli("status", "--admin", lb.url)
    assert code == 0
    grid, details = out.split("\n\n")
    assert [line.split() for line in grid.splitlines()] == [
        ["server", "ews-pool", "owa"],
        ["cas1", "DRAIN", "UP"],
        ["cas2", "UP", "UP"],
        ["cas3", "-", "UP"],
    ]
    rows = [line.split() for line in details.splitlines()]
    assert rows[0] == ["pool", "server", "state", "admin", "weight", "active", "total",
                       "changed", "last", "check"]
    assert ["ews-pool", "cas1", "DRAIN", "DRAIN", "1", "0", "0", "0s", "ago", "-"] in rows
    assert ["owa", "cas2", "UP", "READY", "2", "0", "0", "-", "RESET", "1.5ms"] in rows

    code, out, _ = await cli("maint", "cas3", "--pool", "owa", "--admin", lb.url)
    assert code == 0 and lb.pools["owa"].member("cas3").admin is AdminState.MAINT
    code, out, _ = await cli("enable", "cas1", "--admin", lb.url)
    assert code == 0 and "in 2 pool(s)" in out
    assert lb.pools["ews-pool"].member("cas1").admin is AdminState.READY

    code, out, _ = await cli("status", "--json", "--admin", lb.url)
    assert code == 0 and json.loads(out)["pools"]["owa"]["servers"][2]["admin"] == "MAINT"
