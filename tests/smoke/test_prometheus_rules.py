"""The shipped alert rules: valid, unit-tested with promtool, and about series caslb exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lb.metrics.collectors import PoolCollector, no_check_results
from lb.metrics.series import COUNTERS, GAUGES, HISTOGRAMS, PREFIX

pytestmark = pytest.mark.smoke

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RULES = EXAMPLES / "prometheus-rules.yml"
TESTS = EXAMPLES / "prometheus-rules.test.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: .ci/run installs Debian's prometheus package"
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60,
                          cwd=EXAMPLES)


def test_the_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = _promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_test_that_fires_it() -> None:
    alerts = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M)
    tests = TESTS.read_text()
    fired = set(re.findall(r"alertname: (\w+)\n\s*exp_alerts:\n\s*- exp_labels", tests))
    assert len(alerts) >= 10 and set(alerts) == fired


def test_the_rules_speak_only_of_series_caslb_exports() -> None:
    exported = {PREFIX + s.name + "_total" for s in COUNTERS.values()}
    exported |= {PREFIX + s.name + suffix for s in HISTOGRAMS.values()
                 for suffix in ("_bucket", "_sum", "_count")}
    exported |= {PREFIX + s.name for s in GAUGES.values()}
    for family in PoolCollector(dict, no_check_results).describe():
        exported.add(family.name + ("_total" if family.type == "counter" else ""))
    used = set(re.findall(r"\bcaslb_[a-z_]+", RULES.read_text()))
    assert used <= exported, used - exported
