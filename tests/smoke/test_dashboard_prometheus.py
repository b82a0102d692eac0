"""The Grafana dashboard proven on a real Prometheus: every panel's query returns data.

Debian's Prometheus scrapes a real `caslb run` (mode l7, every protocol) and the
casfarm behind it every second, with the shipped recording rules loaded, while
the test drives a scenario: traffic on every HTTP vdir and on IMAP, POP and
SMTP, a crash and its recovery, then a 5xx burst behind a green probe until
outlier detection ejects the server. Then every panel's query goes through
/api/v1/query. The dashboard's `$__rate_interval` is Grafana's; here it is 1m,
which covers the whole scenario, and `$pool` is `.*` (Grafana's "All").
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import casfarm
import pytest
import trio
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP

from tests.farmclient import https_client
from tests.smoke.prometheus import EXAMPLES, finite_values, running_prometheus, scrape_config
from tests.smoke.test_app_l4 import l4_config, mail_session
from tests.smoke.test_app_l7 import NAMESPACE
from tests.smoke.test_cli_run import CASLB, free_port, wait_status

pytestmark = pytest.mark.smoke

PORTS = ("https", "imaps", "pops", "smtp", "submission")
# One request per HTTP vdir, each answered 2xx-4xx by a healthy casfarm.
VDIR_REQUESTS = (
    ("GET", "/owa/"), ("GET", "/ecp/"), ("POST", "/EWS/Exchange.asmx"),
    ("POST", "/mapi/emsmdb/"), ("GET", "/rpc/rpcproxy.dll"), ("GET", "/OAB/oab.xml"),
    ("OPTIONS", "/Microsoft-Server-ActiveSync"), ("POST", "/Autodiscover/Autodiscover.xml"),
)
RATE_INTERVAL = "1m"


def lab_config(farm: casfarm.Farm, listen: dict[str, int], admin_port: int) -> str:
    """Mode l7 over every protocol, on fixed ports (Prometheus must know the admin's)."""
    cert = Path(farm.ca_path).parent / "cas1.pem"
    ports = ", ".join(f"{k} = {v}" for k, v in listen.items())
    return l4_config(farm, "l7") + f"""
tls = {{ cert = "{cert}", key = "{cert}" }}
listen = {{ {ports} }}
[admin]
bind = "127.0.0.1:{admin_port}"
[logging]
format = "json"
"""


async def http_round(farm: casfarm.Farm, port: int, source: str = "127.0.0.1") -> None:
    """One request per vdir on one keep-alive connection."""
    client = await https_client("127.0.0.1", port, ca_path=farm.ca_path,
                                server_hostname=NAMESPACE, local_address=source)
    try:
        for method, path in VDIR_REQUESTS:
            body = SOAP if method == "POST" else b""
            response = await client.request(method, path, body=body)
            assert response.status < 500, (path, response.status)
    finally:
        await client.aclose()


async def mail_round(farm: casfarm.Farm, listen: dict[str, int]) -> None:
    for kind in ("imaps", "pops", "smtp", "submission"):
        await trio.to_thread.run_sync(mail_session, "smtp" if kind == "submission" else kind,
                                      "127.0.0.1", listen[kind], farm.ca_path)


async def ews_burst(port: int, farm: casfarm.Farm, n: int) -> None:
    """EWS calls from `n` users, one connection each (one client alone cannot eject)."""
    for i in range(n):
        client = await https_client("127.0.0.1", port, ca_path=farm.ca_path,
                                    server_hostname=NAMESPACE, local_address=f"127.0.4.{i + 1}")
        try:
            await client.request("POST", "/EWS/Exchange.asmx", body=SOAP)
        finally:
            await client.aclose()


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", RATE_INTERVAL)
         .replace("$pool", ".*"))
        for panel in dashboard["panels"] for target in panel["targets"]
    ]


async def test_every_dashboard_panel_returns_data_after_a_scripted_scenario(
    tmp_path: Path,
) -> None:
    listen = {k: free_port() for k in PORTS}
    admin_port, prometheus_port = free_port(), free_port()
    async with casfarm.running(servers=3, heartbeat=0.2, pending_period=0.05,
                               oab_size=1000) as farm:
        config = tmp_path / "caslb.toml"
        config.write_text(lab_config(farm, listen, admin_port))
        assert farm.control_url is not None
        jobs = {"caslb": f"127.0.0.1:{admin_port}", "casfarm": urlsplit(farm.control_url).netloc}
        rules = [EXAMPLES / "prometheus-rules.yml", EXAMPLES / "prometheus-recording-rules.yml"]
        log = (tmp_path / "caslb.log").open("w")
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                lambda task_status: trio.run_process(
                    [*CASLB, "run", str(config)], check=False, task_status=task_status,
                    stdout=subprocess.DEVNULL, stderr=log))
            try:
                await wait_status(f"http://127.0.0.1:{admin_port}", process)
                async with running_prometheus(scrape_config(jobs, rules), prometheus_port,
                                              tmp_path) as prometheus:
                    await prometheus.wait_until('up{job="caslb"} == 1')
                    await prometheus.wait_until('up{job="casfarm"} == 1')
                    await prometheus.wait_until(
                        'min(caslb_server_status{state="UP"}) == 1')
                    await http_round(farm, listen["https"])
                    await mail_round(farm, listen)

                    farm.inject("cas2", "crash")
                    for _ in range(3):  # refused on cas2, retried elsewhere
                        await http_round(farm, listen["https"])
                        await mail_round(farm, listen)
                    await prometheus.wait_until(
                        'caslb_server_status{pool="owa", server="cas2", state="DOWN"} == 1')
                    farm.clear("cas2", "crash")
                    await prometheus.wait_until(
                        'min(caslb_server_status{server="cas2", state="UP"}) == 1')

                    farm.inject("cas1", "errors", vdir="ews", status=500)
                    await ews_burst(listen["https"], farm, 30)
                    await prometheus.wait_until('caslb:server_state:code'
                                                '{pool="ews", server="cas1"} == 5')
                    farm.clear("cas1", "errors")
                    await http_round(farm, listen["https"])
                    await mail_round(farm, listen)
                    await prometheus.wait_until(
                        'sum(casfarm_faulted_requests_total{server="cas1", vdir="ews"}) > 0')
                    await prometheus.wait_until(
                        'sum(increase(caslb_server_check_up_down_total{server="cas2"}[1m])) > 0')

                    empty = []
                    for title, expr in panel_queries():
                        result = await trio.to_thread.run_sync(prometheus.query, expr)
                        if not finite_values(result):
                            empty.append((title, expr, result))
                    grid = await trio.to_thread.run_sync(prometheus.query,
                                                         "caslb:server_state:code")
                    cells = {(c["metric"]["server"], c["metric"]["pool"]) for c in grid}
                    pools = {pool for _, pool in cells}
                    assert len(pools) >= 11 and len(cells) == 3 * len(pools)  # server × protocol
                    assert not empty, "\n".join(f"{t}: {e} -> {r}" for t, e, r in empty)
                    # The connection and connect-time panels are fed by the L7 path
                    # itself, not only by the mail frontends beside it.
                    for expr in ('caslb_frontend_connections_total{frontend="https"} > 0',
                                 'caslb_server_connect_time_seconds_count{pool="ews"} > 0'):
                        result = await trio.to_thread.run_sync(prometheus.query, expr)
                        assert finite_values(result), (expr, result)
            finally:
                process.terminate()
        log.close()
    check_json_log(tmp_path / "caslb.log")


def check_json_log(path: Path) -> None:
    """`[logging] format = "json"`: every line an object; start-up, checks, httplog and tcplog
    structured."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert any(d.get("event") == "serving" and "https" in d["frontends"] for d in lines)
    checks = [(d["level"], d["state"]) for d in lines
              if d.get("event") == "check" and d["server"] == "cas2" and d["pool"] == "owa"]
    assert ("WARNING", "DOWN") in checks and ("INFO", "UP") in checks  # good news is INFO
    access = [d for d in lines if d["logger"] == "caslb.access"]
    http = [d for d in access if "http_request" in d]
    assert {d["backend_name"] for d in http} >= {"owa", "ews", "mapi", "eas"}
    assert all(d["http_request"].endswith(" HTTP/1.1") for d in http)
    tcp = [d for d in access if "Tt" in d]  # the mail frontends' tcplog lines
    assert len(http) + len(tcp) == len(access)
    assert {d["frontend_name"] for d in tcp} >= {"imaps", "pops", "smtp", "submission"}
    states = {d["termination_state"] for d in tcp}
    assert "--" in states and all(re.fullmatch(r"[-CSPKcs][-RCD]", t) for t in states), states
