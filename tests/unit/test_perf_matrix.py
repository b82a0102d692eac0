"""perf.matrix's pure parts: the configs it writes (checked by their own programs), the
ratios, the idle counts it can hold, and the report built from a results document."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trustme

from lb.config import load
from perf import tools
from perf.l7bench import read_wrk
from perf.matrix import configs, idlemem, report, runner, summary, svg
from perf.matrix.configs import L4Ports, L7Ports

L7 = L7Ports(plain=20001, tls=20002, origin=30001, admin=29999)
L4 = L4Ports(bulk=20011, hold=20012, iperf=30011, origin=30001, admin=29998)


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    cert = trustme.CA().issue_cert("127.0.0.1")
    path = tmp_path / "cert.pem"
    path.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems)
                     + cert.private_key_pem.bytes())
    return path


def test_caslb_configs_load_with_the_ports_given(tmp_path: Path, pem: Path) -> None:
    l7, l4 = tmp_path / "l7.toml", tmp_path / "l4.toml"
    l7.write_text(configs.caslb_l7(L7, pem))
    l4.write_text(configs.caslb_l4(L4))
    seven = load(l7)
    assert sorted(fe.port for fe in seven.frontends) == [20001, 20002]
    assert [(s.host, s.port) for s in seven.pools["origin"].servers] == [("127.0.0.1", 30001)]
    four = load(l4)
    assert {name: [s.port for s in pool.servers] for name, pool in four.pools.items()} == {
        "bulk": [30011], "hold": [30001]}


@pytest.mark.skipif(tools.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("layer", ["l7", "l4", "l4-splice"])
def test_haproxy_accepts_the_matrix_configs(tmp_path: Path, pem: Path, layer: str) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(configs.haproxy_l7(L7, pem) if layer == "l7" else
                   configs.haproxy_l4(L4, splice=layer == "l4-splice"))
    done = subprocess.run([str(tools.which("haproxy")), "-c", "-f", str(cfg)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(tools.which("nginx") is None, reason="nginx is not installed")
@pytest.mark.parametrize("which", ["origin", "l7", "l4"])
def test_nginx_accepts_the_matrix_configs(tmp_path: Path, pem: Path, which: str) -> None:
    text = {"origin": lambda: configs.nginx_origin(tmp_path, 30001),
            "l7": lambda: configs.nginx_l7(tmp_path, L7, pem),
            "l4": lambda: configs.nginx_l4(tmp_path, L4)}[which]()
    if which == "l4" and not Path(runner.NGINX_STREAM).exists():
        pytest.skip("libnginx-mod-stream is not installed")
    cfg = tmp_path / "nginx.conf"
    cfg.write_text(text)
    done = subprocess.run([str(tools.which("nginx")), "-t", "-c", str(cfg)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _l7(proxy: str, conns: int, rps: float) -> dict[str, Any]:
    return {"key": f"l7 {proxy} c{conns} 100B plain ka", "proxy": proxy, "connections": conns,
            "body": "100B", "tls": False, "keepalive": True, "throughput": rps,
            "cpu_per_op": 300.0 if proxy == "caslb" else 12.0, "cpu_by_process": [300.0],
            "p50_ms": 1.0, "p99_ms": 4.0, "max_ms": 9.5, "errors": 0, "load": 1.5}


def test_ratios_are_against_haproxy_in_the_same_row_only() -> None:
    rows = [_l7("caslb", 16, 1000), _l7("haproxy", 16, 40000), _l7("caslb", 64, 900)]
    runner.add_ratios(rows)
    assert [r["ratio"] for r in rows] == [0.025, 1.0, None]


def test_idle_counts_stop_below_what_the_descriptor_limit_holds() -> None:
    top = configs.MAXCONN - idlemem.WARMUP - 50
    assert runner.idle_counts((1000, top + 1, top + 500)) == (min(1000, top), top)


def test_report_has_a_line_per_row_the_summary_and_a_curve_per_proxy() -> None:
    rows = [_l7(p, c, r) for p, c, r in (("caslb", 64, 1000), ("haproxy", 64, 40000),
                                         ("caslb", 1, 800), ("haproxy", 1, 6000))]
    runner.add_ratios(rows)
    document = {"l7": rows, "l4": [], "idle": [], "failed": {"l7 nginx c1": "why"}}
    text = report.markdown(document, ["l7-100B-plain-keepalive.svg"])
    assert "| 100B | 64 | caslb | 1,000 | 1.00 | 4.00 | 9.5 | 300 | 0.03× | 0 | 1.5 |" in text
    assert "| … CPU per request, µs | 300 | 12 |" in summary.summary(document)
    assert "- `l7 nginx c1`: why" in text
    picture = svg.curve_svg("t", rows)
    assert picture.count("<polyline") == 4  # two proxies, two panels


WRK_OUT = """Running 1s test @ http://127.0.0.1:8080/bench/100B
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.90ms    2.10ms   1.21s    91.20%
    Req/Sec     3.20k   120.00     3.40k    70.00%
  Latency Distribution
     50%    4.89ms
     75%    5.30ms
     90%    6.01ms
     99%   12.59ms
  3197 requests in 1.00s, 1.01MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   3197.00
Transfer/sec:      1.01MB
"""


def test_wrk_output_gives_percentiles_the_slowest_request_and_errors() -> None:
    measure = read_wrk(WRK_OUT)
    assert (measure.rps, measure.requests, measure.errors) == (3197.0, 3197, 3)
    assert (measure.p50_ms, measure.p99_ms, measure.max_ms) == (4.89, 12.59, 1210.0)
