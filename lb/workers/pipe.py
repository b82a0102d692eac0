"""A worker's way back to the supervisor: its outcome sink, and the queue of its lines.

Everything a worker tells the supervisor (traffic outcomes, `reloaded`,
`resync`, metrics) is stamped here with the next sequence number and the hash
of the config the worker runs, then queued for the task that writes stdout.
Queuing never blocks the data path: a full queue drops the line, and the
number it used tells the supervisor one was lost.
"""

from __future__ import annotations

import logging

import trio

from lb.workers.filters import OutcomeBatcher, ReportFilter
from lb.workers.lines import write_lines
from lb.workers.messages import (
    CHANNEL_BUFFER,
    PassiveReport,
    Sequencer,
    WorkerMessage,
    encode_worker,
)
from probes.outlier import Outcome

log = logging.getLogger("caslb.workers")


class SupervisorPipe:
    """The worker's outgoing lines to the supervisor, and its `OutcomeSink`.

    Args:
        config: the hash of the config the worker starts with.
        buffer: how many lines may wait for the writer.
    """

    def __init__(self, config: str, buffer: int = CHANNEL_BUFFER) -> None:
        self._sequence = Sequencer(config)
        self._send, self._lines = trio.open_memory_channel[bytes](buffer)
        self._reports = ReportFilter()
        self._outcomes = OutcomeBatcher()

    def now_runs(self, config: str) -> None:
        """The worker reloaded into `config` (a hash): later lines carry it."""
        self._sequence.config = config

    def send(self, message: WorkerMessage) -> None:
        """Queue one message; dropped (and so a gap) when the queue is full or closed."""
        line = encode_worker(message, self._sequence.next())
        try:
            self._send.send_nowait(line)
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.warning("worker output backlog full: a message was dropped")

    def report(self, pool: str, server: str, ok: bool, reason: str) -> None:
        """A live-traffic outcome: failures, and the first success after one, are sent."""
        if self._reports.should_send(pool, server, ok):
            self.send(PassiveReport(pool, server, ok, reason))

    def outcome(self, pool: str, server: str, outcome: Outcome, client: str | None) -> None:
        """An L7 outcome for the supervisor's outlier detection (`PoolEjections.follow`)."""
        for message in self._outcomes.add(pool, server, outcome, client):
            self.send(message)

    def flush_outcomes(self) -> None:
        """Send the successes batched since the last flush."""
        for message in self._outcomes.flush():
            self.send(message)

    async def pump(self, stream: trio.abc.SendStream) -> None:
        """Write the queued lines to `stream` until `close`, then return."""
        await write_lines(stream, self._lines)

    async def close(self) -> None:
        """Queue nothing more; `pump` returns once the queue is written."""
        await self._send.aclose()
