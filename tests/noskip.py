"""A pytest plugin: with CASLB_NO_SKIPS set (`.ci/run` sets it), a skipped test fails.

A test that skips on a fresh machine because a tool is missing proves nothing,
and a line of "s" in a green run is easy to miss: in CI it is a failure that
names the test and the reason. xfail is left alone (it is an expectation, not
a missing tool). tests/conftest.py loads this plugin.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

NO_SKIPS = "CASLB_NO_SKIPS"


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get(NO_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped, and {NO_SKIPS} is set: {_reason(report)}"
    return report
