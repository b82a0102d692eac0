"""The server × pool grid over real sockets: a balancer in front of casfarm, states made
on the farm and through the admin API, read back from `/status`, `/`, `caslb status`,
and from a screenshot of the page in headless chromium."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import casfarm
import pytest
import trio

from lb.app import Balancer
from tests.pngcheck import read_png
from tests.smoke.test_admin_http import http
from tests.smoke.test_admin_pools import cli
from tests.smoke.test_app_l7 import balancer, farm_config, wait_for

pytestmark = pytest.mark.smoke

WIDTH, HEIGHT = 1280, 900


def config(farm: casfarm.Farm) -> str:
    # A transition in progress is checked again after fastinter: a long one
    # holds "UP 1/2" still while the test reads it. Slow start ramps over a minute.
    return farm_config(farm, extra='slowstart = "60s"').replace(
        'fastinter = "100ms"', 'fastinter = "60s"'
    )


def label(app: Balancer, pool: str, server: str) -> str | None:
    progress = app.states.check_progress(pool, server)
    return None if progress is None else progress.label


async def post(port: int, target: str) -> None:
    status, _, body = await http(port, "POST", target)
    assert status == 200, body


@asynccontextmanager
async def degraded() -> AsyncIterator[tuple[Balancer, int]]:
    """Two CAS servers, each state of the grid somewhere:

    ews cas1 UP 1/2 (failing, one check left), owa cas2 DRAIN, mapi cas2 in
    slow start, eas empty (both in MAINT), the rest UP.
    """
    async with casfarm.running(servers=2) as farm, balancer(farm, config(farm)) as app:
        assert app.admin_address is not None
        port = app.admin_address[1]
        # A fresh probe sits one failure from DOWN until its first pass.
        await wait_for(lambda: all(
            label(app, pool, m.name) == "UP" for pool in app.pools for m in app.pools[pool].members
        ))
        farm.set_component("cas1", "EwsProxy", "Inactive", requester="HealthApi")
        await wait_for(lambda: label(app, "ews", "cas1") == "UP 1/2")
        await post(port, "/servers/cas2/drain?protocol=owa")
        await post(port, "/servers/cas2/drain?protocol=mapi")
        await post(port, "/servers/cas2/enable?protocol=mapi")
        await post(port, "/servers/cas1/maint?protocol=eas")
        await post(port, "/servers/cas2/maint?protocol=eas")
        yield app, port


def cell(doc: dict[str, Any], pool: str, server: str) -> dict[str, Any]:
    [found] = [s for s in doc["pools"][pool]["servers"] if s["name"] == server]
    return found


async def test_status_page_and_cli_show_every_state_in_the_grid() -> None:
    async with degraded() as (app, port):
        status, _, body = await http(port, "GET", "/status")
        assert status == 200
        doc = json.loads(body)
        ews1 = cell(doc, "ews", "cas1")
        assert (ews1["state"], ews1["label"], ews1["kind"]) == ("UP", "UP 1/2", "going-down")
        assert ews1["check_progress"] == {"health": 2, "rise": 2, "fall": 2}
        assert ews1["ejected_for"] is None
        assert cell(doc, "owa", "cas2")["label"] == "DRAIN"
        mapi2 = cell(doc, "mapi", "cas2")
        assert mapi2["kind"] == "slowstart" and re.fullmatch(r"UP \d+%", mapi2["label"])
        assert 0 < mapi2["effective_weight"] < mapi2["weight"]
        assert 0 <= mapi2["seconds_since_change"] < 30
        assert doc["pools"]["eas"]["no_server"] is True
        assert doc["pools"]["owa"]["no_server"] is False

        status, _, body = await http(port, "GET", "/")
        page = body.decode()
        assert status == 200 and page.index('class="grid"') < page.index("pool owa")
        assert '<th class="pool NO-SERVER">eas<small>NO SERVER</small></th>' in page
        assert '<td class="going-down">UP 1/2</td>' in page
        assert '<td class="drain">DRAIN</td>' in page

        code, out, _ = await cli("status", "--admin", f"http://127.0.0.1:{port}")
        assert code == 0
        grid = [line.split(maxsplit=1) for line in out.split("\n\n")[0].splitlines()]
        assert grid[0][0] == "server" and grid[0][1].split() == sorted(app.pools)
        assert grid[1] == ["NO", "SERVER"]  # the notes row: eas, the first pool
        assert [row[0] for row in grid[2:]] == ["cas1", "cas2"]
        assert "UP 1/2" in grid[2][1] and "DRAIN" in grid[3][1]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
async def test_a_screenshot_of_the_status_page_shows_the_coloured_grid(tmp_path: Path) -> None:
    shot = tmp_path / "status.png"
    async with degraded() as (_, port):
        with trio.fail_after(120):
            await trio.run_process(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}",
                 f"http://127.0.0.1:{port}/"],
                capture_stdout=True, capture_stderr=True,
            )
    image = read_png(shot)
    assert (image.width, image.height) == (WIDTH, HEIGHT)
    colours = image.colours(step=2)
    assert len(colours) > 10, "a blank page"
    # The grid's own colours, each over a real area: a cell is about 100 × 30 px.
    for name, rgb in {"UP": (0x8F, 0xDC, 0x8F), "UP 1/2": (0xFF, 0xE0, 0x66),
                      "DRAIN": (0x8F, 0xB8, 0xFF), "MAINT": (0xB9, 0x9B, 0xE0),
                      "NO SERVER": (0xCC, 0x00, 0x00)}.items():
        assert colours[rgb] > 200, f"no {name} colour in the screenshot"
