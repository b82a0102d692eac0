"""Hop-by-hop stripping and X-Forwarded-* rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lb.l7.headers import (
    HOP_BY_HOP,
    connection_tokens,
    declares_body,
    forwarded_request_headers,
    forwarded_response_headers,
    header_value,
    strip_hop_by_hop,
)


def test_hop_by_hop_and_connection_named_headers_are_stripped() -> None:
    headers = [
        (b"host", b"mail.contoso.com"),
        (b"connection", b"keep-alive, X-Secret"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"te", b"trailers"),
        (b"trailer", b"x-checksum"),
        (b"upgrade", b"websocket"),
        (b"x-secret", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"cookie", b"a=b"),
    ]
    assert strip_hop_by_hop(headers) == [
        (b"host", b"mail.contoso.com"),
        (b"transfer-encoding", b"chunked"),  # h11 re-frames with it
        (b"cookie", b"a=b"),
    ]


def test_connection_cannot_strip_the_framing_headers() -> None:
    headers = [(b"connection", b"content-length"), (b"content-length", b"5")]
    assert strip_hop_by_hop(headers) == [(b"content-length", b"5")]


def test_x_forwarded_headers_are_set_and_a_client_cannot_forge_the_chain() -> None:
    headers = [
        (b"host", b"mail.contoso.com"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"evil"),
    ]
    out = forwarded_request_headers(headers, client_ip="127.0.0.5", scheme="https")
    assert header_value(out, b"x-forwarded-for") == b"127.0.0.5"
    trusted = forwarded_request_headers(headers, client_ip="127.0.0.5", scheme="https",
                                        keep_chain=True)
    assert header_value(trusted, b"x-forwarded-for") == b"10.0.0.1, 127.0.0.5"
    assert header_value(out, b"x-forwarded-proto") == b"https"
    assert header_value(out, b"x-forwarded-host") == b"mail.contoso.com"
    assert [n for n, _ in out].count(b"x-forwarded-proto") == 1
    assert [n for n, _ in out].count(b"x-forwarded-host") == 1


def test_several_x_forwarded_for_headers_join_into_one_chain() -> None:
    headers = [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2")]
    out = forwarded_request_headers(headers, client_ip="127.0.0.1", scheme="http",
                                    keep_chain=True)
    assert header_value(out, b"x-forwarded-for") == b"1.1.1.1, 2.2.2.2, 127.0.0.1"
    assert header_value(out, b"x-forwarded-host") is None  # no Host, no X-Forwarded-Host


def test_response_headers_lose_hop_by_hop_only() -> None:
    headers = [(b"connection", b"close"), (b"set-cookie", b"x=y"), (b"x-feserver", b"CAS1")]
    assert forwarded_response_headers(headers) == [
        (b"set-cookie", b"x=y"),
        (b"x-feserver", b"CAS1"),
    ]


def test_declares_body() -> None:
    assert not declares_body([(b"host", b"h")])
    assert not declares_body([(b"content-length", b"0")])
    assert declares_body([(b"content-length", b"1073741824")])
    assert declares_body([(b"transfer-encoding", b"chunked")])


names = st.sampled_from(
    [b"host", b"cookie", b"x-a", b"x-b", *sorted(HOP_BY_HOP), b"content-length"]
)


@given(st.lists(st.tuples(names, st.binary(min_size=0, max_size=12)), max_size=12))
def test_stripping_never_leaves_a_hop_by_hop_header(headers: list[tuple[bytes, bytes]]) -> None:
    out = strip_hop_by_hop(headers)
    dropped = (HOP_BY_HOP | connection_tokens(headers)) - {b"content-length", b"transfer-encoding"}
    assert all(n not in dropped for n, _ in out)
    assert [h for h in headers if h[0] not in dropped] == out


def test_only_listed_proxies_are_trusted() -> None:
    import ipaddress

    from lb.l7.settings import HttpFrontendSettings

    settings = HttpFrontendSettings(trusted_proxies=(ipaddress.ip_network("10.1.0.0/16"),
                                                     ipaddress.ip_network("::1/128")))
    assert settings.trusts("10.1.2.3") and settings.trusts("::1")
    assert not settings.trusts("10.2.0.1") and not settings.trusts("not-an-address")
    assert not HttpFrontendSettings().trusts("127.0.0.1")
