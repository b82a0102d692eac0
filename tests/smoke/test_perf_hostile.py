"""`python -m perf hostile --quick` end to end: every attack, the soak, judged from outside.

The harness's own verdicts are what is asserted (every well-behaved channel at
100 %, caslb alive and silent at ERROR, fds back to baseline), never timings.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from perf.hostile.attacks import ATTACKS
from perf.hostile.good import Tally
from perf.hostile.runner import Row
from perf.hostile.soak import Sample, SoakResult

pytestmark = pytest.mark.smoke


def test_quick_run_holds_under_every_attack_and_the_soak_returns_its_fds() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "perf", "hostile", "--quick", "--soak", "6",
         "--reload-every", "2"],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [ln for ln in result.stdout.splitlines()
            if ln.startswith("| ") and "↳" not in ln and not ln.startswith("| attack |")]
    verdicts = {ln.split(" | ")[0][2:]: ln.rsplit(" | ", 1)[1] for ln in rows}
    assert verdicts == {name: "held |" for name in ATTACKS}
    assert "back to baseline" in result.stdout
    assert "reloads" in result.stdout and "Soak verdict: held." in result.stdout


def _channel(ok: int, failed: int) -> dict[str, object]:
    tally = Tally(latencies=[0.001] * ok)
    for _ in range(failed):
        tally.failed("no answer within 5 s")
    return tally.summary()


def test_one_missed_request_or_one_error_line_fails_an_attack() -> None:
    served = {"plain": _channel(100, 0), "admin": _channel(10, 0)}
    assert Row("slowloris", "", served).passed
    assert not Row("slowloris", "", {**served, "tls": _channel(99, 1)}).passed
    assert not Row("slowloris", "", {"plain": _channel(0, 0)}).passed
    assert not Row("slowloris", "", served, ["... ERROR caslb.l7 ..."]).passed


def test_the_soak_fails_when_fds_stay_above_their_baseline() -> None:
    def soaked(after: int, parked: int = 0) -> SoakResult:
        return SoakResult(10, 2, 3, Sample(20, 1000), Sample(200, 2000), Sample(after, 1500),
                          {"plain": _channel(50, 0)}, [], parked)

    assert soaked(22).passed
    assert not soaked(60).fds_returned and not soaked(60).passed
    # an upstream connection parked for other clients holds its fd until its idle life ends
    assert soaked(30, parked=6).passed
    assert not soaked(31, parked=6).passed
