"""Why an L4 upstream attempt failed, as the log and the passive report name it."""

from __future__ import annotations

import errno
import os

import pytest
import trio

from lb.l4.connector import failure_reason


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError(), "timeout"),
        (trio.TooSlowError(), "timeout"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "reset"),
        (PermissionError(errno.EPERM, os.strerror(errno.EPERM)), "denied"),
        (OSError(errno.EACCES, os.strerror(errno.EACCES)), "denied"),
        (OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH)), "unreachable"),
        (OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH)), "unreachable"),
        (OSError(errno.EADDRNOTAVAIL, "x"), "error"),
        (OSError("no errno"), "error"),
    ],
)
def test_each_cause_has_its_own_name(exc: BaseException, reason: str) -> None:
    assert failure_reason(exc) == reason
