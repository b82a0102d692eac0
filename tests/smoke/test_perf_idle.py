"""`python -m perf idle` through HAProxy: connections really proxied, RSS read."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from perf.__main__ import app
from perf.failover.designs.haproxy import haproxy_missing

pytestmark = pytest.mark.smoke


@pytest.mark.skipif(haproxy_missing() is not None, reason="haproxy is not installed")
def test_idle_reports_rss_per_connection_through_haproxy() -> None:
    result = CliRunner().invoke(app, ["idle", "--connections", "100", "--designs", "haproxy-tcp"])
    assert result.exit_code == 0, result.output
    found = re.search(r"haproxy-tcp: 100 idle connections, RSS (\d+) -> (\d+) KiB", result.output)
    assert found, result.output
    assert int(found[1]) > 0 and int(found[2]) >= int(found[1])


def test_idle_rejects_unknown_design() -> None:
    result = CliRunner().invoke(app, ["idle", "--designs", "nginx"])
    assert result.exit_code == 2 and "unknown design nginx" in result.output
