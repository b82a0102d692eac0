"""The deployment examples: the systemd unit, the keepalived pair and the HAProxy config.

The files are read as their programs read them: the unit with configparser (and
`systemd-analyze verify` when installed), the HAProxy config with `haproxy -c` on a
copy whose certificate paths point at files made here. HAProxy is never started.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from lb.config import load
from lb.config.model import Config
from perf.ha.keepalived import node_config, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
UNIT = EXAMPLES / "systemd" / "caslb.service"
SOCKET = EXAMPLES / "systemd" / "caslb.socket"
HAPROXY_CFG = EXAMPLES / "haproxy" / "haproxy.cfg"
L7_CONFIG = ROOT / "config" / "l7-single-namespace.toml"


def read_unit() -> configparser.RawConfigParser:
    # strict=False: systemd allows a key twice (SystemCallFilter); the last one wins here.
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", text.strip())
    assert match, f"not a systemd time span: {text!r}"
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_unit_runs_checks_reloads_and_drains() -> None:
    service = read_unit()["Service"]
    start = service["ExecStart"].split()
    assert start[0].endswith("/caslb") and start[1:] == ["run", "/etc/caslb/caslb.toml"]
    assert service["ExecStartPre"].split() == [start[0], "check", start[2]]
    assert service["ExecReload"].split() == ["/bin/kill", "-HUP", "$MAINPID"]
    assert service["KillSignal"] == "SIGTERM"
    stop = seconds(service["TimeoutStopSec"])
    assert stop > Config(frontends=(), pools={}).grace
    assert stop > load(L7_CONFIG).grace


def test_unit_runs_unprivileged_and_hardened() -> None:
    service = read_unit()["Service"]
    assert service["User"] not in ("", "root")
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert int(service["LimitNOFILE"]) >= 65536
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert service[option] == "yes", option
    assert service["ProtectSystem"] == "strict"
    assert read_unit()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_tells_systemd_when_it_is_ready() -> None:
    service = read_unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()  # the notify socket


def test_socket_unit_listens_on_each_frontend_of_the_example_config() -> None:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    # ListenStream repeats: configparser keeps the last, so count the lines themselves.
    text = SOCKET.read_text()
    parser.read_string(text)
    listens = re.findall(r"^ListenStream=(\S+)$", text, re.MULTILINE)
    assert listens == [f"{fe.host}:{fe.port}" for fe in load(L7_CONFIG).frontends]
    assert parser["Socket"]["Service"] == UNIT.name
    assert parser["Install"]["WantedBy"] == "sockets.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists the binary exists: point the copies at this checkout's caslb.
    caslb = Path(sys.executable).with_name("caslb")
    for unit in (UNIT, SOCKET):
        (tmp_path / unit.name).write_text(
            unit.read_text().replace("/usr/local/bin/caslb", str(caslb)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / UNIT.name), str(tmp_path / SOCKET.name)],
        capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def keepalived(name: str) -> str:
    return (EXAMPLES / "keepalived" / f"keepalived-{name}.conf").read_text()


def setting(text: str, key: str) -> str:
    match = re.search(rf"^\s*{key}\s+(\S+)", text, re.MULTILINE)
    assert match, key
    return match[1]


def test_keepalived_pair_mirrors_itself() -> None:
    master, backup = keepalived("master"), keepalived("backup")
    # nopreempt, which keepalived honours only in state BACKUP: a node that comes back
    # leaves the VIP (and its clients) where it is.
    for text in (master, backup):
        assert setting(text, "state") == "BACKUP" and re.search(r"^\s*nopreempt\b", text, re.M)
    assert int(setting(master, "priority")) > int(setting(backup, "priority"))
    for key in ("virtual_router_id", "advert_int", "interface", "script_user"):
        assert setting(master, key) == setting(backup, key), key
    # Each node checks its own admin API, bound to its own address.
    for text in (master, backup):
        script = re.search(r'^\s*script "(\S+) (\S+)"', text, re.M)
        assert script and script[2] == f"http://{setting(text, 'unicast_src_ip')}:9090"
    # Each node's peer is the other's source; both carry the same VIP.
    peer = re.compile(r"unicast_peer\s*\{\s*(\S+)")
    assert peer.search(master)[1] == setting(backup, "unicast_src_ip")  # type: ignore[index]
    assert peer.search(backup)[1] == setting(master, "unicast_src_ip")  # type: ignore[index]
    vip = re.compile(r"virtual_ipaddress\s*\{\s*(\S+)")
    assert vip.search(master)[1] == vip.search(backup)[1]  # type: ignore[index]
    assert setting(master, "script").strip('"').endswith("/check_caslb.sh")


def test_keepalived_uses_documentation_addresses_only() -> None:
    documentation = ipaddress.ip_network("192.0.2.0/24")
    for text in (keepalived("master"), keepalived("backup")):
        found = re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", text)
        others = {a for a in found if ipaddress.ip_address(a) not in documentation}
        assert found and not others, others


def test_the_pair_test_runs_the_examples_with_its_own_addresses_only() -> None:
    nodes = {"lb1": "10.99.0.11", "lb2": "10.99.0.12"}
    master = node_config("lb1", "10.99.0.10", nodes, Path("/x/check.sh"))
    assert "192.0.2." not in master and "/etc/keepalived/check_caslb.sh" not in master
    assert 'script "/x/check.sh http://10.99.0.11:9090"' in master
    assert "unicast_src_ip 10.99.0.11" in master and "10.99.0.10/24 dev eth0" in master
    with pytest.raises(ValueError, match=re.escape("no longer contains '192.0.2.99'")):
        render(master, {"192.0.2.99": "x"})


def haproxy_sections() -> dict[str, list[str]]:
    """`"backend owa"` → its setting lines, comments dropped."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if not line[0].isspace():
            current = sections.setdefault(line, [])
        else:
            current.append(line.strip())
    return sections


def span(value: float) -> str:
    """Seconds as HAProxy's shortest unit: 2s, 15m, 1h."""
    for unit, size in (("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def test_haproxy_backends_mirror_the_l7_pools() -> None:
    config = load(L7_CONFIG)
    sections = haproxy_sections()
    defaults = " ".join(sections["defaults"])
    for pool in config.pools.values():
        lines = sections[f"backend {pool.name}"]
        assert pool.check is not None and pool.idle_timeout is not None and pool.observe
        timing, spec = pool.check.timing, pool.check.spec
        server_defaults = (
            f"inter {span(timing.inter)} fastinter {span(timing.fastinter or timing.inter)} "
            f"downinter {span(timing.downinter or timing.inter)} "
            f"rise {timing.rise} fall {timing.fall} slowstart {span(pool.slowstart)} "
            f"observe layer4 error-limit {pool.observe.error_limit} "
            f"on-error {pool.observe.on_error.value}"
        )
        assert server_defaults in defaults
        assert "balance leastconn" in lines and pool.balance.value == "leastconn"
        assert f"timeout server {span(pool.idle_timeout)}" in lines
        check_timeout = [line for line in lines if line.startswith("timeout check")]
        assert (check_timeout or ["timeout check 2s"]) == [f"timeout check {span(spec.timeout)}"]
        if spec.path is not None:
            assert f"option httpchk GET {spec.path}" in lines
            assert "http-check expect status 200" in lines
        servers = [line for line in lines if line.startswith("server ")]
        assert [s.split()[1] for s in servers] == [m.name for m in pool.servers]
        for server, member in zip(servers, pool.servers, strict=True):
            assert f" {member.host}:{member.port} " in server
            assert (" on-marked-down shutdown-sessions" in server) == pool.reset_on_down
            if spec.tls:
                assert f"check-ssl check-sni {member.fqdn}" in server
                assert f"verify required ca-file {spec.ca_file}" in server
            if pool.upstream_tls is not None:
                assert f"ssl verify required ca-file {pool.upstream_tls.ca_file}" in server


def test_haproxy_frontends_mirror_the_l7_frontends() -> None:
    config = load(L7_CONFIG)
    sections = haproxy_sections()
    for frontend in config.frontends:
        lines = sections[f"frontend {frontend.name}"]
        binds = [line for line in lines if line.startswith("bind ")]
        assert binds[0].split()[1] == f"{frontend.host}:{frontend.port}"
        assert f"timeout client {span(frontend.idle_timeout)}" in lines
        assert ("mode tcp" in lines) == (frontend.mode.value == "tcp")
        assert f"default_backend {frontend.pool or frontend.default_pool}" in lines
        for vdir, pool in frontend.routes.items():
            assert f"acl is_{pool} path -i {vdir}" in lines
            assert f"acl is_{pool} path_beg -i {vdir}/" in lines
            assert f"use_backend {pool} if is_{pool}" in lines
        for cert in frontend.tls:
            assert f"ssl crt {cert.cert_file}" in binds[0]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("mail.contoso.com")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "mail.contoso.com.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "mail.contoso.com.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "contoso-ca.pem"))
    copy = tmp_path / "haproxy.cfg"
    copy.write_text(HAPROXY_CFG.read_text().replace("/etc/caslb/", f"{tmp_path}/"))
    # -c parses and loads certificates only: no socket is bound, no server contacted.
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout + result.stderr
