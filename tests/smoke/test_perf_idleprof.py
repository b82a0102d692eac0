"""`python -m perf.idleprof`: a traced `caslb run` tells what its idle connections hold."""

from __future__ import annotations

import re

import pytest
import trio

from perf.idleprof import profile

pytestmark = pytest.mark.smoke


def test_idleprof_counts_two_sockets_per_proxied_l4_connection() -> None:
    # settle 2 s: a relay parks after 0.5–1 s idle, later when the machine is busy
    lines = trio.run(profile, "l4", 40, 2.0)
    text = "\n".join(lines)
    assert lines[0].startswith("l4: 40 idle connections"), text
    # every proxied connection holds its client and its server socket, nothing more
    assert re.search(r"^\s+2\.00\s+\S+\s+SocketStream$", text, re.M), text
    total = re.search(r"by innermost caslb frame:\n  total ([\d.]+) per connection", text)
    assert total and float(total[1]) > 1, text
