"""A worker's state source: member states copied from the supervisor's lines.

The worker runs no probes, and decides no outlier ejection: its pools forward
L7 outcomes through the pipe and apply the ejections the supervisor sends.
`SupervisorFeed.run` reads stdin: the first snapshot is applied before it
reports started, so the app opens no frontend on pools the supervisor has not
described; after that every change and
snapshot is applied as it comes. A gap in the sequence numbers (a line the
supervisor could not queue) makes the feed ask for a snapshot through the
pipe. The end of stdin means the supervisor is gone: `lost` is set, and the
worker stops.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import trio

from lb.pool import Pool
from lb.seams import ProbeEvents
from lb.workers.lines import LineReader
from lb.workers.memberstate import apply_control
from lb.workers.messages import SNAPSHOT_TIMEOUT, GapDetector, Resync, Snapshot, decode_control
from lb.workers.pipe import SupervisorPipe
from probes.checks import CheckResult
from probes.state import CheckProgress

log = logging.getLogger("caslb.workers")


class SupervisorFeed:
    """Keeps a worker's pools in the states the supervisor sends.

    Args:
        reader: lines from the supervisor (the worker's stdin).
        pipe: where a request for a snapshot goes.
    """

    def __init__(self, reader: LineReader, pipe: SupervisorPipe) -> None:
        self._reader = reader
        self._pipe = pipe
        self._gaps = GapDetector()
        self._pools: Mapping[str, Pool] = {}
        self.lost = trio.Event()

    def last_result(self, pool: str, server: str) -> CheckResult | None:
        """None: check results stay with the supervisor's probes."""
        return None

    def check_progress(self, pool: str, server: str) -> CheckProgress | None:
        """None: the health counters stay with the supervisor's probes."""
        return None

    def pools_changed(self) -> None:
        """Pools a reload added follow the supervisor too; the worker asks for a snapshot
        once its reload is done."""
        self._follow_ejections()

    def _follow_ejections(self) -> None:
        # The supervisor decides ejections for all workers: ours forward outcomes.
        for pool in self._pools.values():
            pool.ejections.follow(self._pipe.outcome)

    async def run(
        self,
        pools: Mapping[str, Pool],
        events: ProbeEvents,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Apply the first snapshot, report started, then follow the supervisor.

        Raises:
            OSError: stdin ended before the first snapshot.
            ValueError: a malformed line before it.
            TooSlowError: no snapshot within `SNAPSHOT_TIMEOUT`.
        """
        self._pools = pools
        self._follow_ejections()
        with trio.fail_after(SNAPSHOT_TIMEOUT):
            while True:
                line = await self._reader.next()
                if line is None:
                    raise OSError("the supervisor closed the worker's stdin before the snapshot")
                stamp, message = decode_control(line)
                self._gaps.missing(stamp.seq)
                apply_control(pools, message, trio.current_time())
                if isinstance(message, Snapshot):
                    break
        task_status.started()
        await self._follow(pools)
        log.warning("worker %d: supervisor gone: stopping", os.getpid())
        self.lost.set()

    async def _follow(self, pools: Mapping[str, Pool]) -> None:
        while (line := await self._reader.next()) is not None:
            try:
                stamp, message = decode_control(line)
            except ValueError as exc:
                log.error("worker %d: bad control line: %s", os.getpid(), exc)
                continue
            missing = self._gaps.missing(stamp.seq)
            if missing and not isinstance(message, Snapshot):
                log.warning("worker %d: %d state lines lost: asking for a snapshot",
                            os.getpid(), missing)
                self._pipe.send(Resync(missing))
            apply_control(pools, message, trio.current_time())
