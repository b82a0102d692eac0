"""The failure boundary's log line: one line for an error nobody expected.

Every unit of work (a client connection at L4 or L7, an admin connection, a
probe) catches what it did not expect at its own edge, so that a bug that one
peer's input reaches ends that peer's connection and nothing else. The catch
sites differ (each knows what it may still tell its peer); what they log does
not: one ERROR line naming the unit and the exception, the traceback only at
DEBUG (so a peer that can trigger a bug cannot flood the log with tracebacks),
and a count in `caslb_internal_errors_total{where}`.
"""

from __future__ import annotations

import logging


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
