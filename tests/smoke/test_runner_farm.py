"""The runner with real checks against casfarm: a crash goes DOWN, a recovery comes UP."""

from __future__ import annotations

from collections.abc import Hashable

import casfarm
import trio

from probes.catalog import protocol
from probes.checks import CheckResult, CheckSpec, Target
from probes.runner import ProbeRunner
from probes.state import CheckState, Timing, Transition


async def test_runner_detects_a_crash_and_the_recovery() -> None:
    async with casfarm.running(servers=2, control=False) as farm:
        runner = ProbeRunner(jitter=0.1, seed=1)
        transitions: list[tuple[Hashable, Transition]] = []
        changed = trio.Event()

        def on_result(key: Hashable, result: CheckResult | None, tr: Transition | None) -> None:
            if tr is not None:
                transitions.append((key, tr))
                changed.set()

        runner.subscribe(on_result)
        timing = Timing(inter=0.05, fastinter=0.02, rise=2, fall=2, timeout=0.5)
        spec = CheckSpec.for_protocol(
            protocol("owa"), ca_file=str(farm.ca_path), expect_fqdn=True, timeout=0.5
        )
        for server in farm.servers:
            target = Target(server.fqdn, server.host, server.ports["https"])
            runner.add(server.name, spec, target, timing)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            with trio.fail_after(10):
                while runner.checks_run("cas1") < 2:
                    await trio.sleep(0.01)
                farm.inject("cas1", "crash")
                await changed.wait()
                changed = trio.Event()
                farm.clear("cas1")
                await changed.wait()
            nursery.cancel_scope.cancel()
    assert [(k, t.new) for k, t in transitions] == [
        ("cas1", CheckState.DOWN),
        ("cas1", CheckState.UP),
    ]
    assert "connection refused" in transitions[0][1].reason
    assert runner.health("cas2").state is CheckState.UP
