"""`caslb probe CONFIG` through typer's CliRunner against a running casfarm."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import casfarm
import trio
from typer.testing import CliRunner, Result

from lb.cli import app
from lb.cli.probe import probe_config
from lb.config import load
from probes.checks import CheckResult, CheckSpec, Target, run_check

HTTP_POOLS = ("owa", "ews", "mapi")


def write_config(farm: casfarm.Farm, directory: Path) -> Path:
    """An [exchange] shorthand config in front of the farm's HTTPS ports."""
    servers = ",\n".join(
        f'  {{ name = "{s.name}", address = "{s.host}", fqdn = "{s.fqdn}", '
        f"ports = {{ https = {s.ports['https']} }} }}"
        for s in farm.servers
    )
    cert = Path(farm.ca_path).parent / "cas1.pem"
    path = directory / "caslb.toml"
    path.write_text(f"""
[exchange]
namespace = "mail.lab.local"
mode = "l7"
bind = "127.0.0.1"
protocols = {list(HTTP_POOLS)!r}
ca_file = "{farm.ca_path}"
tls = {{ cert = "{cert}", key = "{cert}" }}
timeout = "1s"
servers = [
{servers}
]
""")
    return path


async def invoke(*args: str) -> Result:
    # the command calls trio.run, so it runs in a thread beside the farm's loop
    run = functools.partial(CliRunner().invoke, app, ["probe", *args])
    return await trio.to_thread.run_sync(run)


def table(result: Result) -> list[list[str]]:
    return [line.split() for line in result.stdout.splitlines()]


async def test_all_green_exits_0_with_a_row_per_pool_and_server(tmp_path: Path) -> None:
    async with casfarm.running(servers=2) as farm:
        result = await invoke(str(write_config(farm, tmp_path)))
    assert result.exit_code == 0, result.output
    lines = table(result)
    assert lines[0] == ["SERVER", "POOL", "STATE", "LATENCY", "DETAIL"]
    assert [line[:3] for line in lines[1:]] == [
        [server, pool, "UP"] for pool in HTTP_POOLS for server in ("cas1", "cas2")
    ]
    assert all(line[4:6] == ["HTTP", "200"] for line in lines[1:])


async def test_one_inactive_component_fails_only_its_row(tmp_path: Path) -> None:
    async with casfarm.running(servers=2) as farm:
        farm.set_component("cas1", "EwsProxy", "Inactive", requester="HealthApi")
        result = await invoke(str(write_config(farm, tmp_path)))
    assert result.exit_code == 1, result.output
    rows = table(result)[1:]
    down = [line for line in rows if line[2] == "DOWN"]
    assert [line[:2] for line in down] == [["cas1", "ews"]]
    assert " ".join(down[0][4:]).startswith("connection reset")  # casfarm's Inactive EWS
    assert sum(line[2] == "UP" for line in rows) == 2 * len(HTTP_POOLS) - 1


async def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    async with casfarm.running(servers=2) as farm:
        path = write_config(farm, tmp_path)
        path.write_text(path.read_text().replace('timeout = "1s"', 'timeout = "soon"'))
        result = await invoke(str(path))
    assert result.exit_code == 2, result.output
    assert "exchange.timeout" in result.stderr
    assert "SERVER" not in result.stdout


async def test_host_options_are_refused_with_a_config(tmp_path: Path) -> None:
    async with casfarm.running(servers=2) as farm:
        result = await invoke(str(write_config(farm, tmp_path)), "--protocols", "owa")
    assert result.exit_code == 2
    assert "--protocols apply to HOST arguments" in result.output


async def test_pools_sharing_servers_and_spec_are_probed_once(tmp_path: Path) -> None:
    async with casfarm.running(servers=2) as farm:
        config = load(write_config(farm, tmp_path))
        copy = dataclasses.replace(config.pools["owa"], name="owa2")
        config = dataclasses.replace(config, pools={**config.pools, "owa2": copy})
        ran: list[Target] = []

        async def counted(spec: CheckSpec, target: Target) -> CheckResult:
            ran.append(target)
            return await run_check(spec, target)

        rows = await probe_config(config, check=counted)
    assert [(r.protocol, r.server) for r in rows][-2:] == [("owa2", "cas1"), ("owa2", "cas2")]
    assert len(rows) == 2 * (len(HTTP_POOLS) + 1)
    assert len(ran) == 2 * len(HTTP_POOLS)  # owa2's checks are owa's
    assert [r.result for r in rows[-2:]] == [r.result for r in rows[:2]]
