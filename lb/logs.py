"""Logging setup for the `caslb` processes.

One line per event on stderr. As text: a UTC timestamp, the level, the logger
name, the message; an access log line (logger `caslb.access`) is HAProxy's
httplog line for an HTTP request and its tcplog line for an L4 connection
(lb/accesslog.py), so HAProxy's log tools read it. As JSON: one
object a line, with `time`, `level`, `logger`, and either `message` or the
access log's httplog or tcplog fields; a line logged with `extra={"fields": {...}}`
(start-up, state changes) carries those fields too, so nothing has to be
parsed back out of a sentence.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping

from lb.accesslog import http_fields, httplog_text, tcp_fields, tcplog_text
from lb.l4.events import ConnectionRecord
from lb.l7.events import RequestRecord

_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s"
_DATE = "%Y-%m-%dT%H:%M:%S"


class TextFormatter(logging.Formatter):
    """caslb's text line; an access record's message is its httplog line."""

    def __init__(self) -> None:
        super().__init__(_FORMAT, datefmt=_DATE)
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        """The line for `record`."""
        http = getattr(record, "http", None)
        if isinstance(http, RequestRecord):
            record.msg, record.args = httplog_text(http), None
        tcp = getattr(record, "tcp", None)
        if isinstance(tcp, ConnectionRecord):
            record.msg, record.args = tcplog_text(tcp), None
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line for `record`."""
        stamp = time.strftime(_DATE, time.gmtime(record.created))
        doc: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        http = getattr(record, "http", None)
        tcp = getattr(record, "tcp", None)
        if isinstance(http, RequestRecord):
            doc.update(http_fields(http))
        elif isinstance(tcp, ConnectionRecord):
            doc.update(tcp_fields(tcp))
        else:
            doc["message"] = record.getMessage()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"), default=str)


def setup(level: str = "INFO", *, access_log: bool = True, form: str = "text") -> None:
    """Configure the root logger once for a command-line process.

    Args:
        level: the root level name (DEBUG, INFO, WARNING...).
        access_log: False silences the per-request access log.
        form: "text" or "json" (`[logging] format`).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("caslb.access").disabled = not access_log


def endpoint(address: object) -> str:
    """`host:port` for a socket address tuple (IPv6 in brackets), else its text."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


def log_serving(log: logging.Logger, frontends: Mapping[str, object], admin: object) -> None:
    """The start-up line: every frontend's address and the admin API's."""
    served = {name: endpoint(address) for name, address in frontends.items()}
    log.info("caslb serving %s; admin on %s",
             " ".join(f"{name}={where}" for name, where in served.items()) or "no frontend",
             endpoint(admin), extra={"fields": {"event": "serving", "frontends": served,
                                                "admin": endpoint(admin)}})
