"""The access log line in HAProxy's httplog format, so tools that parse HAProxy logs parse ours.

It is HAProxy's `option httplog` line, field for field:

    %ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc
    %sq/%bq {%hrl} "%r"

with the captured request headers `{Host|User-Agent}` (HAProxy's `capture request
header Host` then `User-Agent`) and no cookies (`- -`). caslb has no queue, so
Tw, %sq and %bq are 0, and actconn is the frontend's count. `http_fields` gives
the same fields as one mapping for the JSON log, named as HAProxy documents its
log-format variables.

An L4 connection gets HAProxy's `option tcplog` line:

    %ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq

from its `ConnectionRecord` (lb/l4/events.py), and `tcp_fields` names them for
JSON. Pure functions: lb/logs.py decides which to write.
"""

from __future__ import annotations

import json
import time

from lb.l4.events import ConnectionRecord
from lb.l7.events import RequestRecord, Termination

# HAProxy's two-letter termination state: who ended it (C client, S server,
# P proxy, K killed by the balancer, c/s a timeout) and in which phase (R request,
# C connect, H response head, D data).
HTTP_TERMINATION: dict[Termination, str] = {
    Termination.COMPLETE: "--",
    Termination.CLIENT_ABORT: "CD",
    Termination.UPSTREAM_ERROR: "SH",
    Termination.UPSTREAM_TIMEOUT: "sH",
    Termination.IDLE_TIMEOUT: "cD",
    Termination.SERVER_RESET: "KD",
    Termination.NO_SERVER: "SC",
    Termination.NO_ROUTE: "PR",
    Termination.BAD_REQUEST: "PR",
    Termination.HEADER_TIMEOUT: "cR",
    Termination.HEADERS_TOO_LARGE: "PR",
}


class _AcceptDate:
    """HAProxy's accept date, 06/Feb/2009:12:14:14.655 (local time, as HAProxy logs it).

    The formatted second is kept: at thousands of lines a second, strftime would
    run for every one.
    """

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, epoch: float) -> str:
        second = int(epoch)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(second))
        return f"{self._text}.{int(epoch * 1000) % 1000:03d}"


_date = _AcceptDate()


def _ms(seconds: float) -> int:
    return -1 if seconds < 0 else int(seconds * 1000)


def _quoted(text: str) -> str:
    """`text` with quotes, backslashes and control characters escaped, as HAProxy does."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return json.dumps(text)[1:-1]


def http_fields(r: RequestRecord) -> dict[str, object]:
    """The httplog fields of `r`, in HAProxy's order, named as its variables."""
    extra = r.log
    status = r.status if r.status is not None else -1
    return {
        "client_ip": r.client,
        "client_port": extra.client_port if extra else 0,
        "accept_date": _date(extra.accepted if extra else time.time()),
        "frontend_name": r.frontend,
        "backend_name": r.pool or "<NOSRV>",
        "server_name": r.server or "<NOSRV>",
        "TR": _ms(extra.t_request) if extra else -1,
        "Tw": 0,
        "Tc": _ms(extra.t_connect) if extra else -1,
        "Tr": _ms(extra.t_response) if extra else -1,
        "Ta": _ms(r.duration),
        "status_code": status,
        "bytes_read": r.bytes_out,
        "termination_state": HTTP_TERMINATION[r.termination] + "--",
        "actconn": extra.fe_conn if extra else 0,
        "feconn": extra.fe_conn if extra else 0,
        "beconn": extra.be_conn if extra else 0,
        "srv_conn": extra.srv_conn if extra else 0,
        "retries": r.retries,
        "srv_queue": 0,
        "backend_queue": 0,
        "host": extra.host if extra else "",
        "user_agent": extra.user_agent if extra else "",
        # The path without its query string: OWA and EWS put tokens there.
        "http_request": f"{r.method} {r.path} HTTP/{extra.version}" if extra else "<BADREQ>",
    }


def httplog_text(r: RequestRecord) -> str:
    """`r` as HAProxy's httplog line (the fields of `http_fields`, composed directly)."""
    x = r.log
    if x is None:
        return httplog_line(http_fields(r))
    status = r.status if r.status is not None else -1
    return (
        f"{r.client}:{x.client_port} [{_date(x.accepted)}] {r.frontend} "
        f"{r.pool or '<NOSRV>'}/{r.server or '<NOSRV>'} "
        f"{_ms(x.t_request)}/0/{_ms(x.t_connect)}/{_ms(x.t_response)}/{_ms(r.duration)} "
        f"{status} {r.bytes_out} - - {HTTP_TERMINATION[r.termination]}-- "
        f"{x.fe_conn}/{x.fe_conn}/{x.be_conn}/{x.srv_conn}/{r.retries} 0/0 "
        f'{{{_quoted(x.host)}|{_quoted(x.user_agent)}}} '
        f'"{r.method} {_quoted(r.path)} HTTP/{x.version}"'
    )


def httplog_line(f: dict[str, object]) -> str:
    """The httplog line of `http_fields`' mapping."""
    return (
        f"{f['client_ip']}:{f['client_port']} [{f['accept_date']}] {f['frontend_name']} "
        f"{f['backend_name']}/{f['server_name']} {f['TR']}/{f['Tw']}/{f['Tc']}/{f['Tr']}/{f['Ta']} "
        f"{f['status_code']} {f['bytes_read']} - - {f['termination_state']} "
        f"{f['actconn']}/{f['feconn']}/{f['beconn']}/{f['srv_conn']}/{f['retries']} "
        f"{f['srv_queue']}/{f['backend_queue']} "
        f"{{{_quoted(str(f['host']))}|{_quoted(str(f['user_agent']))}}} "
        f'"{_quoted(str(f["http_request"]))}"'
    )


def tcp_fields(r: ConnectionRecord) -> dict[str, object]:
    """The tcplog fields of `r`, in HAProxy's order, named as its variables."""
    return {
        "client_ip": r.client,
        "client_port": r.client_port,
        "accept_date": _date(r.accepted),
        "frontend_name": r.frontend,
        "backend_name": r.pool or "<NOSRV>",
        "server_name": r.server or "<NOSRV>",
        "Tw": 0,
        "Tc": _ms(r.t_connect),
        "Tt": _ms(r.t_total),
        "bytes_read": r.bytes_read,
        "termination_state": r.termination,
        "actconn": r.fe_conn,
        "feconn": r.fe_conn,
        "beconn": r.be_conn,
        "srv_conn": r.srv_conn,
        "retries": r.retries,
        "srv_queue": 0,
        "backend_queue": 0,
    }


def tcplog_text(r: ConnectionRecord) -> str:
    """`r` as HAProxy's tcplog line, composed from `tcp_fields` (one source of the fields;
    a connection is not the per-request hot path that httplog_text shortcuts)."""
    f = tcp_fields(r)
    return (
        f"{f['client_ip']}:{f['client_port']} [{f['accept_date']}] {f['frontend_name']} "
        f"{f['backend_name']}/{f['server_name']} {f['Tw']}/{f['Tc']}/{f['Tt']} "
        f"{f['bytes_read']} {f['termination_state']} "
        f"{f['actconn']}/{f['feconn']}/{f['beconn']}/{f['srv_conn']}/{f['retries']} "
        f"{f['srv_queue']}/{f['backend_queue']}"
    )
