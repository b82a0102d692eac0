"""Background tasks end alone on a bug: one ERROR line, one count, nothing else stops."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from lb.boundary import TASK, guarded
from lb.cli.run import apply_reload

log = logging.getLogger("caslb.test")


async def test_a_task_that_raises_ends_alone_in_one_line_and_one_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[str] = []
    beside_ran = trio.Event()

    async def buggy() -> None:
        raise KeyError("nobody expected this")

    async def beside() -> None:
        await trio.sleep(0.01)
        beside_ran.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(beside)
        assert await guarded(log, "the buggy task", counted.append, buggy) is False
    assert beside_ran.is_set() and counted == [TASK]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "the buggy task failed: KeyError: 'nobody expected this'"
    ]
    assert all(r.exc_info is None for r in errors)  # the traceback only at DEBUG


async def test_cancellation_is_not_an_error() -> None:
    counted: list[str] = []
    with trio.move_on_after(0.01):
        await guarded(log, "a sleeper", counted.append, trio.sleep_forever)
    assert counted == []


async def test_a_reload_that_hits_a_bug_leaves_the_running_config_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config = tmp_path / "caslb.toml"
    config.write_text(
        '[frontends.web]\nbind = "127.0.0.1:19999"\nmode = "tcp"\npool = "p"\n'
        '[pools.p]\nservers = [{ name = "s", address = "127.0.0.1:9" }]\n'
    )
    counted: list[str] = []

    async def reload(new_config: object) -> list[str]:
        raise AttributeError("a bug in applying the plan")

    balancer = SimpleNamespace(reload=reload,
                               metrics=SimpleNamespace(internal_error=counted.append))
    await apply_reload(balancer, config)  # type: ignore[arg-type]
    assert counted == [TASK]
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith(f"reload of {config} failed: AttributeError")
