"""Which Host values name the admin listener (lb.admin.guard.listener_hosts), and
`[admin] names` in the config."""

from __future__ import annotations

import tomllib

import pytest

from lb.admin.guard import listener_hosts
from lb.config import ConfigError, parse

ADMIN = """
[admin]
bind = "{bind}"
token = "t0ken"
{extra}
[frontends.tcp]
bind = "127.0.0.1:1"
mode = "tcp"
pool = "p"
[pools.p]
servers = [{{ name = "s", address = "127.0.0.1:2" }}]
"""


@pytest.mark.parametrize("host", ["10.1.2.3:9090", "192.0.2.7:9090", "[2001:db8::5]:9090",
                                  "0.0.0.0:9090", "LB1.lab.example:9090", "lb1.lab.example"])
def test_a_wildcard_bind_serves_ip_literals_on_its_port_and_configured_names(host: str) -> None:
    hosts = listener_hosts([("0.0.0.0", 9090)], ["lb1.lab.example"])
    assert host in hosts


@pytest.mark.parametrize("host", ["10.1.2.3:9091", "10.1.2.3", "evil.example:9090",
                                  "2001:db8::5:9090", "[not-an-ip]:9090", "10.1.2.3:x", ""])
def test_a_wildcard_bind_still_refuses_names_and_other_ports(host: str) -> None:
    assert host not in listener_hosts([("0.0.0.0", 9090)], ["lb1.lab.example"])


def test_a_specific_bind_serves_only_its_own_address_and_names() -> None:
    hosts = listener_hosts([("10.1.2.3", 9090)], ["lb1.lab.example"])
    assert "10.1.2.3:9090" in hosts and "lb1.lab.example:9090" in hosts
    assert "10.1.2.4:9090" not in hosts and "127.0.0.1:9090" not in hosts


def test_an_ipv6_wildcard_serves_both_families_literals() -> None:
    hosts = listener_hosts([("::", 9090)])
    assert "[2001:db8::5]:9090" in hosts and "192.0.2.7:9090" in hosts


def config(bind: str, extra: str = "") -> str:
    return ADMIN.format(bind=bind, extra=extra)


def test_admin_names_are_read_lower_cased() -> None:
    parsed = parse(tomllib.loads(config("0.0.0.0:9090", 'names = ["LB1.Lab.Example", "lb1"]')))
    assert parsed.admin.names == ("lb1.lab.example", "lb1")


def test_a_bad_admin_name_names_its_key_path() -> None:
    with pytest.raises(ConfigError) as raised:
        parse(tomllib.loads(config("0.0.0.0:9090", 'names = ["lb1", "http://lb2/"]')))
    assert ("admin.names", "entry 2 must be a host name, got 'http://lb2/'") in raised.value.errors
