"""The failure boundary's log line: one line for an error nobody expected.

Every unit of work (a client connection at L4 or L7, an admin connection, a
probe, a background task such as a reload or a retired frontend's wait for its
last connection) catches what it did not expect at its own edge, so that a bug that one
peer's input reaches ends that peer's connection and nothing else. The catch
sites differ (each knows what it may still tell its peer); what they log does
not: one ERROR line naming the unit and the exception, the traceback only at
DEBUG (so a peer that can trigger a bug cannot flood the log with tracebacks),
and a count in `caslb_internal_errors_total{where}`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

TASK = "task"
"""The `where` of a background task's unexpected error."""


def log_internal_error(log: logging.Logger, what: str, exc: BaseException) -> None:
    """Log an unexpected error in one line, with its traceback at DEBUG.

    Args:
        log: the logger of the unit that failed.
        what: the unit, e.g. "frontend owa: connection from 127.0.0.1".
        exc: the error caught at the unit's edge.
    """
    cause = root_cause(exc)
    log.error("%s failed: %s: %s", what, type(cause).__name__, cause)
    log.debug("%s failed", what, exc_info=exc)


def root_cause(exc: BaseException) -> BaseException:
    """The error inside nested exception groups (trio wraps every nursery's errors).

    A group of several yields its first member: the line names one real error
    rather than "Exceptions from Trio nursery"; the DEBUG traceback has them all.
    """
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def guarded(
    log: logging.Logger, what: str, on_error: Callable[[str], None],
    work: Callable[[], Awaitable[None]],
) -> bool:
    """Run one background task inside its failure boundary.

    Cancellation passes through; any other error ends the task alone, in one
    line and one count of `TASK`, instead of the nursery and the process.

    Returns:
        True when the task ended normally.
    """
    try:
        await work()
    except Exception as exc:
        log_internal_error(log, what, exc)
        on_error(TASK)
        return False
    return True
