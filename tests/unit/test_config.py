"""The generic config model: values, defaults, and every error with its key path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.balancer import Balance
from lb.config import ConfigError, Mode, load, parse
from lb.config.model import LoggingConfig
from lb.config.reader import format_duration, parse_duration
from probes.catalog import CheckKind
from probes.state import OnError

GENERIC = """
grace = "45s"

[admin]
bind = "127.0.0.1:9191"

[servers.cas1]
address = "127.0.0.11"
fqdn = "cas1.lab.local"

[servers.cas2]
address = "127.0.0.12:8443"
fqdn = "cas2.lab.local"
weight = 2

[frontends.web]
bind = "127.0.0.1:8443"
mode = "http"
routes = { "/owa" = "owa", "/EWS" = "ews" }
default_pool = "owa"
hosts = "mail.lab.local"
tls = { cert = "certs/mail.pem", key = "certs/mail.key" }
header_timeout = "5s"

[frontends.imap]
bind = "127.0.0.1:9993"
mode = "tcp"
pool = "imap"
idle_timeout = "30m"
max_connections = 500

[pools.owa]
servers = ["cas1", "cas2"]
port = 443
balance = "wrr"
slowstart = "1m30s"
panic_threshold = 0.5
tls = { verify = false }
[pools.owa.check]
kind = "healthcheck"
path = "/owa/healthcheck.htm"
inter = "1s"
fastinter = "250ms"
rise = 2
fall = 2
timeout = "1s"

[pools.ews]
protocol = "ews"
servers = [{ name = "a", address = "127.0.0.21:443", fqdn = "a.lab.local" }]
tls = true

[pools.imap]
protocol = "imap"
servers = [{ name = "a", address = "127.0.0.21:993", fqdn = "a.lab.local" }]
observe = { error_limit = 3, on_error = "mark-down" }
proxy_protocol = 2
"""


def _errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(tomllib.loads(text))
    return info.value.errors


def test_generic_model_values() -> None:
    config = parse(tomllib.loads(GENERIC), base_dir=Path("/etc/caslb"))
    assert config.grace == 45.0
    assert (config.admin.host, config.admin.port, config.admin.token) == ("127.0.0.1", 9191, None)
    web, imap = config.frontends
    assert web.mode is Mode.HTTP and (web.host, web.port) == ("127.0.0.1", 8443)
    assert dict(web.routes) == {"/owa": "owa", "/EWS": "ews"}
    assert web.hosts == ("mail.lab.local",) and web.header_timeout == 5.0
    assert web.tls[0].cert_file == "/etc/caslb/certs/mail.pem"
    assert web.pool_names == ("owa", "ews")
    assert imap.mode is Mode.TCP and imap.pool == "imap" and imap.idle_timeout == 1800.0
    assert imap.max_connections == 500
    owa = config.pools["owa"]
    assert [(s.name, s.host, s.port, s.fqdn, s.weight) for s in owa.servers] == [
        ("cas1", "127.0.0.11", 443, "cas1.lab.local", 1),
        ("cas2", "127.0.0.12", 8443, "cas2.lab.local", 2),
    ]
    assert owa.balance is Balance.WRR and owa.slowstart == 90.0 and owa.panic_threshold == 0.5
    assert owa.upstream_tls is not None and owa.upstream_tls.verify is False
    assert owa.check is not None
    assert owa.check.spec.kind is CheckKind.HEALTHCHECK
    assert owa.check.spec.path == "/owa/healthcheck.htm"
    timing = owa.check.timing
    assert (timing.inter, timing.fastinter, timing.rise, timing.fall, timing.timeout) == (
        1.0, 0.25, 2, 2, 1.0,
    )


def test_protocol_gives_catalog_defaults() -> None:
    config = parse(tomllib.loads(GENERIC))
    ews, imap = config.pools["ews"], config.pools["imap"]
    assert ews.check is not None and ews.check.spec.path == "/EWS/healthcheck.htm"
    assert ews.reset_on_down is True and ews.idle_timeout == 1800.0
    assert ews.first_response_timeout == 1.0
    assert imap.check is not None and imap.check.spec.kind is CheckKind.IMAP
    assert imap.check.spec.tls is True and imap.check.timing.timeout == 3.0
    assert imap.observe is not None and imap.observe.on_error is OnError.MARK_DOWN
    assert imap.observe.error_limit == 3 and imap.proxy_protocol == 2


def test_defaults_of_a_minimal_config() -> None:
    config = parse(tomllib.loads("""
        [frontends.a]
        bind = "127.0.0.1:1"
        mode = "tcp"
        pool = "p"
        [pools.p]
        servers = [{ name = "s", address = "127.0.0.1:2" }]
    """))
    pool = config.pools["p"]
    assert pool.check is None and pool.protocol is None and pool.observe is None
    assert pool.balance is Balance.ROUNDROBIN and pool.slowstart == 0.0
    assert pool.panic_threshold == 0.0 and pool.retries == 3 and pool.reset_on_down is False
    assert pool.servers[0].fqdn == "127.0.0.1"
    assert config.admin.host == "127.0.0.1" and config.admin.port == 9090
    assert config.grace == 30.0


def test_every_error_is_reported_at_once_with_its_key_path() -> None:
    errors = _errors("""
        grace = 30
        [frontends.web]
        bind = "127.0.0.1"
        mode = "https"
        [pools.ews]
        servers = ["nobody"]
        balance = "fastest"
        slowstart = "soon"
        [pools.ews.check]
        kind = "healthcheck"
        rise = "x"
        fal = 3
    """)
    assert errors == [
        ("grace", 'must be a duration like "2s" or "500ms", got 30'),
        ("pools.ews.servers[0]", 'unknown server "nobody" (define it in [servers])'),
        ("pools.ews.balance",
         'must be one of "roundrobin", "wrr", "leastconn", "random2", "source", got "fastest"'),
        ("pools.ews.check.path",
         "is required for a healthcheck check (e.g. /owa/healthcheck.htm)"),
        ("pools.ews.check.rise", 'must be an integer from 1 to 100, got "x"'),
        ("pools.ews.check.fal", "unknown key"),
        ("pools.ews.slowstart",
         'must be a duration like "2s", "500ms", "30m" or "1h", got \'soon\''),
        ("frontends.web.bind", 'needs a port (host:port), got "127.0.0.1"'),
        ("frontends.web.mode", 'must be one of "tcp", "sni", "http", got "https"'),
    ]


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"frontends": {}, "bogus": 1, "grace": "x"})
    text = str(info.value)
    assert "grace: must be a duration" in text and "bogus: unknown key" in text


@pytest.mark.parametrize(
    ("snippet", "path", "problem"),
    [
        ('[frontends.a]\nbind = "127.0.0.1:1"\nmode = "tcp"\npool = "missing"',
         "frontends.a.pool", 'unknown pool "missing"'),
        ('[frontends.a]\nbind = "127.0.0.1:1"\nmode = "sni"\nsni = { "x.lab" = "missing" }',
         'frontends.a.sni."x.lab"', 'unknown pool "missing"'),
        ('[frontends.a]\nbind = "127.0.0.1:1"\nmode = "http"\nroutes = { "/owa" = "nope" }',
         'frontends.a.routes."/owa"', 'unknown pool "nope"'),
        ('[frontends.a]\nbind = "127.0.0.1:1"\nmode = "http"\npool = "p"',
         "frontends.a.pool", "not used by http frontends (only tcp); use default_pool"),
        ('[frontends.a]\nbind = "127.0.0.1:1"\nmode = "tcp"\npool = "p"\ntls = { cert = "c", '
         'key = "k" }', "frontends.a.tls",
         "not used by tcp frontends (only http): tcp and sni frontends pass TLS through "
         "untouched"),
        ('[frontends.a]\nbind = "127.0.0.1:1"\nmode = "sni"',
         "frontends.a.sni", "an sni frontend needs an sni table or a default_pool"),
        ('[frontends.a]\nbind = "127.0.0.1:1"\nmode = "http"\nroutes = { "owa" = "p" }',
         "frontends.a.routes.owa", 'a route must be a path like "/owa", without a query'),
        ('[frontends.a]\nbind = "127.0.0.1:1"\nmode = "tcp"\npool = "p"\n'
         '[frontends.b]\nbind = "127.0.0.1:1"\nmode = "tcp"\npool = "p"',
         "frontends.b.bind", "127.0.0.1:1 is already bound by frontends.a"),
        ('[frontends.a]\nbind = "127.0.0.1:1"\nmode = "tcp"\npool = "p"\n[pools.p.check]\n'
         'kind = "tcp"', "pools.p.servers", "is required"),
        ('[frontends.admin]\nbind = "127.0.0.1:1"\nmode = "tcp"\npool = "p"', "frontends.admin",
         '"admin" names the admin API\'s listener; give the frontend another name'),
        ('[admin]\nbind = "0.0.0.0:9090"', "admin.bind",
         "binding 0.0.0.0 off loopback requires admin.token"),
        ('[pools.q]\nservers = [{ name = "s", address = "h" }]', "pools.q.servers[0]",
         'server "s" needs a port: host:port, or set port'),
        ('[pools.q]\nprotocol = "gopher"\nservers = ["s"]', "pools.q.protocol",
         'unknown protocol "gopher" (known: owa, ecp, ews, autodiscover, eas, oab, rpc, mapi, '
         "imap, pop, smtp)"),
        ('[pools.q]\nservers = [{ name = "s", address = "h:1" }]\n[pools.q.check]\npath = "/x"',
         "pools.q.check.kind", "is required when the pool has no protocol"),
        ('[pools.q]\nprotocol = "smtp"\nservers = [{ name = "s", address = "h:1" }]\n'
         "[pools.q.check]\nexpect_fqdn = true",
         "pools.q.check.expect_fqdn", "only a healthcheck check can match the server fqdn"),
        ('[pools.q]\nprotocol = "owa"\nservers = [{ name = "s", address = "h:1" }]\n'
         '[pools.q.check]\nverify = false\nca_file = "ca.pem"',
         "pools.q.check.ca_file", "is given but verify = false"),
        ('[pools.q]\nservers = [{ name = "s", address = "h:1" }]\npanic_threshold = 1.5',
         "pools.q.panic_threshold", "must be a number from 0 to 1, got 1.5"),
        ('[pools.q]\nservers = [{ name = "s", address = "h:1" }, { name = "s", address = "h:2" }]',
         "pools.q.servers[1]", 'server "s" is listed twice'),
        ('[pools.q]\nservers = [{ name = "s", address = "h:99999" }]',
         "pools.q.servers[0].address", "port must be 1 to 65535 in 'h:99999'"),
    ],
)
def test_single_mistakes(snippet: str, path: str, problem: str) -> None:
    pool = "" if "[pools.p" in snippet else (
        '[pools.p]\nservers = [{ name = "s", address = "127.0.0.1:2" }]\n')
    frontend = "" if "[frontends." in snippet else (
        '[frontends.z]\nbind = "127.0.0.1:3"\nmode = "tcp"\npool = "p"\n')
    base = pool + frontend
    errors = _errors(base + snippet)
    assert (path, problem) in errors, errors


def test_tls_reencryption_needs_an_http_frontend() -> None:
    errors = _errors("""
        [frontends.a]
        bind = "127.0.0.1:1"
        mode = "tcp"
        pool = "p"
        [pools.p]
        servers = [{ name = "s", address = "127.0.0.1:2" }]
        tls = true
    """)
    assert errors == [("pools.p.tls", "re-encryption needs an http frontend, but frontends.a "
                       "is tcp (TLS passes through)")]


def test_admin_off_loopback_with_a_token_is_fine() -> None:
    config = parse(tomllib.loads(GENERIC.replace(
        'bind = "127.0.0.1:9191"', 'bind = "0.0.0.0:9191"\ntoken = "s3cret"')))
    assert (config.admin.host, config.admin.token) == ("0.0.0.0", "s3cret")


def test_check_false_disables_the_protocol_check() -> None:
    config = parse(tomllib.loads(GENERIC.replace(
        '[pools.ews]\nprotocol = "ews"', '[pools.ews]\nprotocol = "ews"\ncheck = false')))
    assert config.pools["ews"].check is None


def test_starttls_turns_implicit_tls_off() -> None:
    config = parse(tomllib.loads(GENERIC.replace(
        'proxy_protocol = 2', 'proxy_protocol = 2\ncheck = { starttls = true }')))
    check = config.pools["imap"].check
    assert check is not None and check.spec.starttls and not check.spec.tls


def test_config_is_frozen() -> None:
    config = parse(tomllib.loads(GENERIC))
    with pytest.raises(AttributeError):
        config.grace = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.pools["x"] = config.pools["owa"]  # type: ignore[index]


def test_load_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(missing)
    assert info.value.errors[0][0] == str(missing)
    assert "cannot read" in info.value.errors[0][1]
    broken = tmp_path / "broken.toml"
    broken.write_text("[pools\n")
    with pytest.raises(ConfigError) as info:
        load(broken)
    assert "not valid TOML" in info.value.errors[0][1]


def test_load_resolves_files_next_to_the_config(tmp_path: Path) -> None:
    file = tmp_path / "lb.toml"
    file.write_text(GENERIC)
    config = load(file)
    assert config.frontends[0].tls[0].key_file == str(tmp_path / "certs/mail.key")


_KEYS = st.sampled_from([
    "frontends", "pools", "exchange", "admin", "servers", "grace", "bind", "mode", "pool",
    "sni", "routes", "default_pool", "tls", "check", "kind", "path", "inter", "rise", "fall",
    "address", "name", "fqdn", "weight", "namespace", "protocols", "ports", "listen", "balance",
    "observe", "overrides", "owa", "a", "/owa", "mail.lab",
])
_VALUES = st.recursive(
    st.none().map(lambda _: "x") | st.booleans() | st.integers(-5, 70000)
    | st.floats(allow_nan=False) | st.sampled_from(["2s", "tcp", "sni", "http", "l7", "l4",
                                                   "127.0.0.1:1", "owa", "healthcheck", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=5))
def test_any_document_gives_a_config_or_a_config_error(document: dict[str, object]) -> None:
    """Malformed input never escapes as anything but ConfigError with key paths."""
    try:
        parse(document)
    except ConfigError as exc:
        assert exc.errors
        assert all(isinstance(p, str) and isinstance(m, str) and m for p, m in exc.errors)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), ("30m", 1800.0), ("1h", 3600.0), ("1m30s", 90.0),
     ("0s", 0.0), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2", "s", "2 s", "-1s", "2x", "1s2", "ms", "1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**7))
def test_format_duration_round_trips(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == pytest.approx(millis / 1000)


def _leaf_paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaf_paths(v, (*prefix, k))] + [prefix]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaf_paths(v, (*prefix, i))] + [prefix]
    return [prefix]


def _replace(node: object, path: tuple[object, ...], value: object) -> object:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {k: _replace(v, rest, value) if k == head else v for k, v in node.items()}
    assert isinstance(node, list)
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(node)]


SHORTHAND = tomllib.loads("""
[exchange]
namespace = "mail.lab.local"
mode = "l4-sni"
bind = "127.0.0.1"
servers = [
  { name = "cas1", address = "127.0.0.11", fqdn = "cas1.lab.local", ports = { https = 8443 } },
]
hostnames = { ews = "ews.lab.local" }
inter = "1s"
[exchange.overrides.ews]
fall = 2
""")


@given(st.data())
def test_one_bad_value_anywhere_is_reported_not_raised(data: st.DataObject) -> None:
    """Any single leaf of a valid config replaced by junk: a Config or a ConfigError."""
    base = data.draw(st.sampled_from([tomllib.loads(GENERIC), SHORTHAND]))
    path = data.draw(st.sampled_from(_leaf_paths(base)))
    document = _replace(base, path, data.draw(_VALUES))
    try:
        parse(document)  # type: ignore[arg-type]
    except ConfigError as exc:
        assert exc.errors


def test_trusted_proxies_are_networks_and_http_only() -> None:
    text = GENERIC.replace('header_timeout = "5s"',
                           'header_timeout = "5s"\ntrusted_proxies = ["10.0.0.1", "192.0.2.0/24"]')
    web = parse(tomllib.loads(text), base_dir=Path("/etc/caslb")).frontends[0]
    assert web.trusted_proxies == ("10.0.0.1/32", "192.0.2.0/24")
    bad = GENERIC.replace('header_timeout = "5s"', 'trusted_proxies = ["10.0.0.0/8", "lb2"]')
    assert ("frontends.web.trusted_proxies[1]", "not an address or network: 'lb2'") in _errors(bad)
    tcp = GENERIC.replace("max_connections = 500",
                          'max_connections = 500\ntrusted_proxies = "10.0.0.1"')
    assert any(path == "frontends.imap.trusted_proxies" for path, _ in _errors(tcp))


def test_logging_picks_the_format_and_the_access_log() -> None:
    assert parse(tomllib.loads(GENERIC)).logging == LoggingConfig("text", True)
    config = parse(tomllib.loads(GENERIC + '\n[logging]\nformat = "json"\naccess_log = false\n'))
    assert config.logging == LoggingConfig("json", False)


def test_a_bad_logging_format_names_its_key_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(tomllib.loads(GENERIC + '\n[logging]\nformat = "xml"\nlevel = 1\n'))
    assert ("logging.format", "must be one of text, json, got 'xml'") in caught.value.errors
    assert any(path == "logging.level" for path, _ in caught.value.errors)
