"""Whether the supervisor and its workers run the same config (pure).

Every line a worker sends carries the hash of the config it runs. The
supervisor records the last hash per worker slot and, whenever the picture
changes, gets back one line to log: either every live worker runs the
supervisor's config, or which ones do not. A worker that finished a reload and
still runs another config than the supervisor (the file changed between the
two reads, or the worker refused it) is a warning, not a passing state.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """What to log about config agreement.

    Attributes:
        agreed: every live worker runs the supervisor's config.
        warn: a worker reloaded and still runs another config.
        text: the log line.
    """

    agreed: bool
    warn: bool
    text: str


class ConfigAgreement:
    """The config hash of the supervisor and of each live worker.

    Args:
        own: the supervisor's config hash.
        workers: how many worker slots there are.
    """

    def __init__(self, own: str, workers: int) -> None:
        self.own = own
        self._count = workers
        self._heard: dict[int, str] = {}
        self._last_text = ""

    def supervisor_runs(self, config: str) -> None:
        """The supervisor reloaded into `config`."""
        self.own = config

    def gone(self, slot: int) -> None:
        """The worker in `slot` exited; its replacement reports afresh."""
        self._heard.pop(slot, None)

    def runs(self, slot: int) -> str | None:
        """The hash the worker in `slot` last sent, None before its first line."""
        return self._heard.get(slot)

    @property
    def agreed(self) -> bool:
        """Every slot has a worker that said it runs the supervisor's config."""
        return len(self._heard) == self._count and all(
            config == self.own for config in self._heard.values())

    def heard(self, slot: int, config: str, *, reloaded: bool = False) -> Verdict | None:
        """A line from `slot` stamped `config`; a verdict when there is news to log.

        Args:
            reloaded: the line says the worker has just reloaded.
        """
        self._heard[slot] = config
        warn = reloaded and config != self.own
        text = self._describe()
        if text == self._last_text and not warn:
            return None
        self._last_text = text
        return Verdict(self.agreed, warn, text)

    def _describe(self) -> str:
        if self.agreed:
            return f"config {self.own}: the supervisor and all {self._count} workers run it"
        others = ", ".join(f"worker {slot} runs {config}"
                           for slot, config in sorted(self._heard.items()) if config != self.own)
        silent = self._count - len(self._heard)
        waiting = f"; {silent} not heard yet" if silent else ""
        return f"config {self.own} on the supervisor; {others or 'no worker differs'}{waiting}"
