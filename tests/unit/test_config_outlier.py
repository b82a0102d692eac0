"""`[pools.NAME.outlier]`: outlier detection per pool, its defaults, and its errors by key path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import typer

from lb.cli._config import load_or_exit
from lb.config import ConfigError, parse
from lb.config.model import DEFAULT_OUTLIER
from tests.unit.test_config_shorthand import FARM, TLS

BASE = """
[frontends.web]
bind = "127.0.0.1:8443"
mode = "http"
routes = { "/EWS" = "ews" }
[pools.ews]
protocol = "ews"
servers = [{ name = "cas1", address = "127.0.0.11:443" }]
"""


def _pool(extra: str = "") -> object:
    return parse(tomllib.loads(BASE + extra)).pools["ews"].outlier


def _errors(extra: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(BASE + extra))
    return info.value.errors


def test_a_pool_runs_outlier_detection_with_todays_defaults() -> None:
    assert _pool() == DEFAULT_OUTLIER
    assert _pool("outlier = true\n") == DEFAULT_OUTLIER
    assert (DEFAULT_OUTLIER.consecutive_errors, DEFAULT_OUTLIER.consecutive_gateway_failures,
            DEFAULT_OUTLIER.base_ejection_time, DEFAULT_OUTLIER.max_ejection_percent) == (
        3, 3, 30.0, 10.0)


def test_every_key_is_read() -> None:
    settings = _pool("""
[pools.ews.outlier]
consecutive_5xx = 7
consecutive_gateway_errors = 2
interval = "20s"
base_ejection_time = "45s"
max_ejection_percent = 50
""")
    assert settings == DEFAULT_OUTLIER.__class__(
        consecutive_errors=7, consecutive_gateway_failures=2, window=20.0,
        base_ejection_time=45.0, max_ejection_percent=50,
    )


@pytest.mark.parametrize("off", ["outlier = false\n", "[pools.ews.outlier]\nenabled = false\n"])
def test_outlier_detection_can_be_turned_off(off: str) -> None:
    assert _pool(off) is None


@pytest.mark.parametrize(("snippet", "path", "problem"), [
    ("outlier = 3\n", "pools.ews.outlier", "must be a table, got 3"),
    ("[pools.ews.outlier]\nconsecutive_5xx = 0\n", "pools.ews.outlier.consecutive_5xx",
     "must be an integer from 1 to 10000, got 0"),
    ("[pools.ews.outlier]\nconsecutive_gateway_errors = true\n",
     "pools.ews.outlier.consecutive_gateway_errors",
     "must be an integer from 1 to 10000, got true"),
    ("[pools.ews.outlier]\ninterval = \"0s\"\n", "pools.ews.outlier.interval",
     "must be longer than 0s, got \"0s\""),
    ("[pools.ews.outlier]\nbase_ejection_time = \"10m\"\n",
     "pools.ews.outlier.base_ejection_time", "must be at most 5m (the longest ejection)"),
    ("[pools.ews.outlier]\nmax_ejection_percent = 101\n",
     "pools.ews.outlier.max_ejection_percent", "must be an integer from 0 to 100, got 101"),
    ("[pools.ews.outlier]\nenabled = \"no\"\n", "pools.ews.outlier.enabled",
     "must be true or false, got \"no\""),
    ("[pools.ews.outlier]\nconsecutive_errors = 3\n", "pools.ews.outlier.consecutive_errors",
     "unknown key"),
])
def test_each_mistake_names_its_key_path(snippet: str, path: str, problem: str) -> None:
    errors = _errors(snippet)
    assert [e for e in errors if e[0] == path] == [(path, problem)], errors


def test_a_bad_outlier_table_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "caslb.toml"
    config.write_text(BASE + "[pools.ews.outlier]\nconsecutive_5xx = -1\n")
    with pytest.raises(typer.Exit) as info:
        load_or_exit(config)
    assert info.value.exit_code == 2
    assert "error: pools.ews.outlier.consecutive_5xx:" in capsys.readouterr().err


def test_the_exchange_shorthand_keeps_todays_defaults() -> None:
    config = parse(tomllib.loads(FARM.format(mode="l7") + TLS))
    assert {name: pool.outlier for name, pool in config.pools.items()} == {
        name: DEFAULT_OUTLIER for name in config.pools
    }
