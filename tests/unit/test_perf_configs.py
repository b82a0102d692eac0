"""The configs the failover harness writes for each balancer, checked by the balancers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lb.config import load
from perf import l4bench, l7bench, tools
from perf.failover.designs.caslb import render_config as caslb_config
from perf.failover.designs.haproxy import (
    Ports,
    parse_stat,
    write_pem,
)
from perf.failover.designs.haproxy import (
    render_config as haproxy_config,
)
from perf.failover.farm import FarmInfo, FarmServer, parse_ready
from perf.failover.settings import ProbeSettings

PORTS = {"https": 8443, "imaps": 9933, "pops": 9955, "smtp": 2525, "submission": 5587}
FARM = FarmInfo(
    tuple(
        FarmServer(f"cas{i}", f"cas{i}.lab.local", f"127.0.0.1{i}", dict(PORTS)) for i in (1, 2, 3)
    ),
    Path("/tmp/ca.pem"),
)
PROBES = ProbeSettings(inter=1.0, fastinter=0.25, rise=2, fall=2, timeout=1.0)


@pytest.mark.parametrize("mode", ["l4", "l4-sni", "l7"])
def test_caslb_config_loads_with_the_run_probe_settings(tmp_path: Path, mode: str) -> None:
    listen = {k: 20000 + i for i, k in enumerate(PORTS)}
    tls = (tmp_path / "c.pem", tmp_path / "k.pem") if mode == "l7" else None
    path = tmp_path / "caslb.toml"
    path.write_text(caslb_config(FARM, PROBES, mode, listen, 29999, tls))
    config = load(path)
    https = next(fe for fe in config.frontends if fe.port == listen["https"])
    assert https.mode.value == {"l4": "tcp", "l4-sni": "sni", "l7": "http"}[mode]
    pools = ["https"] if mode == "l4" else ["owa", "ews", "mapi", "rpc", "eas", "autodiscover"]
    for name in [*pools, "imap", "pop", "smtp"]:
        pool = config.pools[name]
        assert [s.name for s in pool.servers] == ["cas1", "cas2", "cas3"]
        assert pool.check is not None
        timing = pool.check.timing
        assert (timing.inter, timing.fastinter, timing.rise, timing.fall) == (1.0, 0.25, 2, 2)
    if mode == "l4-sni":
        assert https.sni_map["ews.mail.lab.local"] == "ews"


def test_caslb_config_can_turn_slow_start_off_for_every_pool(tmp_path: Path) -> None:
    listen = {k: 20000 + i for i, k in enumerate(PORTS)}
    tls = (tmp_path / "c.pem", tmp_path / "k.pem")
    path = tmp_path / "caslb.toml"
    path.write_text(caslb_config(FARM, PROBES, "l7", listen, 29999, tls))
    assert load(path).pools["owa"].slowstart == 30.0  # the shorthand's
    path.write_text(caslb_config(FARM, PROBES, "l7", listen, 29999, tls, slowstart=0.0))
    assert {p.slowstart for p in load(path).pools.values()} == {0.0}


def test_caslb_config_refuses_a_bad_mode() -> None:
    with pytest.raises(ValueError, match="unknown caslb mode 'l5'"):
        caslb_config(FARM, PROBES, "l5", {}, 1, None)


@pytest.mark.skipif(tools.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_haproxy_accepts_its_config(tmp_path: Path, mode: str) -> None:
    pem = write_pem(FARM, tmp_path) if mode == "http" else None
    ports = Ports(18443, {"imap": 19933, "pop": 19955, "smtp": 12525})
    text = haproxy_config(FARM, PROBES, ports, tmp_path / "s.sock", mode, pem)
    assert "fastinter 250ms" in text and "option redispatch" in text
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    command = [str(tools.which("haproxy")), "-c", "-f", str(cfg)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_haproxy_config_refuses_http_without_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a certificate"):
        haproxy_config(FARM, PROBES, Ports(1, {}), tmp_path / "s", "http")


def test_parse_stat_keeps_server_rows() -> None:
    text = (
        "# pxname,svname,status,check_status\n"
        "https,FRONTEND,OPEN,\nhttps,cas1,UP 1/2,L7OK\nhttps,cas2,DOWN,L4CON\nhttps,BACKEND,UP,\n"
    )
    assert parse_stat(text) == {("https", "cas1"): "UP 1/2", ("https", "cas2"): "DOWN"}


def test_parse_ready_names_a_bad_line() -> None:
    with pytest.raises(ValueError, match="not ready"):
        parse_ready("Traceback (most recent call last):")


def test_l4bench_caslb_config_has_tcp_checked_static_pools(tmp_path: Path) -> None:
    path = tmp_path / "l4.toml"
    path.write_text(l4bench.caslb_config((20001, 20002), (30001, 30002), 29999))
    config = load(path)
    assert sorted(fe.port for fe in config.frontends) == [20001, 20002]
    for name, port in (("bulk", 30001), ("ping", 30002)):
        pool = config.pools[name]
        assert [(s.host, s.port) for s in pool.servers] == [("127.0.0.1", port)]
        assert pool.check is not None and pool.check.timing.inter == 2.0


def test_l7bench_caslb_config_checks_the_path_its_backend_answers(tmp_path: Path) -> None:
    path = tmp_path / "l7.toml"
    path.write_text(l7bench.caslb_config(20001, 30001, 29999))
    config = load(path)
    (frontend,) = config.frontends
    assert frontend.mode.value == "http" and frontend.port == 20001
    check = config.pools["bench"].check
    assert check is not None and check.timing.inter == 2.0
    assert l7bench.CHECK in l7bench.BACKEND_CFG.format(host="h", port=1, check=l7bench.CHECK)


@pytest.mark.skipif(tools.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize(
    "text",
    [
        l4bench.HAPROXY_DEFAULT.format(
            backends=l4bench.HAPROXY_PAIR.format(host="127.0.0.1", port=18001, target=18002)
        ),
        l4bench.HAPROXY_TUNED.format(
            backends=l4bench.HAPROXY_PAIR.format(host="127.0.0.1", port=18001, target=18002)
        ),
        l7bench.BACKEND_CFG.format(host="127.0.0.1", port=18001, check=l7bench.CHECK),
        l7bench.PROXY_CFG.format(host="127.0.0.1", port=18001, target=18002, check=l7bench.CHECK),
    ],
    ids=["l4-default", "l4-splice", "l7-backend", "l7-proxy"],
)
def test_haproxy_accepts_the_bench_configs(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    command = [str(tools.which("haproxy")), "-c", "-f", str(cfg)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
