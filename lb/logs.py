"""Logging setup for the `caslb` processes.

One line per event on stderr, with a UTC timestamp and the logger name, so an
access log line (logger `caslb.access`) and a health transition (`caslb.health`)
can be told apart and grepped.
"""

from __future__ import annotations

import logging
import time

_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s"


def setup(level: str = "INFO", *, access_log: bool = True) -> None:
    """Configure the root logger once for a command-line process.

    Args:
        level: the root level name (DEBUG, INFO, WARNING...).
        access_log: False silences the per-request access log.
    """
    formatter = logging.Formatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("caslb.access").disabled = not access_log
