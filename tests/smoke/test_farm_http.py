"""casfarm's HTTPS side, checked with real TLS and an h11 client over loopback."""

from __future__ import annotations

import ssl
from typing import Any

import casfarm
import h11
import pytest
import trio
from casfarm import VDIRS
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP

from tests.farmclient import HttpClient, https_client, open_tls, was_reset

pytestmark = pytest.mark.smoke


async def _client(farm: casfarm.Farm, name: str = "cas1") -> HttpClient:
    server = farm.server(name)
    return await https_client(
        server.host, server.ports["https"], ca_path=farm.ca_path, server_hostname=server.fqdn
    )


async def _health(farm: casfarm.Farm, name: str, vdir_path: str) -> int | str:
    """Status of one health check on a fresh connection, or "reset"."""
    client = await _client(farm, name)
    try:
        response = await client.request("GET", f"{vdir_path}/healthcheck.htm")
    except trio.BrokenResourceError as exc:
        assert was_reset(exc), exc
        return "reset"
    finally:
        await client.aclose()
    return response.status


async def test_every_vdir_answers_healthcheck_with_its_fqdn_on_one_keepalive_connection(
    farm: casfarm.Farm,
) -> None:
    for name in ("cas1", "cas3"):
        client = await _client(farm, name)
        for vdir in VDIRS:
            response = await client.request("GET", f"{vdir.path}/HealthCheck.htm")
            assert response.status == 200
            assert response.body == f"200 OK<br/>{name}.lab.local".encode()
            assert response.header("x-feserver") == name.upper()
        await client.aclose()
        counts = farm.counts(name)
        assert counts.connections["https"] == 1
        assert dict(counts.healthchecks) == {v.name: 1 for v in VDIRS}
        assert counts.total_requests == 0


async def test_inactive_component_resets_only_its_own_vdir(farm: casfarm.Farm) -> None:
    farm.set_component("cas2", "EwsProxy", "Inactive", requester="HealthApi")
    assert await _health(farm, "cas2", "/EWS") == "reset"
    assert await _health(farm, "cas2", "/owa") == 200
    assert await _health(farm, "cas1", "/EWS") == 200
    farm.set_component("cas2", "EwsProxy", "Active", requester="HealthApi")
    assert await _health(farm, "cas2", "/EWS") == 200


async def test_server_wide_offline_resets_every_check_and_draining_stays_green(
    farm: casfarm.Farm,
) -> None:
    farm.set_component("cas1", "OwaProxy", "Draining")
    assert await _health(farm, "cas1", "/owa") == 200
    farm.set_component("cas1", "ServerWideOffline", "Inactive")
    for vdir in VDIRS:
        assert await _health(farm, "cas1", vdir.path) == "reset"
    assert await _health(farm, "cas2", "/owa") == 200


async def test_reset_comes_after_the_request_is_read_on_a_live_tls_session(
    farm: casfarm.Farm,
) -> None:
    client = await _client(farm)
    assert (await client.request("GET", "/mapi/healthcheck.htm")).status == 200
    farm.set_component("cas1", "MapiProxy", "Inactive", requester="Functional")
    with pytest.raises(trio.BrokenResourceError) as caught:
        await client.request("GET", "/mapi/healthcheck.htm")
    assert was_reset(caught.value)
    await client.aclose()
    assert farm.counts("cas1").healthchecks["mapi"] == 2


async def test_stopped_app_pool_answers_httpsys_503_for_that_vdir_only(farm: casfarm.Farm) -> None:
    farm.inject("cas1", "app_pool_stopped", vdir="ews")
    client = await _client(farm)
    check = await client.request("GET", "/EWS/healthcheck.htm")
    assert check.status == 503
    assert check.header("server") == "Microsoft-HTTPAPI/2.0"
    assert check.header("x-feserver") is None
    assert b"HTTP Error 503. The service is unavailable." in check.body
    await client.aclose()
    client = await _client(farm)
    soap = await client.request(
        "POST", "/EWS/Exchange.asmx", [("Content-Type", "text/xml")], SOAP
    )
    assert soap.status == 503
    await client.aclose()
    assert await _health(farm, "cas1", "/owa") == 200
    farm.clear("cas1", "app_pool_stopped")
    assert await _health(farm, "cas1", "/EWS") == 200


async def test_head_is_not_a_health_check(farm: casfarm.Farm) -> None:
    farm.set_component("cas1", "OwaProxy", "Inactive")
    client = await _client(farm)
    response = await client.request("HEAD", "/owa/healthcheck.htm")
    assert response.status == 401
    assert response.header("www-authenticate") == "Negotiate"
    assert response.body == b""
    await client.aclose()
    counts = farm.counts("cas1")
    assert counts.requests == {"owa": 1}
    assert not counts.healthchecks


async def test_root_redirects_to_owa_and_unknown_paths_are_404(farm: casfarm.Farm) -> None:
    client = await _client(farm)
    root = await client.request("GET", "/")
    assert (root.status, root.header("location")) == (302, "/owa/")
    missing = await client.request("GET", "/nothing/here")
    assert missing.status == 404
    await client.aclose()
    assert farm.counts("cas1").requests == {"root": 1, "other": 1}


async def test_certificate_names_fqdn_namespace_and_address(farm: casfarm.Farm) -> None:
    server = farm.server("cas2")
    for name in (server.fqdn, farm.namespace):
        stream = await open_tls(
            server.host, server.ports["https"], ca_path=farm.ca_path, server_hostname=name
        )
        cert = stream.getpeercert()
        assert cert is not None
        sans = {value for _, value in cert["subjectAltName"]}
        assert {server.fqdn, farm.namespace, server.host} <= sans
        await stream.aclose()
    with pytest.raises(trio.BrokenResourceError) as caught:
        await open_tls(
            server.host,
            server.ports["https"],
            ca_path=farm.ca_path,
            server_hostname="cas9.lab.local",
        )
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


async def test_short_traffic_on_each_vdir(farm: casfarm.Farm) -> None:
    client = await _client(farm, "cas3")
    cases = [
        ("GET", "/owa/", [], b"", 200, b"<form"),
        ("POST", "/owa/service.svc?action=GetFolder", [], b"{}", 200, b"Success"),
        ("GET", "/ecp/", [], b"", 200, b"Exchange admin center"),
        ("POST", "/EWS/Exchange.asmx", [("Content-Type", "text/xml")], SOAP, 200, b"NoError"),
        ("POST", "/Autodiscover/Autodiscover.xml", [], b"<Autodiscover/>", 200, b"EwsUrl"),
        ("GET", "/autodiscover/autodiscover.json?Protocol=EWS", [], b"", 200, b"Url"),
        ("OPTIONS", "/Microsoft-Server-ActiveSync", [], b"", 200, b""),
        ("POST", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=a", [], b"\x03\x01", 200, b"\x03"),
        ("GET", "/OAB/abc/oab.xml", [], b"", 200, b"full.lzx"),
        ("GET", "/mapi/emsmdb/", [], b"", 200, b"MAPI/HTTP"),
        ("POST", "/PowerShell/", [], b"", 401, b"401"),
    ]
    for method, target, headers, body, status, needle in cases:
        response = await client.request(method, target, headers, body)
        assert response.status == status, target
        assert needle in response.body, target
        assert response.header("x-feserver") == "CAS3"
    await client.aclose()
    counts = farm.counts("cas3")
    assert counts.connections == {"https": 1}
    assert counts.requests == {
        "owa": 2, "ecp": 1, "ews": 1, "autodiscover": 2, "eas": 2, "oab": 1, "mapi": 1,
        "powershell": 1,
    }  # fmt: skip
    assert farm.requests["cas1"] == {}


async def test_activesync_ping_is_held_until_the_heartbeat(farm: casfarm.Farm) -> None:
    client = await _client(farm)
    await client.send_request("POST", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=u", body=b"p")
    with trio.move_on_after(0.05) as early:
        await client.read_head()
    assert early.cancelled_caught, "a Ping must not be answered before its heartbeat"
    response = await client.read_response()
    assert response.status == 200
    assert response.header("content-type") == "application/vnd.ms-sync.wbxml"
    await client.aclose()


async def test_mapi_notification_wait_streams_pending_then_done(farm: casfarm.Farm) -> None:
    client = await _client(farm)
    headers = [("X-RequestType", "NotificationWait"), ("Content-Type", "application/mapi-http")]
    await client.send_request("POST", "/mapi/emsmdb/?MailboxId=x@lab.local", headers, b"\0" * 8)
    head = await client.read_head()
    assert head.status_code == 200
    assert dict(head.headers)[b"x-pendingperiod"] == b"50"
    assert dict(head.headers)[b"transfer-encoding"] == b"chunked"
    pieces = []
    while (piece := await client.read_data()) is not None:
        pieces.append(piece)
    assert pieces[0] == b"PROCESSING\r\n"
    assert pieces[1:-1] and set(pieces[1:-1]) == {b"PENDING\r\n"}
    assert pieces[-1].startswith(b"DONE\r\nX-ResponseCode: 0\r\n")
    execute = await client.request("POST", "/mapi/emsmdb/", [("X-RequestType", "Execute")], b"x")
    assert execute.body.startswith(b"PROCESSING\r\nDONE\r\n")
    await client.aclose()


async def test_oab_download_has_the_configured_size(farm: casfarm.Farm) -> None:
    client = await _client(farm)
    response = await client.request("GET", "/OAB/0f1e/full.lzx")
    assert response.status == 200
    assert len(response.body) == 300_000
    await client.aclose()


async def test_rpc_in_data_is_consumed_and_never_answered(farm: casfarm.Farm) -> None:
    client = await _client(farm)
    target = "/rpc/rpcproxy.dll?cas1.lab.local:6001"
    await client.send_request(
        "RPC_IN_DATA", target, [("Content-Length", str(1 << 30))], b"\x05" * 4096, end=False
    )
    for _ in range(8):
        await client.send_body(b"\x05" * 65536)
    with trio.move_on_after(0.2) as silent:
        await client.stream.receive_some(1)
    assert silent.cancelled_caught, "the IN channel must get no answer while healthy"
    await client.aclose()
    assert farm.counts("cas1").requests == {"rpc": 1}


async def test_rpc_out_data_streams_a_huge_body_until_the_client_leaves(
    farm: casfarm.Farm,
) -> None:
    client = await _client(farm)
    target = "/rpc/rpcproxy.dll?cas1.lab.local:6001"
    await client.send_request("RPC_OUT_DATA", target, [("Content-Length", "76")], b"\0" * 76)
    head = await client.read_head()
    assert head.status_code == 200
    assert dict(head.headers)[b"content-length"] == str(1 << 30).encode()
    received = 0
    for _ in range(5):
        piece = await client.read_data()
        assert piece
        received += len(piece)
    assert received > 0
    await client.aclose()
    # The server notices the client left on its next send and ends the task.
    farm_server = farm.runtime("cas1")
    with trio.fail_after(5):
        while farm_server.connection_count():
            await trio.sleep(0.01)


async def test_malformed_request_gets_400_and_the_server_stays_up(farm: casfarm.Farm) -> None:
    server = farm.server("cas1")
    stream = await open_tls(
        server.host, server.ports["https"], ca_path=farm.ca_path, server_hostname=server.fqdn
    )
    await stream.send_all(b"NOT AN HTTP REQUEST\r\n\r\n")
    answer = b""
    while piece := await stream.receive_some(4096):
        answer += piece
    assert answer.startswith(b"HTTP/1.1 400 ")
    await stream.aclose()
    plain = await trio.open_tcp_stream(server.host, server.ports["https"])
    await plain.send_all(b"GET / HTTP/1.1\r\n\r\n")  # cleartext to a TLS port
    with trio.fail_after(5):
        await plain.receive_some(4096)
    await plain.aclose()
    assert await _health(farm, "cas1", "/owa") == 200
    assert farm.counts("cas1").errors == 0


async def test_health_cache_delay_hides_a_change_until_it_expires(
    mock_clock: trio.abc.Clock,
) -> None:
    async with casfarm.running(servers=1, health_cache_delay=15.0, control=False) as farm:
        farm.set_component("cas1", "OwaProxy", "Inactive", requester="HealthApi")
        assert farm.component_state("cas1", "OwaProxy") is casfarm.ComponentState.INACTIVE
        assert await _health(farm, "cas1", "/owa") == 200
        mock_clock.jump(14.0)  # type: ignore[attr-defined]
        assert await _health(farm, "cas1", "/owa") == 200
        mock_clock.jump(1.0)  # type: ignore[attr-defined]
        assert await _health(farm, "cas1", "/owa") == "reset"


async def test_servers_share_127_0_0_1_on_consecutive_ports_when_asked() -> None:
    async with casfarm.running(
        servers=2, distinct_addresses=False, control=False, base_ports={"https": 0}
    ) as farm:
        hosts = {s.host for s in farm.servers}
        assert hosts == {"127.0.0.1"}
        ports = [s.ports["https"] for s in farm.servers]
        assert len(set(ports)) == 2
        assert farm.control_url is None
        assert await _health(farm, "cas2", "/owa") == 200


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"servers": 0}, "servers must be between 1 and 200, got 0"),
        ({"namespace": "localhost"}, "'localhost'"),
        ({"base_ports": {"gopher": 70}}, "'gopher'"),
        ({"base_ports": {"https": 70000}}, "70000"),
        ({"heartbeat": 0.0}, "heartbeat must be"),
        ({"health_cache_delay": -1.0}, "-1.0"),
    ],
)
async def test_running_rejects_bad_arguments_by_name(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        async with casfarm.running(control=False, **kwargs):
            pytest.fail("the farm must not start")


async def test_expect_100_continue_gets_100_before_the_body_is_sent(farm: casfarm.Farm) -> None:
    client = await _client(farm)
    body = SOAP
    headers = [("Expect", "100-continue"), ("Content-Length", str(len(body)))]
    await client.send_request("POST", "/EWS/Exchange.asmx", headers, end=False)
    with trio.fail_after(10):  # a guard against a hang, not a timing: no 100 means no answer
        informational = await client._event()
    assert isinstance(informational, h11.InformationalResponse)
    assert (informational.status_code, informational.reason) == (100, b"Continue")
    await client.send_body(body)
    await client.stream.send_all(client.conn.send(h11.EndOfMessage()))
    response = await client.read_response()
    assert response.status == 200 and b"NoError" in response.body
    await client.aclose()


async def test_answers_carry_iis_reason_phrases(farm: casfarm.Farm) -> None:
    client = await _client(farm)
    cases = [
        ("POST", "/EWS/Exchange.asmx", 500, "Internal Server Error"),  # b"x" is no SOAP
        ("GET", "/nothing/here", 404, "Not Found"),
        ("PUT", "/EWS/Exchange.asmx", 405, "Method Not Allowed"),
        ("POST", "/mapi/emsmdb/", 200, "OK"),  # streamed: chunked head
        ("RPC_IN_DATA", "/PowerShell/", 401, "Unauthorized"),
    ]
    for method, target, status, reason in cases:
        response = await client.request(method, target, body=b"x")
        assert (response.status, response.reason) == (status, reason), target
    await client.aclose()


async def test_proxied_answers_name_the_mailbox_server_and_the_front_end_names_itself(
    farm: casfarm.Farm,
) -> None:
    seen = {}
    for name in ("cas1", "cas2"):
        client = await _client(farm, name)
        try:
            for path in ("/EWS/Exchange.asmx", "/mapi/emsmdb/", "/OAB/x/oab.xml", "/owa/"):
                response = await client.request("GET", path)
                assert response.header("x-feserver") == name.upper()
                seen[name, path] = (
                    response.header("x-calculatedbetarget"), response.header("x-beserver")
                )
            health = await client.request("GET", "/EWS/healthcheck.htm")
        finally:
            await client.aclose()
        # Answered by the front end itself: nothing was proxied.
        assert health.header("x-feserver") == name.upper()
        assert health.header("x-beserver") is None
    # Any front end proxies the mailbox to the same back end, never to itself.
    assert set(seen.values()) == {("mbx1.lab.local", "MBX1")}


async def test_a_logon_challenge_is_the_front_ends_own_answer() -> None:
    async with casfarm.running(servers=1, auth=True, mailbox_server="exmbx7.lab.local") as farm:
        client = await _client(farm)
        try:
            challenge = await client.request("POST", "/EWS/Exchange.asmx", body=b"<x/>")
            logged_on = await client.request(
                "GET", "/Microsoft-Server-ActiveSync?Cmd=FolderSync",
                [("Authorization", "Basic YWxpY2U6UGFzc3cwcmQ=")],
            )
        finally:
            await client.aclose()
    assert challenge.status == 401 and challenge.header("x-beserver") is None
    assert challenge.header("x-feserver") == "CAS1"
    assert logged_on.header("x-calculatedbetarget") == "exmbx7.lab.local"
    assert logged_on.header("x-beserver") == "EXMBX7"
