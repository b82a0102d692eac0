import pytest

from probes import catalog


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/owa/", "owa"),
        ("/OWA", "owa"),
        ("/ews/Exchange.asmx", "ews"),
        ("/Microsoft-Server-ActiveSync?Cmd=Ping", "eas"),
        ("/rpc/rpcproxy.dll?guid@contoso.com:6001", "rpc"),
        ("/mapi/emsmdb/?MailboxId=x", "mapi"),
        ("/autodiscover/autodiscover.json?@x/mapi/nspi", "autodiscover"),
        ("/owaX", None),
        ("/", None),
        ("/powershell", None),
    ],
)
def test_protocol_for_path_matches_vdir_prefix_only(path: str, expected: str | None) -> None:
    found = catalog.protocol_for_path(path)
    assert (found.name if found else None) == expected


def test_every_http_protocol_has_a_healthcheck_path() -> None:
    for name in catalog.HTTP_PROTOCOLS:
        path = catalog.PROTOCOLS[name].healthcheck_path
        assert path is not None and path.endswith("/healthcheck.htm")


def test_mail_protocols_and_ports() -> None:
    assert {n: catalog.PROTOCOLS[n].port for n in catalog.MAIL_PROTOCOLS} == {
        "imap": 993,
        "pop": 995,
        "smtp": 25,
    }
    assert catalog.PROTOCOLS["smtp"].server_speaks_first


def test_unknown_protocol_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: owa"):
        catalog.protocol("nope")


def test_activesync_idle_timeout_covers_the_longest_heartbeat() -> None:
    assert catalog.protocol("EAS").idle_timeout >= 3540
