"""`caslb run` raises the cyclic collector's first threshold before it serves.

At CPython's default (700) a gen0 collection walked the requests in flight
every ~120 requests: 6-7 % of the CPU at 256 kept-alive connections
(docs/benchmarks.md, "The cyclic collector"). The thresholds are process-wide,
so each test puts back what it found.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lb.cli import app
from lb.cli import run as run_module

# Nothing binds these: the test stops the command before it serves.
CONFIG = """\
[frontends.web]
bind = "127.0.0.1:18080"
mode = "http"
default_pool = "web"

[pools.web]
servers = [ { name = "a", address = "127.0.0.1:9" } ]

[admin]
bind = "127.0.0.1:18081"
"""


@pytest.fixture(autouse=True)
def _thresholds_restored() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_start_serves_with_the_raised_threshold() -> None:
    seen: list[tuple[int, int, int]] = []

    async def main() -> None:
        seen.append(gc.get_threshold())

    gc.set_threshold(700, 10, 10)
    assert run_module.start(main) == 0
    # the older generations keep theirs: only gen0's walk was the cost
    assert seen == [(run_module.GEN0_THRESHOLD, 10, 10)]
    assert run_module.GEN0_THRESHOLD >= 10_000


def test_the_run_command_goes_through_it(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The command as typed, up to the point it would serve: the threshold is in force."""
    seen: list[tuple[int, int, int]] = []

    def serve_nothing(main: object, *args: object) -> None:
        seen.append(gc.get_threshold())

    monkeypatch.setattr(run_module, "run_or_exit", serve_nothing)
    config = tmp_path / "caslb.toml"
    config.write_text(CONFIG)
    gc.set_threshold(700, 10, 10)
    result = CliRunner().invoke(app, ["run", str(config), "--log-level", "warning"])
    assert result.exit_code == 0, result.output
    assert [t[0] for t in seen] == [run_module.GEN0_THRESHOLD]
