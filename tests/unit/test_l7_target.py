"""Request-target normalisation: what routing sees is what the server gets."""

from __future__ import annotations

import pytest

from lb.l7.target import Refusal, Target, parse_target

NORMALISED = [
    (b"/owa/", "/owa/", b"/owa/"),
    (b"/", "/", b"/"),
    (b"/owa/../ecp/", "/ecp/", b"/ecp/"),
    (b"/owa/%2e%2e/ecp/", "/ecp/", b"/ecp/"),
    (b"/OWA/./../ecp/", "/ecp/", b"/ecp/"),
    (b"/OWA/../ews/", "/ews/", b"/ews/"),
    (b"/%65cp/", "/ecp/", b"/ecp/"),
    (b"//ecp/", "/ecp/", b"/ecp/"),
    (b"/ecp//x", "/ecp/x", b"/ecp/x"),
    (b"/owa/x/..", "/owa/", b"/owa/"),
    (b"/owa/.", "/owa/", b"/owa/"),
    (b"/owa/..", "/", b"/"),
    (b"/a%7Eb%7e", "/a~b~", b"/a~b~"),
    (b"/a%20b%3f", "/a%20b%3F", b"/a%20b%3F"),
    (b"/owa/?x=/../ecp", "/owa/", b"/owa/?x=/../ecp"),
    (b"/owa/x?%2F=%5c", "/owa/x", b"/owa/x?%2F=%5c"),
    (b"/ews/Exchange.asmx?", "/ews/Exchange.asmx", b"/ews/Exchange.asmx?"),
]


@pytest.mark.parametrize(("raw", "path", "forward"), NORMALISED)
def test_targets_are_normalised_and_the_query_kept(raw: bytes, path: str, forward: bytes) -> None:
    target = parse_target(b"GET", raw)
    assert target == Target(path, path, forward)


def test_routing_looks_at_the_segment_before_its_parameters() -> None:
    target = parse_target(b"GET", b"/ecp;x/a;b=c/")
    assert isinstance(target, Target)
    assert target.route_path == "/ecp/a/"
    assert target.forward == b"/ecp;x/a;b=c/"


def test_absolute_form_routes_on_its_path_and_names_the_host() -> None:
    assert parse_target(b"GET", b"http://mail.lab.local/owa/x?y") == Target(
        "/owa/x", "/owa/x", b"/owa/x?y", b"mail.lab.local"
    )
    assert parse_target(b"GET", b"HTTPS://mail.lab.local:443") == Target(
        "/", "/", b"/", b"mail.lab.local:443"
    )
    assert parse_target(b"GET", b"http://mail.lab.local?q") == Target(
        "/", "/", b"/?q", b"mail.lab.local"
    )


REFUSED = [
    (b"CONNECT", b"mail.lab.local:443", 405),
    (b"CONNECT", b"/owa/", 405),
    (b"GET", b"mail.lab.local:443", 405),
    (b"OPTIONS", b"*", 400),
    (b"GET", b"owa/", 400),
    (b"GET", b"ftp://mail.lab.local/owa/", 400),
    (b"GET", b"http:///owa/", 400),
    (b"GET", b"http://user@mail.lab.local/owa/", 400),
    (b"GET", b"/ews%2fExchange.asmx", 400),
    (b"GET", b"/ews%2FExchange.asmx", 400),
    (b"GET", b"/owa%5c..%5cecp", 400),
    (b"GET", b"/owa\\..\\ecp", 400),
    (b"GET", b"/owa/%00", 400),
    (b"GET", b"/..", 400),
    (b"GET", b"/owa/../../x", 400),
    (b"GET", b"/owa/..;x/ecp", 400),
    (b"GET", b"/owa/%zz", 400),
    (b"GET", b"/owa/%4", 400),
    (b"GET", b"/owa/#frag", 400),
    (b"GET", b"/owa/\xc3\xa9", 400),
    (b"GET", b"/owa/\x7f", 400),
]


@pytest.mark.parametrize(("method", "raw", "status"), REFUSED)
def test_unsafe_targets_are_refused(method: bytes, raw: bytes, status: int) -> None:
    verdict = parse_target(method, raw)
    assert isinstance(verdict, Refusal)
    assert verdict.status == status
