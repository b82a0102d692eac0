"""`caslb run --workers 2`: the supervisor's pool decides outlier ejections for every worker."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio

from tests.farmclient import https_client
from tests.smoke.test_app_l7 import NAMESPACE
from tests.smoke.test_cli_run import get_json, member
from tests.smoke.test_workers import Running, running, total


async def from_many_clients(run: Running, n: int, first: int) -> Counter[tuple[str, int]]:
    """`n` OWA requests, each on a new connection from its own address: (server, status)."""
    seen: Counter[tuple[str, int]] = Counter()
    with trio.fail_after(30):
        for i in range(first, first + n):
            client = await https_client("127.0.0.1", run.https, ca_path=run.farm.ca_path,
                                        server_hostname=NAMESPACE,
                                        local_address=f"127.0.6.{i}")
            try:
                response = await client.request("GET", "/owa/")
            finally:
                await client.aclose()
            seen[(response.header("x-feserver") or "?", response.status)] += 1
    return seen


async def test_two_workers_count_as_one_and_the_supervisor_shows_the_ejection(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, servers=3) as run:
        await from_many_clients(run, 12, 1)  # both workers, every server: a good record
        run.farm.inject("cas1", "errors", vdir="owa", status=500)
        seen = await from_many_clients(run, 30, 20)
        # Three in a row eject, whichever worker saw them; one or two more may slip
        # through while the decision travels down the pipes of a busy machine.
        assert 3 <= seen[("CAS1", 500)] <= 5, seen
        status = await trio.to_thread.run_sync(get_json, f"{run.admin}/status")
        cas1 = member(status, "owa", "cas1")
        assert cas1["kind"] == "ejected" and cas1["ejected_for"] > 0, cas1
        assert await total(run, "caslb_server_ejected", pool="owa", server="cas1") == 1.0
        # One decision for every worker, counted once.
        assert await total(run, "caslb_server_ejections_total", pool="owa") == 1.0
        after = await from_many_clients(run, 12, 60)
        assert {server for server, _ in after} == {"CAS2", "CAS3"}, after
