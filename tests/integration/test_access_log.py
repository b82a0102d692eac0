"""The access log: HAProxy's httplog line as text, the same fields as JSON, one per request."""

from __future__ import annotations

import json
import logging
import re

import pytest

from lb.accesslog import HTTP_TERMINATION
from lb.l7.events import Termination
from lb.logs import JsonFormatter, TextFormatter
from tests.integration.test_l7_rig import make_rig

# HAProxy's httplog format (configuration.txt §8.2.3, option httplog with
# `capture request header Host` and `User-Agent`), as log tools' grok patterns read it.
HTTPLOG = re.compile(
    r"(?P<client_ip>[\d.]+):(?P<client_port>\d+) "
    r"\[(?P<accept_date>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] "
    r"(?P<frontend_name>\S+) (?P<backend_name>\S+)/(?P<server_name>\S+) "
    r"(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/(?P<Ta>\+?\d+) "
    r"(?P<status_code>-?\d+) (?P<bytes_read>\+?\d+) \S+ \S+ (?P<termination_state>[-\w]{4}) "
    r"(?P<actconn>\d+)/(?P<feconn>\d+)/(?P<beconn>\d+)/(?P<srv_conn>\d+)/(?P<retries>\+?\d+) "
    r"(?P<srv_queue>\d+)/(?P<backend_queue>\d+) "
    r"\{(?P<host>[^|}]*)\|(?P<user_agent>[^}]*)\} \"(?P<http_request>[^\"]*)\"$"
)


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "caslb.access"]


async def test_a_request_logs_an_httplog_line_and_the_same_fields_as_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="caslb.access")
    async with make_rig() as rig, rig.client("127.0.0.4") as client:
        response, _ = await client.request("GET", "/owa/inbox?secret=1",
                                           headers=[("user-agent", "Outlook/16 (test)")])
        await client.request("GET", "/owa/inbox")
    first, second = access_records(caplog)
    text = TextFormatter().format(first).split(" caslb.access ", 1)[1]
    match = HTTPLOG.fullmatch(text)
    assert match, text
    fields = match.groupdict()
    assert fields["client_ip"] == "127.0.0.4" and fields["frontend_name"] == "test"
    assert fields["backend_name"] == "owa" and fields["server_name"].startswith("cas")
    assert fields["status_code"] == str(response.status_code) == "200"
    assert fields["termination_state"] == "----" and fields["retries"] == "0"
    assert fields["host"] == "mail.contoso.test" and fields["user_agent"] == "Outlook/16 (test)"
    assert fields["http_request"] == "GET /owa/inbox HTTP/1.1"  # no query string: tokens live there
    assert int(fields["Tc"]) >= 0 and int(fields["Tr"]) >= 0 and fields["feconn"] == "1"
    assert "secret" not in text

    document = json.loads(JsonFormatter().format(first))
    assert list(document)[:3] == ["time", "level", "logger"]
    logged = {k: str(v) for k, v in document.items() if k in fields}
    assert list(logged) == list(fields)  # HAProxy's field order, HAProxy's names
    assert logged == fields
    reused = HTTPLOG.fullmatch(TextFormatter().format(second).split(" caslb.access ", 1)[1])
    assert reused and reused["Tc"] == "0"  # the keep-alive upstream was reused


async def test_a_request_without_a_route_logs_no_server_and_no_timers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="caslb.access")
    async with make_rig() as rig, rig.client() as client:
        await client.request("GET", "/nowhere/")
    [record] = access_records(caplog)
    document = json.loads(JsonFormatter().format(record))
    assert document["http_request"] == "GET /nowhere/ HTTP/1.1"
    assert document["status_code"] == 404 and document["server_name"] == "<NOSRV>"
    assert document["Tc"] == -1 and document["Tr"] == -1  # never connected, never answered
    assert document["termination_state"] == "PR--"  # the balancer answered it: no route


def test_every_termination_has_a_two_letter_haproxy_state() -> None:
    assert set(HTTP_TERMINATION) == set(Termination)
    assert all(re.fullmatch(r"[-CSPKcs][-RCHD]", v) for v in HTTP_TERMINATION.values())
