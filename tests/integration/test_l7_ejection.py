"""Outlier ejection belongs to the pool: two L7 frontends on one pool share one count and
one ejection; a check UP after DOWN lifts it; a reload that keeps the pool keeps it."""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11
import trio
from prometheus_client import CollectorRegistry

from lb.build import build_http
from lb.config import Config, parse
from lb.l7.frontend import HttpFrontend
from lb.l7.headers import header_value
from lb.metrics import Metrics
from lb.pool import Pool
from probes.state import CheckState
from tests.integration.test_l7_rig import Client, Farm, ServerSide

CONFIG = """
[frontends.a]
bind = "127.0.0.1:8443"
mode = "http"
routes = { "/owa" = "owa" }
[frontends.b]
bind = "127.0.0.1:8444"
mode = "http"
routes = { "/owa" = "owa" }
[pools.owa]
protocol = "owa"
check = false
servers = [
  { name = "cas1", address = "127.0.0.11:443" },
  { name = "cas2", address = "127.0.0.12:443" },
  { name = "cas3", address = "127.0.0.13:443" },
]
"""


async def broken(side: ServerSide, request: h11.Request) -> None:
    await side.read_body()
    await side.respond(500, b"kerberos broken")


@dataclass
class Two:
    config: Config
    pools: dict[str, Pool]
    farm: Farm
    frontends: dict[str, HttpFrontend]
    metrics: Metrics
    nursery: trio.Nursery

    def build(self, config: Config) -> None:
        self.config = config
        for fe in config.frontends:
            self.frontends[fe.name] = build_http(
                fe, config, self.pools, connector=self.farm.connect,  # type: ignore[arg-type]
                report=lambda *r: None, metrics=self.metrics,
            )

    async def get(self, frontend: str, client: str, path: str = "/owa/") -> tuple[str, int]:
        """One request on a new connection from `client`: (server, status)."""
        ours, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.frontends[frontend].handle, theirs, client)
        async with ours:
            head, _ = await Client(ours).request("GET", path)
        server = header_value(head.headers, b"x-feserver") or b"-"
        return server.decode().lower(), head.status_code

    def ejected(self, frontend: str) -> frozenset[str]:
        return self.frontends[frontend].ejected("owa", trio.current_time())


@contextlib.asynccontextmanager
async def two_frontends(text: str = CONFIG) -> AsyncIterator[Two]:
    config = parse(tomllib.loads(text))
    pools = {name: Pool(pc) for name, pc in config.pools.items()}
    async with trio.open_nursery() as nursery:
        two = Two(config, pools, Farm(nursery), {}, Metrics(CollectorRegistry()), nursery)
        two.build(config)
        yield two
        nursery.cancel_scope.cancel()


async def eject_cas1(two: Two) -> list[tuple[str, int]]:
    """Round robin through both frontends, one client each, until cas1 is out."""
    for i in range(6):  # every server earns a good record first
        await two.get("ab"[i % 2], f"10.0.0.{1 + i % 2}")
    two.farm.handlers = {"cas1": broken}
    seen = []
    for i in range(12):
        seen.append(await two.get("ab"[i % 2], f"10.0.0.{1 + i % 2}"))
    return seen


async def test_two_frontends_on_one_pool_share_one_count_and_one_ejection() -> None:
    async with two_frontends() as two:
        seen = await eject_cas1(two)
        errors = [s for s in seen if s[1] == 500]
        assert errors == [("cas1", 500)] * 3  # three in all, not three per frontend
        assert two.ejected("a") == two.ejected("b") == {"cas1"}
        assert two.pools["owa"].ejections.ejected(trio.current_time()) == {"cas1"}
        assert {s for s, _ in seen[-4:]} <= {"cas2", "cas3"}


async def test_a_check_up_after_down_lifts_the_ejection_for_every_frontend() -> None:
    async with two_frontends() as two:
        await eject_cas1(two)
        two.farm.handlers = {}  # it restarted
        pool = two.pools["owa"]
        pool.set_check_state("cas1", CheckState.DOWN, trio.current_time())
        pool.set_check_state("cas1", CheckState.UP, trio.current_time())
        assert two.ejected("a") == two.ejected("b") == frozenset()
        served = {await two.get("ab"[i % 2], "10.0.0.1") for i in range(6)}
        assert ("cas1", 200) in served


async def test_a_reload_that_keeps_the_pool_keeps_its_ejection() -> None:
    async with two_frontends() as two:
        await eject_cas1(two)
        old = dict(two.frontends)
        new = parse(tomllib.loads(CONFIG + "retries = 2\n[pools.owa.outlier]\n"
                                  'base_ejection_time = "60s"\n'))
        two.pools["owa"].reconfigure(new.pools["owa"], trio.current_time())
        two.build(new)  # the pool's config changed: the app rebuilds its http frontends
        assert two.frontends["a"] is not old["a"]
        assert two.ejected("a") == two.ejected("b") == {"cas1"}
        seen = {await two.get("ab"[i % 2], "10.0.0.1") for i in range(6)}
        assert {s for s, _ in seen} == {"cas2", "cas3"}


async def test_outlier_false_turns_detection_off_for_the_pool() -> None:
    off = CONFIG.replace("check = false", "check = false\noutlier = false")
    async with two_frontends(off) as two:
        seen = await eject_cas1(two)
        assert len([s for s in seen if s[1] == 500]) == 4
        assert two.ejected("a") == two.ejected("b") == frozenset()

