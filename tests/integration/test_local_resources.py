"""The balancer's own lack of fds is never a server's fault: L7, L4 and the probe runner.

The rigs' connectors raise the EMFILE a connect meets when this process has no
fd left; the real exhaustion, by rlimit, is tests/smoke/test_fd_exhaustion.py.
"""

from __future__ import annotations

import errno
import os

import trio
import trio.testing

from lb.l7.events import Termination
from probes.catalog import CheckKind
from probes.checks import CheckResult, CheckSpec, Reason, Target
from probes.outlier import OutlierSettings
from probes.runner import ProbeRunner
from probes.state import CheckState, Timing
from tests.integration.l4_rig import echo_on_data
from tests.integration.l4_rig import make_rig as make_l4_rig
from tests.integration.test_l7_rig import make_rig as make_l7_rig

ALL = {"cas1", "cas2", "cas3"}


async def test_l7_answers_503_and_blames_no_server_when_out_of_fds() -> None:
    outliers = OutlierSettings(consecutive_errors=1, consecutive_gateway_failures=1)
    async with make_l7_rig(outlier=outliers) as rig, rig.client() as client:
        rig.farm.out_of_fds = set(ALL)
        for _ in range(3):
            head, _ = await client.request("GET", "/owa/")
            assert head.status_code == 503
        rig.farm.out_of_fds = set()
        head, _ = await client.request("GET", "/owa/")
        assert head.status_code == 200
        assert rig.frontend.ejected("owa", trio.current_time()) == frozenset()
    assert [r.termination for r in rig.events.requests][:3] == [Termination.NO_SERVER] * 3
    assert rig.events.retries == []  # no other server was tried: it would fail alike
    assert not [r for r in rig.reports if not r[2]]  # nothing reported as a server's failure


async def test_l4_closes_the_client_and_blames_no_server_when_out_of_fds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        rig = make_l4_rig(n, {"cas1": echo_on_data, "cas2": echo_on_data, "cas3": echo_on_data})
        rig.backends.out_of_fds = set(ALL)
        client = await rig.client()
        await client.send_all(b"a")
        assert await client.receive_some(10) == b""
        rig.backends.out_of_fds = set()
        again = await rig.client()
        await again.send_all(b"b")
        assert (await again.receive_some(10)).endswith(b":b")
        n.cancel_scope.cancel()
    assert rig.reports == [] or all(ok for _, _, ok, _ in rig.reports)
    assert not [k for k in rig.events.counts if k[0] in ("connect_failed", "retried")]
    assert rig.frontend.active == 0


async def test_a_check_that_lacks_fds_is_skipped_not_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timing = Timing(inter=1.0, fastinter=0.5, downinter=2.0, rise=2, fall=1, timeout=1.0)
    calls = 0

    async def starved(spec: CheckSpec, target: Target) -> CheckResult:
        nonlocal calls
        calls += 1
        if calls <= 5:
            return CheckResult(False, Reason.LOCAL_RESOURCES, "too many open files", 0.0)
        return CheckResult(False, Reason.REFUSED, "refused", 0.0)

    published: list[object] = []
    runner = ProbeRunner(jitter=0.0)
    runner.subscribe(lambda key, result, transition: published.append((result, transition)))
    health = runner.add("cas1", CheckSpec(CheckKind.TCP, tls=False),
                        Target("cas1.lab.local", "127.0.0.1", 443), timing, check=starved)
    async with trio.open_nursery() as n:
        await n.start(runner.run)
        while calls < 5:
            await trio.sleep(0.1)
        assert health.state is CheckState.UP  # fall = 1: one real failure would have sufficed
        assert published == [] and runner.checks_run("cas1") == 0
        while calls < 6:
            await trio.sleep(0.1)
        await trio.sleep(0)
        n.cancel_scope.cancel()
    assert health.state is CheckState.DOWN  # the first real failure counts at once
    assert runner.checks_run("cas1") == 1


def test_a_probe_connect_that_meets_emfile_is_a_local_resources_result() -> None:
    from probes.wire import _connect_failure

    failure = _connect_failure(OSError(errno.EMFILE, os.strerror(errno.EMFILE)), "127.0.0.1:443")
    assert failure.reason is Reason.LOCAL_RESOURCES
    assert "too many open files" in failure.detail
    refused = _connect_failure(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "x:1")
    assert refused.reason is Reason.REFUSED
