"""casfarm's JSON control API and `caslb farm`, against a running farm on loopback."""

from __future__ import annotations

import json
import smtplib
from typing import Any
from urllib.parse import urlsplit

import casfarm
import pytest
import trio
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner, Result

from lb.cli import app
from tests.farmclient import HttpClient, Response, https_client, was_reset

pytestmark = pytest.mark.smoke


async def _control(farm: casfarm.Farm) -> HttpClient:
    assert farm.control_url is not None
    url = urlsplit(farm.control_url)
    assert url.hostname == "127.0.0.1" and url.port
    stream = await trio.open_tcp_stream(url.hostname, url.port)
    return HttpClient(stream, url.netloc)


async def _post(client: HttpClient, path: str, payload: object) -> Response:
    body = json.dumps(payload).encode()
    return await client.request("POST", path, [("Content-Type", "application/json")], body)


async def _health(farm: casfarm.Farm, name: str, vdir: str) -> int | str:
    s = farm.server(name)
    client = await https_client(
        s.host, s.ports["https"], ca_path=farm.ca_path, server_hostname=s.fqdn
    )
    try:
        return (await client.request("GET", f"{vdir}/healthcheck.htm")).status
    except trio.BrokenResourceError as exc:
        assert was_reset(exc)
        return "reset"
    finally:
        await client.aclose()


async def test_state_lists_servers_ports_ca_and_counts(farm: casfarm.Farm) -> None:
    await _health(farm, "cas2", "/owa")
    client = await _control(farm)
    response = await client.request("GET", "/api/state")
    assert response.status == 200
    state = json.loads(response.body)
    assert state["ca_path"] == str(farm.ca_path)
    assert [s["name"] for s in state["servers"]] == ["cas1", "cas2", "cas3"]
    cas2 = state["servers"][1]
    assert cas2["host"] == "127.0.0.12"
    assert cas2["ports"] == farm.server("cas2").ports
    assert cas2["counts"]["healthchecks"] == {"owa": 1}
    assert cas2["components"]["OwaProxy"] == {"state": "Active", "requesters": {}}
    one = json.loads((await client.request("GET", "/api/servers/cas3")).body)
    assert one["fqdn"] == "cas3.lab.local"
    await client.aclose()


async def test_set_inject_clear_through_the_api_change_the_wire(farm: casfarm.Farm) -> None:
    client = await _control(farm)
    set_ = await _post(
        client,
        "/api/set",
        {"server": "cas1", "component": "EwsProxy", "state": "Inactive", "requester": "HealthApi"},
    )
    assert set_.status == 200
    body: dict[str, Any] = json.loads(set_.body)
    assert body["server"]["components"]["EwsProxy"]["requesters"] == {"HealthApi": "Inactive"}
    assert await _health(farm, "cas1", "/EWS") == "reset"

    inject = await _post(
        client, "/api/inject", {"server": "cas2", "fault": "app_pool_stopped", "vdir": "owa"}
    )
    assert json.loads(inject.body)["server"]["faults"] == [
        {"fault": "app_pool_stopped", "vdir": "owa"}
    ]
    assert await _health(farm, "cas2", "/owa") == 503
    await _post(client, "/api/inject", {"server": "cas2", "fault": "slow", "seconds": 0.01})
    clear = await _post(client, "/api/clear", {"server": "cas2", "fault": "app_pool_stopped"})
    assert json.loads(clear.body)["server"]["faults"] == [{"fault": "slow", "seconds": 0.01}]
    assert await _health(farm, "cas2", "/owa") == 200
    await _post(client, "/api/clear", {"server": "cas2"})
    assert farm.faults("cas2") == []
    assert (await _post(client, "/api/reset-counts", {})).status == 200
    assert farm.counts("cas2").healthchecks == {}
    await client.aclose()


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "needle"),
    [
        ("POST", "/api/inject", {"server": "cas1", "fault": "melt"}, 400, "'melt'"),
        ("POST", "/api/inject", {"server": "cas7", "fault": "crash"}, 404, "'cas7'"),
        ("POST", "/api/set", {"server": "cas1", "component": "OwaProxy"}, 400, "'state'"),
        ("POST", "/api/inject", {"server": "cas1", "fault": "slow", "seconds": "x"}, 400, "'x'"),
        ("POST", "/api/set", [1, 2], 400, "JSON object"),
        ("GET", "/api/set", None, 405, "POST"),
        ("GET", "/nope", None, 404, "no such route"),
        ("GET", "/api/servers/zz", None, 404, "'zz'"),
    ],
)
async def test_bad_control_requests_get_a_named_error(
    farm: casfarm.Farm, method: str, path: str, payload: object, status: int, needle: str
) -> None:
    client = await _control(farm)
    if payload is None:
        response = await client.request(method, path)
    else:
        response = await _post(client, path, payload)
    assert response.status == status
    assert needle in json.loads(response.body)["error"]
    response = await client.request("POST", "/api/set", body=b"{not json")
    assert response.status == 400
    await client.aclose()
    assert farm.faults("cas1") == []


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(app, args)


async def _cli(*args: str) -> Result:
    return await trio.to_thread.run_sync(_invoke, list(args))


async def test_cli_set_inject_clear_status_against_a_running_farm(farm: casfarm.Farm) -> None:
    assert farm.control_url is not None
    control = ["--control", farm.control_url]
    result = await _cli(
        "farm", "set", "cas3", "ServerWideOffline", "Inactive", "--requester", "Maintenance",
        *control,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ServerWideOffline=Inactive" in result.output
    assert await _health(farm, "cas3", "/mapi") == "reset"

    result = await _cli(
        "farm", "inject", "cas1", "errors", "--vdir", "ews", "--status", "503", *control
    )
    assert result.exit_code == 0, result.output
    assert "errors(ews)" in result.output
    assert farm.faults("cas1") == [{"fault": "errors", "vdir": "ews", "status": 503}]

    result = await _cli("farm", "inject", "cas2", "crash", *control)
    assert result.exit_code == 0, result.output
    result = await _cli("farm", "status", *control)
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("cas")}
    assert "crash" in lines["cas2"] and "errors(ews)" in lines["cas1"]
    assert "ServerWideOffline=Inactive" in lines["cas3"]

    result = await _cli("farm", "clear", "cas2", "crash", *control)
    assert result.exit_code == 0, result.output
    assert await _health(farm, "cas2", "/owa") == 200
    result = await _cli("farm", "clear", "cas1", *control)
    assert farm.faults("cas1") == []

    result = await _cli("farm", "status", "--json", *control)
    assert (
        json.loads(result.output)["servers"][2]["components"]["ServerWideOffline"]["state"]
        == "Inactive"
    )


async def test_cli_reports_errors_and_an_unreachable_farm(farm: casfarm.Farm) -> None:
    assert farm.control_url is not None
    result = await _cli("farm", "inject", "cas1", "melt", "--control", farm.control_url)
    assert result.exit_code == 1
    assert "error: unknown fault 'melt'" in result.output
    # A port that was just bound and closed has no listener: the connect is refused.
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    result = await _cli("farm", "status", "--control", f"http://127.0.0.1:{free}")
    assert result.exit_code == 1
    assert "cannot reach the farm" in result.output
    result = await _cli("farm", "status", "--control", "ftp://x")
    assert result.exit_code == 1 and "bad control URL" in result.output


async def test_cli_farm_alone_starts_a_farm_and_prints_how_to_use_it(tmp_path: Any) -> None:
    result = await _cli(
        "farm", "--ephemeral", "--servers", "2", "--cert-dir", str(tmp_path), "--run-for", "0"
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "cas1" in out and "127.0.0.11" in out and "127.0.0.12" in out
    assert f"CA          {tmp_path / 'ca.pem'}" in out
    assert "control API http://127.0.0.1:" in out
    assert "curl --cacert" in out and "openssl s_client" in out
    assert "caslb farm inject cas2 crash" in out
    assert (tmp_path / "ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


async def test_cli_farm_can_share_127_0_0_1(tmp_path: Any) -> None:
    result = await _cli(
        "farm", "--ephemeral", "--shared-address", "--servers", "1",
        "--cert-dir", str(tmp_path), "--run-for", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cas1   cas1.lab.local    127.0.0.1 " in result.output


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_metrics_count_requests_and_faults_per_server_and_vdir(
    farm: casfarm.Farm,
) -> None:
    s = farm.server("cas2")
    web = await https_client(s.host, s.ports["https"], ca_path=farm.ca_path,
                             server_hostname=s.fqdn)
    control = await _control(farm)
    await web.request("GET", "/owa/")
    await _post(control, "/api/inject", {"server": "cas2", "fault": "errors", "vdir": "ews"})
    for _ in range(3):
        assert (await web.request("POST", "/EWS/Exchange.asmx", body=SOAP)).status == 500
    response = await control.request("GET", "/metrics")
    await web.aclose()
    await control.aclose()
    assert response.status == 200
    assert (response.header("content-type") or "").startswith("text/plain; version=0.0.4")
    text = response.body.decode()
    requests = _samples(text, "casfarm_requests_total")
    assert requests[("server", "cas2"), ("vdir", "owa")] == 1
    assert requests[("server", "cas2"), ("vdir", "ews")] == 3
    assert requests[("server", "cas1"), ("vdir", "imap")] == 0  # present before any traffic
    faulted = _samples(text, "casfarm_faulted_requests_total")
    assert faulted[("fault", "errors"), ("server", "cas2"), ("vdir", "ews")] == 3
    assert faulted[("fault", "errors"), ("server", "cas2"), ("vdir", "owa")] == 0
    active = _samples(text, "casfarm_fault_active")
    assert active[("fault", "errors"), ("server", "cas2")] == 1
    assert active[("fault", "errors"), ("server", "cas1")] == 0
    connections = _samples(text, "casfarm_connections_total")
    assert connections[("listener", "https"), ("server", "cas2")] == 1


async def test_cli_drains_hub_transport_and_smtp_refuses_new_mail(farm: casfarm.Farm) -> None:
    assert farm.control_url is not None
    result = await _cli("farm", "set", "cas2", "HubTransport", "Draining",
                        "--control", farm.control_url)
    assert result.exit_code == 0, result.output
    assert "HubTransport=Draining" in result.output
    s = farm.server("cas2")

    def mail_from() -> int:
        with smtplib.SMTP(s.host, s.ports["smtp"], timeout=5) as smtp:
            smtp.ehlo("client.lab.local")
            code, _ = smtp.mail("a@lab.local")
        return code

    assert await trio.to_thread.run_sync(mail_from) == 452


async def test_cli_maintenance_follows_microsofts_order_and_ends_it(farm: casfarm.Farm) -> None:
    assert farm.control_url is not None
    control = ["--control", farm.control_url]
    result = await _cli("farm", "maintenance", "cas1", "start", *control)
    assert result.exit_code == 0, result.output
    assert "HubTransport=Draining" in result.output
    assert "ServerWideOffline=Inactive" in result.output
    assert await _health(farm, "cas1", "/owa") == "reset"
    assert await _health(farm, "cas2", "/owa") == 200

    result = await _cli("farm", "maintenance", "cas1", "end", *control)
    assert result.exit_code == 0, result.output
    assert "Inactive" not in result.output and "Draining" not in result.output
    assert await _health(farm, "cas1", "/owa") == 200

    result = await _cli("farm", "maintenance", "cas1", "pause", *control)
    assert result.exit_code == 1
    assert "'start' or 'end'" in result.output
