"""Each casfarm fault, seen on the wire the way docs/exchange.md §6 describes it."""

from __future__ import annotations

import ssl

import casfarm
import pytest
import trio
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP

from tests.farmclient import HttpClient, https_client, open_tls, was_reset

pytestmark = pytest.mark.smoke

# Long enough that a loopback answer would have come, short enough to keep tests fast.
SILENCE = 0.3


async def _client(farm: casfarm.Farm, name: str = "cas1") -> HttpClient:
    server = farm.server(name)
    return await https_client(
        server.host, server.ports["https"], ca_path=farm.ca_path, server_hostname=server.fqdn
    )


async def _status(farm: casfarm.Farm, target: str, name: str = "cas1") -> int | str:
    client = await _client(farm, name)
    try:
        return (await client.request("GET", target)).status
    except trio.BrokenResourceError as exc:
        assert was_reset(exc), exc
        return "reset"
    finally:
        await client.aclose()


async def _connects(host: str, port: int) -> str:
    """'connected', 'refused' or 'timeout' for one TCP connect."""
    with trio.socket.socket() as sock, trio.move_on_after(SILENCE):
        try:
            await sock.connect((host, port))
        except ConnectionRefusedError:
            return "refused"
        return "connected"
    return "timeout"


async def test_crash_refuses_connects_resets_flows_and_restarts_on_the_same_ports(
    farm: casfarm.Farm,
) -> None:
    before = farm.server("cas1")
    client = await _client(farm)
    assert (await client.request("GET", "/owa/healthcheck.htm")).status == 200
    imap = await trio.open_tcp_stream(before.host, before.ports["imap"])
    assert (await imap.receive_some(4096)).startswith(b"* OK")

    farm.inject("cas1", "crash")
    for kind, port in before.ports.items():
        assert await _connects(before.host, port) == "refused", kind
    with pytest.raises(trio.BrokenResourceError) as caught:
        await client.request("GET", "/owa/healthcheck.htm")
    assert was_reset(caught.value)
    with pytest.raises(trio.BrokenResourceError):
        await imap.receive_some(4096)
    await client.aclose()
    await imap.aclose()
    assert await _status(farm, "/owa/healthcheck.htm", "cas2") == 200

    farm.clear("cas1", "crash")
    assert farm.server("cas1") == before
    assert await _status(farm, "/owa/healthcheck.htm") == 200


async def test_blackhole_makes_connects_time_out_and_flows_silent(farm: casfarm.Farm) -> None:
    server = farm.server("cas2")
    client = await _client(farm, "cas2")
    assert (await client.request("GET", "/EWS/healthcheck.htm")).status == 200

    farm.inject("cas2", "blackhole")
    assert farm.faults("cas2") == [{"fault": "blackhole"}]
    for kind in ("https", "imap", "smtp"):
        assert await _connects(server.host, server.ports[kind]) == "timeout", kind
    await client.send_request("GET", "/EWS/healthcheck.htm")
    with trio.move_on_after(SILENCE) as silent:
        await client.stream.receive_some(1)
    assert silent.cancelled_caught, "an existing flow must go silent, not be reset"
    assert await _connects(farm.server("cas1").host, farm.server("cas1").ports["https"]) == (
        "connected"
    )

    farm.clear("cas2", "blackhole")
    assert farm.server("cas2") == server
    with pytest.raises(trio.BrokenResourceError):
        await client.stream.receive_some(1)
    await client.aclose()
    assert await _status(farm, "/EWS/healthcheck.htm", "cas2") == 200


async def test_crash_while_black_holed_then_clear_all(farm: casfarm.Farm) -> None:
    server = farm.server("cas3")
    farm.inject("cas3", "blackhole")
    farm.inject("cas3", "crash")
    assert await _connects(server.host, server.ports["https"]) == "refused"
    farm.clear("cas3", "crash")
    assert await _connects(server.host, server.ports["https"]) == "timeout"
    farm.clear("cas3")
    assert await _status(farm, "/owa/healthcheck.htm", "cas3") == 200


async def test_hang_completes_tls_but_never_answers_until_cleared(farm: casfarm.Farm) -> None:
    farm.inject("cas1", "hang")
    client = await _client(farm)  # TCP and TLS complete
    await client.send_request("GET", "/owa/healthcheck.htm")
    with trio.move_on_after(SILENCE) as silent:
        await client.read_head()
    assert silent.cancelled_caught
    server = farm.server("cas1")
    smtp = await trio.open_tcp_stream(server.host, server.ports["smtp"])
    with trio.move_on_after(SILENCE) as no_banner:
        await smtp.receive_some(4096)
    assert no_banner.cancelled_caught, "a hung server sends no banner"

    farm.clear("cas1", "hang")
    response = await client.read_response()
    assert response.status == 200
    assert (await smtp.receive_some(4096)).startswith(b"220 ")
    await client.aclose()
    await smtp.aclose()


async def test_hang_tls_stalls_the_handshake(farm: casfarm.Farm) -> None:
    farm.inject("cas2", "hang_tls")
    server = farm.server("cas2")
    for kind in ("https", "imaps", "pops"):
        with trio.move_on_after(SILENCE) as stalled:
            stream = await open_tls(
                server.host, server.ports[kind], ca_path=farm.ca_path, server_hostname=server.fqdn
            )
            await stream.aclose()
        assert stalled.cancelled_caught, kind
    plain = await trio.open_tcp_stream(server.host, server.ports["pop"])
    assert (await plain.receive_some(4096)).startswith(b"+OK"), "plain ports still answer"
    await plain.aclose()


async def test_slow_adds_its_latency_to_every_answer(
    farm: casfarm.Farm, autojump_clock: trio.abc.Clock
) -> None:
    client = await _client(farm)
    start = trio.current_time()
    assert (await client.request("GET", "/owa/healthcheck.htm")).status == 200
    assert trio.current_time() - start < 1.5
    farm.inject("cas1", "slow", seconds=1.5)
    for target in ("/owa/healthcheck.htm", "/owa/"):
        start = trio.current_time()
        assert (await client.request("GET", target)).status == 200
        assert trio.current_time() - start >= 1.5
    await client.aclose()


async def test_errors_fail_real_requests_behind_a_green_probe(farm: casfarm.Farm) -> None:
    farm.inject("cas3", "errors", vdir="ews")
    client = await _client(farm, "cas3")
    assert (await client.request("GET", "/EWS/healthcheck.htm")).status == 200
    soap = await client.request("POST", "/EWS/Exchange.asmx", body=SOAP)
    assert soap.status == 500
    assert soap.header("x-feserver") == "CAS3"
    assert (await client.request("GET", "/owa/")).status == 200
    farm.inject("cas3", "errors", status=503)
    assert (await client.request("GET", "/owa/")).status == 503
    assert (await client.request("POST", "/EWS/Exchange.asmx", body=SOAP)).status == 500
    farm.clear("cas3", "errors")
    assert (await client.request("POST", "/EWS/Exchange.asmx", body=SOAP)).status == 200
    await client.aclose()


async def test_flap_alternates_200_and_reset(
    farm: casfarm.Farm, mock_clock: trio.abc.Clock
) -> None:
    farm.inject("cas1", "flap", seconds=10.0)
    seen = []
    for _ in range(4):
        seen.append(await _status(farm, "/rpc/healthcheck.htm"))
        mock_clock.jump(10.0)  # type: ignore[attr-defined]
    assert seen == [200, "reset", 200, "reset"]


async def test_wrong_body_is_a_200_with_a_foreign_page(farm: casfarm.Farm) -> None:
    farm.inject("cas2", "wrong_body")
    client = await _client(farm, "cas2")
    response = await client.request("GET", "/owa/healthcheck.htm")
    assert response.status == 200
    assert not response.body.startswith(b"200 OK")
    assert b"IIS Windows Server" in response.body
    await client.aclose()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("wrong_name", "Hostname mismatch"), ("expired", "certificate has expired")],
)
async def test_bad_cert_fails_verification_but_not_an_unverified_handshake(
    farm: casfarm.Farm, mode: str, reason: str
) -> None:
    farm.inject("cas1", "bad_cert", mode=mode)
    server = farm.server("cas1")
    for kind in ("https", "imaps"):
        with pytest.raises(trio.BrokenResourceError) as caught:
            await open_tls(
                server.host, server.ports[kind], ca_path=farm.ca_path, server_hostname=server.fqdn
            )
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        assert reason in str(caught.value.__cause__)
    unverified = await open_tls(
        server.host, server.ports["https"], ca_path=None, server_hostname=server.fqdn
    )
    await unverified.aclose()
    farm.clear("cas1", "bad_cert")
    good = await open_tls(
        server.host, server.ports["https"], ca_path=farm.ca_path, server_hostname=server.fqdn
    )
    await good.aclose()


async def test_faults_clear_individually(farm: casfarm.Farm) -> None:
    farm.inject("cas2", "wrong_body")
    farm.inject("cas2", "app_pool_stopped", vdir="owa")
    farm.inject("cas2", "app_pool_stopped", vdir="ews")
    farm.clear("cas2", "app_pool_stopped", vdir="owa")
    assert await _status(farm, "/owa/healthcheck.htm", "cas2") == 200
    assert await _status(farm, "/EWS/healthcheck.htm", "cas2") == 503
    farm.clear("cas2", "app_pool_stopped")
    assert farm.faults("cas2") == [{"fault": "wrong_body"}]
    farm.clear("cas2")
    assert farm.faults("cas2") == []


async def test_bad_fault_arguments_are_named(farm: casfarm.Farm) -> None:
    with pytest.raises(ValueError, match="'melt'"):
        farm.inject("cas1", "melt")
    with pytest.raises(KeyError, match="'cas9'"):
        farm.inject("cas9", "crash")
    with pytest.raises(ValueError, match="needs a vdir"):
        farm.inject("cas1", "app_pool_stopped")
    with pytest.raises(ValueError, match="'Sleeping'"):
        farm.set_component("cas1", "OwaProxy", "Sleeping")
    assert farm.faults("cas1") == []


@pytest.mark.parametrize("fault", ["crash", "blackhole"])
async def test_a_connection_accepted_before_the_fault_but_run_after_it_is_not_served(
    farm: casfarm.Farm, fault: str
) -> None:
    # The slot's accept loop hands each connection to a task that starts later:
    # run that handler by hand once the fault is in force, as a busy loop would.
    runtime = farm.runtime("cas1")
    ours, theirs = trio.socket.socketpair()
    client = trio.SocketStream(ours)
    farm.inject("cas1", fault)
    with trio.move_on_after(SILENCE):
        await runtime._serve_connection("imap", trio.SocketStream(theirs))
    assert runtime.counters.snapshot().total_requests == 0
    with trio.move_on_after(SILENCE):
        assert not await client.receive_some(4096)  # no greeting: closed, or silent
    await client.aclose()
