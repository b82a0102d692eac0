"""`caslb probe` through typer's CliRunner against a running casfarm."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import casfarm
import pytest
import trio
import typer
from typer.testing import CliRunner, Result

from lb.cli import app
from lb.cli.probe import parse_host, parse_port, parse_protocols
from probes.round import ProbeHost


@pytest.fixture
async def farm() -> AsyncIterator[casfarm.Farm]:
    async with casfarm.running(servers=2, control=False) as farm:
        yield farm


def host_arg(farm: casfarm.Farm, name: str, *mail: str) -> str:
    """cas1.lab.local=127.0.0.11:PORT[,imap=PORT...] for one farm server."""
    server = farm.server(name)
    pairs = "".join(
        f",{proto}={server.ports[kind]}" for proto, kind in (m.split(":") for m in mail)
    )
    return f"{server.fqdn}={server.host}:{server.ports['https']}{pairs}"


async def invoke(*args: str) -> Result:
    # the command calls trio.run, so it runs in a thread beside the farm's loop
    run = functools.partial(CliRunner().invoke, app, ["probe", *args])
    return await trio.to_thread.run_sync(run)


async def test_probe_prints_a_table_and_exits_0_when_all_pass(farm: casfarm.Farm) -> None:
    hosts = [host_arg(farm, "cas1"), host_arg(farm, "cas2")]
    result = await invoke(
        *hosts, "--protocols", "owa,ews", "--ca", str(farm.ca_path), "--expect-fqdn"
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["SERVER", "PROTOCOL", "STATE", "LATENCY", "DETAIL"]
    rows = [line.split()[:3] for line in lines[1:]]
    assert rows == [
        ["cas1.lab.local", "owa", "UP"],
        ["cas1.lab.local", "ews", "UP"],
        ["cas2.lab.local", "owa", "UP"],
        ["cas2.lab.local", "ews", "UP"],
    ]
    assert "HTTP 200 cas2.lab.local" in lines[3]


async def test_probe_exits_1_and_says_why_when_a_check_fails(farm: casfarm.Farm) -> None:
    farm.inject("cas2", "crash")
    farm.set_component("cas1", "EwsProxy", "Inactive", requester="HealthApi")
    hosts = [host_arg(farm, "cas1"), host_arg(farm, "cas2")]
    result = await invoke(*hosts, "-p", "owa,ews", "--ca", str(farm.ca_path), "--timeout", "1")
    assert result.exit_code == 1, result.output
    states = {tuple(line.split()[:3]) for line in result.output.splitlines()[1:]}
    assert states == {
        ("cas1.lab.local", "owa", "UP"),
        ("cas1.lab.local", "ews", "DOWN"),
        ("cas2.lab.local", "owa", "DOWN"),
        ("cas2.lab.local", "ews", "DOWN"),
    }
    assert "connection refused" in result.output and "connection reset" in result.output


async def test_probe_mail_with_per_host_ports_and_starttls(farm: casfarm.Farm) -> None:
    farm.set_component("cas2", "ServerWideOffline", "Inactive", requester="Maintenance")
    hosts = [host_arg(farm, n, "imap:imap", "pop:pop", "smtp:smtp") for n in ("cas1", "cas2")]
    result = await invoke(*hosts, "-p", "imap,pop,smtp", "--starttls", "--ca", str(farm.ca_path))
    assert result.exit_code == 1, result.output
    down = [line.split()[:2] for line in result.output.splitlines() if " DOWN " in line]
    assert down == [["cas2.lab.local", p] for p in ("imap", "pop", "smtp")]
    assert "4.3.2 Service not active" in result.output


async def test_insecure_accepts_a_certificate_for_another_name(farm: casfarm.Farm) -> None:
    farm.inject("cas1", "bad_cert", mode="wrong_name")
    verified = await invoke(host_arg(farm, "cas1"), "-p", "owa", "--ca", str(farm.ca_path))
    assert verified.exit_code == 1 and "certificate error" in verified.output
    insecure = await invoke(host_arg(farm, "cas1"), "-p", "owa", "--insecure")
    assert insecure.exit_code == 0, insecure.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cas1.lab.local", "--ca", "{ca}", "--insecure"], "not both"),
        (["cas1.lab.local", "-p", "owa,gopher"], "unknown protocol 'gopher'"),
        (["cas1.lab.local", "--port", "imap=99999"], "not a number in 1..65535"),
        (["cas1.lab.local=127.0.0.1:x"], "'x'"),
        (["cas1.lab.local,ftp=21"], "NAME one of"),
        ([], "Missing argument"),
    ],
)
async def test_bad_input_exits_2_naming_it(
    farm: casfarm.Farm, args: list[str], message: str
) -> None:
    result = await invoke(*(a.replace("{ca}", str(farm.ca_path)) for a in args))
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_parse_host_forms() -> None:
    assert parse_host("cas1.lab.local") == ProbeHost("cas1.lab.local", "cas1.lab.local", {})
    assert parse_host("cas1.x=127.0.0.11") == ProbeHost("cas1.x", "127.0.0.11", {})
    assert parse_host("cas1.x=127.0.0.11:8443,imap=9933", {"smtp": 2525, "imap": 1}) == ProbeHost(
        "cas1.x", "127.0.0.11", {"https": 8443, "imap": 9933, "smtp": 2525}
    )
    assert parse_host("cas1.x=[::1]:8443") == ProbeHost("cas1.x", "::1", {"https": 8443})
    with pytest.raises(typer.BadParameter, match="no FQDN"):
        parse_host("=127.0.0.1")


def test_ports_resolve_per_protocol() -> None:
    host = parse_host("cas1.x=127.0.0.1:8443,pop=9955")
    assert host.port("ews") == 8443  # https covers every HTTP protocol
    assert host.port("pop") == 9955
    assert host.port("imap") == 993 and host.port("imap", starttls=True) == 143
    assert parse_port("HTTPS=443") == ("https", 443)
    assert parse_protocols("all")[-1] == "smtp"
    assert parse_protocols("OWA, ews,owa") == ["owa", "ews"]
