"""`caslb status|drain|enable|maint` against a real admin server on loopback.

The CLI is synchronous (urllib), so it runs in a worker thread through typer's
CliRunner while the admin server runs in trio.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner, Result

from lb.admin import serve_admin
from lb.cli import app
from lb.cli.admin import action_path, format_table, status_rows
from lb.metrics import Metrics

pytestmark = pytest.mark.smoke


async def start_admin(
    nursery: trio.Nursery, pools: Mapping[str, Any], *, token: str | None = None
) -> str:
    metrics = Metrics(CollectorRegistry())
    listeners = await nursery.start(
        lambda task_status: serve_admin(
            ("127.0.0.1", 0), pools=pools, metrics=metrics, token=token,
            task_status=task_status,
        )
    )
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def cli(*args: str) -> Result:
    runner = CliRunner()
    return await trio.to_thread.run_sync(lambda: runner.invoke(app, list(args)))


def free_port() -> int:
    """A loopback port nobody listens on (bound then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_balancer_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["drain", "cas1"], ["enable", "cas1"], ["maint", "cas1"]):
        result = await cli(*args, "--admin", url)
        assert result.exit_code == 1, args
        assert f"cannot reach the admin API at {url}" in result.stderr


async def test_bad_admin_url_is_rejected() -> None:
    result = await cli("status", "--admin", "ftp://127.0.0.1:1")
    assert result.exit_code == 1
    assert "bad admin URL 'ftp://127.0.0.1:1'" in result.stderr


async def test_status_of_an_empty_balancer_prints_the_header(nursery: trio.Nursery) -> None:
    url = await start_admin(nursery, {})
    result = await cli("status", "--admin", url)
    assert result.exit_code == 0, result.output
    grid, details = result.stdout.split("\n\n")
    assert grid.split() == ["server"]  # no pools: no columns, no rows
    assert details.split() == ["pool", "server", "state", "admin", "weight", "active", "total",
                               "changed", "last", "check"]


async def test_api_errors_are_printed_with_status(nursery: trio.Nursery) -> None:
    url = await start_admin(nursery, {})
    result = await cli("drain", "ghost", "--admin", url)
    assert result.exit_code == 1
    assert "404 unknown server 'ghost'" in result.stderr
    result = await cli("drain", "ghost", "--pool", "owa", "--admin", url)
    assert "404 unknown pool 'owa'" in result.stderr


async def test_token_from_option_or_environment(nursery: trio.Nursery) -> None:
    url = await start_admin(nursery, {}, token="t0k")
    result = await cli("maint", "cas1", "--admin", url)
    assert result.exit_code == 1 and "401 missing or wrong bearer token" in result.stderr
    result = await cli("maint", "cas1", "--admin", url, "--token", "t0k")
    assert "404 unknown server 'cas1'" in result.stderr  # accepted, then not found
    runner = CliRunner(env={"CASLB_ADMIN": url, "CASLB_ADMIN_TOKEN": "t0k"})
    result = await trio.to_thread.run_sync(lambda: runner.invoke(app, ["maint", "cas1"]))
    assert "404 unknown server 'cas1'" in result.stderr


async def test_pool_and_protocol_together_are_a_usage_error() -> None:
    result = await cli("drain", "cas1", "--pool", "a", "--protocol", "b")
    assert result.exit_code == 2
    assert "not both" in result.output


def test_action_path_quotes_names() -> None:
    assert action_path("cas 1/x", "drain", None, None) == "/servers/cas%201%2Fx/drain"
    assert action_path("cas1", "enable", None, "ews") == "/servers/cas1/enable?protocol=ews"


def test_status_table_layout() -> None:
    doc = {"pools": {"owa": {"panic": True, "servers": [{
        "name": "cas1", "state": "DOWN", "label": "DOWN 1/2", "admin": "READY", "active": 0,
        "total": 12, "weight": 3, "effective_weight": 3, "seconds_since_change": 75.2,
        "last_check": {"reason": "RESET", "duration": 0.0015, "detail": "reset by peer"},
    }, {
        "name": "cas2", "state": "UP", "label": "UP 40%", "admin": "READY", "active": 1,
        "total": 2, "weight": 3, "effective_weight": 1.2, "seconds_since_change": None,
        "last_check": None,
    }]}}}
    rows = status_rows(doc)
    assert rows == [
        ("owa (PANIC)", "cas1", "DOWN 1/2", "READY", "3", "0", "12", "1m15s ago",
         "RESET 1.5ms reset by peer"),
        ("owa (PANIC)", "cas2", "UP 40%", "READY", "1.2 of 3", "1", "2", "-", "-"),
    ]
    table = format_table(("pool", "server"), [("owa", "cas1"), ("eas", "cas22")])
    assert table.splitlines() == ["pool  server", "owa   cas1", "eas   cas22"]
