"""Every corpus case against a live frontend: the client's answer and what each backend got.

One frontend per case (with or without a default pool, as the case says), so
no case sees another's leftovers. After the client is done the test waits
for the balancer to close its upstream connections, then reads what the
backends recorded: nothing can still be on its way.
"""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from tests.hostile.case import Case
from tests.hostile.corpus import CORPUS
from tests.hostile.frontend_rig import hostile_front
from tests.hostile.judge import assert_quiet_logs, judge
from tests.hostile.wire import send_and_read


def test_case_ids_are_unique() -> None:
    repeated = [i for i, n in Counter(c.id for c in CORPUS).items() if n > 1]
    assert not repeated


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
async def test_case(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="caslb")
    async with hostile_front(default_pool=case.default_pool) as front:
        reply = await send_and_read(front.port, case.raw)
        await front.settle()
        verdict = judge(case, reply, front.backends)
    assert verdict is None, f"[{case.klass}] {verdict}"
    assert_quiet_logs(caplog)
