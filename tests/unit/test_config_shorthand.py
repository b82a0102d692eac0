"""The [exchange] shorthand: what each mode expands to, and its errors."""

from __future__ import annotations

import tomllib

import pytest

from lb.balancer import Balance
from lb.config import Config, ConfigError, Mode, parse
from probes.catalog import HTTP_PROTOCOLS, PROTOCOLS, CheckKind

FARM = """\
[exchange]
namespace = "mail.contoso.com"
mode = "{mode}"
bind = "127.0.0.1"
servers = [
  {{ name = "cas1", address = "127.0.0.11", fqdn = "cas1.contoso.com" }},
  {{ name = "cas2", address = "127.0.0.12", fqdn = "cas2.contoso.com" }},
]
"""
TLS = 'tls = { cert = "mail.pem", key = "mail.key" }\n'


def _farm(mode: str, extra: str = "") -> Config:
    tls = TLS if mode == "l7" else ""
    return parse(tomllib.loads(FARM.format(mode=mode) + tls + extra))


def _errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(text))
    return info.value.errors


def test_ten_lines_front_a_whole_farm() -> None:
    text = FARM.format(mode="l7") + TLS
    assert len(text.splitlines()) <= 10
    config = parse(tomllib.loads(text))
    assert [(f.name, f.mode, f.port) for f in config.frontends] == [
        ("https", Mode.HTTP, 443), ("imaps", Mode.TCP, 993), ("pops", Mode.TCP, 995),
        ("smtp", Mode.TCP, 25), ("submission", Mode.TCP, 587),
    ]
    assert list(config.pools) == [*HTTP_PROTOCOLS, "imap", "pop", "smtp", "submission"]


def test_imap_143_and_pop_110_listen_when_asked_and_their_checks_upgrade() -> None:
    config = _farm("l4", 'ca_file = "ca.pem"\nlisten = { imap = 143, pop = 1110 }\n')
    fronts = {f.name: f for f in config.frontends}
    assert [f.name for f in config.frontends] == [
        "https", "imaps", "imap", "pops", "pop", "smtp", "submission"]
    assert (fronts["imap"].mode, fronts["imap"].port, fronts["imap"].pool) == (
        Mode.TCP, 143, "imap-starttls")
    assert (fronts["pop"].port, fronts["pop"].pool) == (1110, "pop-starttls")
    for name, kind, port in (("imap-starttls", CheckKind.IMAP, 143),
                             ("pop-starttls", CheckKind.POP, 110)):
        pool = config.pools[name]
        assert pool.check is not None and [s.port for s in pool.servers] == [port, port]
        spec = pool.check.spec
        assert (spec.kind, spec.starttls, spec.tls) == (kind, True, False)
        assert spec.ca_file is not None and spec.ca_file.endswith("ca.pem")


def test_l7_routes_each_vdir_to_its_own_checked_pool() -> None:
    config = _farm("l7")
    https = config.frontends[0]
    assert dict(https.routes) == {PROTOCOLS[p].vdir: p for p in HTTP_PROTOCOLS}
    assert https.default_pool == "owa" and https.tls[0].cert_file == "mail.pem"
    assert https.idle_timeout == max(PROTOCOLS[p].idle_timeout for p in HTTP_PROTOCOLS)
    for name in HTTP_PROTOCOLS:
        pool = config.pools[name]
        assert pool.protocol == name and pool.upstream_tls is not None
        assert pool.check is not None
        assert pool.check.spec.path == PROTOCOLS[name].healthcheck_path
        assert pool.check.spec.expect_fqdn and pool.check.spec.tls
        assert pool.reset_on_down is PROTOCOLS[name].long_lived
        assert pool.balance is Balance.LEASTCONN and pool.slowstart == 30.0
        assert [s.port for s in pool.servers] == [443, 443]
    assert any("same certificate" in note for note in config.notes)


def test_l4_is_one_pool_checked_on_owa_only() -> None:
    config = _farm("l4")
    https = config.frontends[0]
    assert (https.mode, https.pool) == (Mode.TCP, "https")
    pool = config.pools["https"]
    assert pool.protocol is None and pool.check is not None
    assert pool.check.spec.kind is CheckKind.HEALTHCHECK
    assert pool.check.spec.path == "/owa/healthcheck.htm"
    # The one pool carries every https protocol: the longest idle time, and resets.
    assert pool.idle_timeout == PROTOCOLS["eas"].idle_timeout and pool.reset_on_down
    assert set(config.pools) == {"https", "imap", "pop", "smtp", "submission"}


def test_l4_check_can_pick_another_vdir() -> None:
    config = _farm("l4", 'l4_check = "mapi"\n')
    check = config.pools["https"].check
    assert check is not None and check.spec.path == "/mapi/healthcheck.htm"


def test_l4_sni_routes_protocol_names_to_protocol_pools() -> None:
    config = _farm("l4-sni", '[exchange.hostnames]\nautodiscover = "autodiscover.contoso.com"\n')
    https = config.frontends[0]
    assert https.mode is Mode.SNI and https.default_pool == "owa"
    assert https.sni_map["ews.mail.contoso.com"] == "ews"
    assert https.sni_map["autodiscover.contoso.com"] == "autodiscover"
    assert "autodiscover.mail.contoso.com" not in https.sni_map
    assert https.sni_map["mail.contoso.com"] == "owa"
    assert all(config.pools[p].upstream_tls is None for p in HTTP_PROTOCOLS)
    assert any("autodiscover.contoso.com → autodiscover" in n for n in config.notes)


def test_port_maps_for_labs() -> None:
    text = FARM.format(mode="l4-sni").replace(
        'fqdn = "cas2.contoso.com" }',
        'fqdn = "cas2.contoso.com", ports = { imaps = 10993 } }',
    ) + "ports = { https = 8443, imaps = 9993 }\nlisten = { https = 1443, smtp = 2525 }\n"
    config = parse(tomllib.loads(text))
    assert [s.port for s in config.pools["owa"].servers] == [8443, 8443]
    assert [s.port for s in config.pools["imap"].servers] == [9993, 10993]
    ports = {f.name: f.port for f in config.frontends}
    assert ports == {"https": 1443, "imaps": 993, "pops": 995, "smtp": 2525, "submission": 587}


def test_protocol_subset_and_settings_for_every_pool() -> None:
    config = _farm("l7", 'protocols = ["EWS", "imap"]\nbalance = "wrr"\ninter = "1s"\n'
                   'fall = 2\nslowstart = "0s"\n')
    assert list(config.pools) == ["ews", "imap"]
    assert config.frontends[0].default_pool == "ews"
    assert [f.name for f in config.frontends] == ["https", "imaps"]
    for pool in config.pools.values():
        assert pool.balance is Balance.WRR and pool.slowstart == 0.0
        assert pool.check is not None
        assert (pool.check.timing.inter, pool.check.timing.fall) == (1.0, 2)


def test_per_pool_overrides() -> None:
    config = _farm("l7", '[exchange.overrides.eas]\ndrain_grace = "5m"\nrise = 3\n'
                   'reset_on_down = false\n')
    eas, owa = config.pools["eas"], config.pools["owa"]
    assert eas.drain_grace == 300.0 and eas.reset_on_down is False
    assert eas.check is not None and eas.check.timing.rise == 3
    assert owa.drain_grace == 30.0 and owa.check is not None and owa.check.timing.rise == 2


def test_reuse_may_be_overridden_per_pool() -> None:
    config = _farm("l7", '[exchange.overrides.owa]\nreuse = "never"\n')
    assert config.pools["owa"].reuse.value == "never"
    assert config.pools["ews"].reuse.value == "safe"


def test_ca_file_and_verify_reach_checks_and_reencryption() -> None:
    config = _farm("l7", 'ca_file = "lab-ca.pem"\n')
    owa = config.pools["owa"]
    assert owa.check is not None and owa.check.spec.ca_file == "lab-ca.pem"
    assert owa.upstream_tls is not None and owa.upstream_tls.ca_file == "lab-ca.pem"


def test_shorthand_and_generic_tables_mix() -> None:
    config = _farm("l4", '[frontends.owa-direct]\nbind = "127.0.0.1:8443"\nmode = "tcp"\n'
                   'pool = "https"\n')
    assert config.frontends[-1].pool == "https"


def test_a_hand_written_pool_may_not_shadow_a_generated_one() -> None:
    errors = _errors(FARM.format(mode="l4") + '[pools.https]\nservers = ["x"]\n'
                     '[servers.x]\naddress = "127.0.0.1:1"\n')
    assert errors == [("pools.https", 'pool "https" is already defined by [exchange]; '
                       "choose another name")]


def test_every_shorthand_error_at_once() -> None:
    errors = _errors("""
        [exchange]
        mode = "l3"
        bind = "0.0.0.0:443"
        protocols = ["owa", "gopher"]
        servers = [
          { name = "cas1", address = "10.0.0.11" },
          { name = "cas1", address = "10.0.0.12", fqdn = "cas2.lab", ports = { http = 80 } },
        ]
        l4_check = "owa"
        rise = 0
        [exchange.overrides.nosuch]
        inter = "1s"
    """)
    assert errors == [
        ("exchange.namespace", "is required"),
        ("exchange.mode", 'must be one of "l7", "l4", "l4-sni", got "l3"'),
        ("exchange.bind",
         'takes a host without a port, got "0.0.0.0:443" (ports go in ports and listen)'),
        ("exchange.servers[0].fqdn", "is required"),
        ("exchange.servers[1].ports.http",
         "unknown port name (known: https, imaps, imap, pops, pop, smtp, submission)"),
        ("exchange.servers[1].name", 'server "cas1" is listed twice'),
        ("exchange.protocols",
         'unknown protocol "gopher" (known: owa, ecp, ews, autodiscover, eas, oab, rpc, mapi, '
         "imap, pop, smtp)"),
        ("exchange.l4_check",
         "names the https protocol an l4 farm is checked on (one of owa)"),
        ("exchange.rise", "must be an integer from 1 to 100, got 0"),
    ]


def test_l7_needs_a_certificate_and_l4_refuses_one() -> None:
    assert ("exchange.tls", "l7 mode terminates TLS: give { cert = ..., key = ... } (the same "
            "certificate as Exchange under Extended Protection)") in _errors(FARM.format(mode="l7"))
    errors = _errors(FARM.format(mode="l4") + TLS)
    assert errors == [
        ("exchange.tls", "only l7 mode terminates TLS; l4 and l4-sni pass it through"),
    ]


def test_override_of_a_pool_the_farm_does_not_have() -> None:
    errors = _errors(FARM.format(mode="l4") + "[exchange.overrides.ews]\ninter = \"1s\"\n")
    assert errors == [("exchange.overrides.ews",
                       'no pool "ews" in this farm (pools: https, imap, pop, smtp, submission)')]


def test_compare_fronts_the_same_farm_through_every_design_side_by_side() -> None:
    config = _farm("l7", 'listen = { https = 9443 }\n[exchange.compare]\nl4 = 9444\n'
                   '"l4-sni" = 9445\n')
    fronts = {f.name: f for f in config.frontends}
    assert [(fronts[n].mode, fronts[n].port) for n in ("https", "l4-https", "l4-sni-https")] == [
        (Mode.HTTP, 9443), (Mode.TCP, 9444), (Mode.SNI, 9445)]
    assert fronts["https"].routes["/EWS"] == "ews"
    assert fronts["l4-https"].pool == "l4-https"
    assert fronts["l4-sni-https"].sni_map["ews.mail.contoso.com"] == "l4-sni-ews"
    assert fronts["l4-sni-https"].default_pool == "l4-sni-owa"
    assert config.pools["ews"].upstream_tls is not None
    assert config.pools["l4-sni-ews"].upstream_tls is None
    assert config.pools["l4-https"].check is not None
    assert [f.name for f in config.frontends].count("imaps") == 1  # mail is L4 in every design


@pytest.mark.parametrize(("compare", "message"), [
    ("l7 = 9444", 'names a design other than mode "l7" (l4, l4-sni)'),
    ("l5 = 9444", 'names a design other than mode "l7" (l4, l4-sni)'),
    ("l4 = 993", "port 993 is already listen.imaps"),
])
def test_compare_errors_name_their_key(compare: str, message: str) -> None:
    key = compare.split(" ")[0]
    assert _errors(FARM.format(mode="l7") + TLS + f"[exchange.compare]\n{compare}\n") == [
        (f"exchange.compare.{key}", message)]


def test_compare_with_l4_sni_accepts_hostnames() -> None:
    config = _farm("l4", '[exchange.hostnames]\news = "ews.contoso.com"\n'
                   '[exchange.compare]\n"l4-sni" = 9445\n')
    sni = next(f for f in config.frontends if f.name == "l4-sni-https")
    assert sni.sni_map["ews.contoso.com"] == "l4-sni-ews"
