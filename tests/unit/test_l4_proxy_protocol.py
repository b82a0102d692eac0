"""PROXY protocol headers, byte for byte as HAProxy's proxy-protocol.txt gives them."""

from __future__ import annotations

import pytest

from lb import proxy_protocol as pp


def test_v1_tcp4_is_the_spec_example() -> None:
    header = pp.encode(1, ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert header == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"


def test_v1_longest_tcp4_line_is_56_bytes() -> None:
    header = pp.encode_v1(("255.255.255.255", 65535), ("255.255.255.255", 65535))
    assert header == b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
    assert len(header) == 56


def test_v1_tcp6_uses_the_compressed_form() -> None:
    header = pp.encode_v1(("2001:db8:0:0:0:0:0:1", 1), ("::1", 993))
    assert header == b"PROXY TCP6 2001:db8::1 ::1 1 993\r\n"


def test_v1_unknown_is_the_short_form() -> None:
    assert pp.encode_v1(None, ("127.0.0.1", 1)) == b"PROXY UNKNOWN\r\n"


def test_v2_tcp4_bytes() -> None:
    # The spec's layout: 12-byte signature, \x21 (v2, PROXY), \x11 (TCP over IPv4),
    # length 12, then src addr, dst addr, src port, dst port in network order.
    header = pp.encode(2, ("172.19.0.1", 42578), ("172.19.0.3", 80))
    assert header == bytes.fromhex(
        "0d0a0d0a000d0a515549540a" "21" "11" "000c" "ac130001" "ac130003" "a652" "0050"
    )


def test_v2_tcp6_is_36_address_bytes() -> None:
    header = pp.encode_v2(("::1", 1), ("2001:db8::2", 443))
    assert header[12:16] == b"\x21\x21\x00\x24"
    assert header[16:32] == bytes(15) + b"\x01"
    assert header[32:48] == bytes.fromhex("20010db8000000000000000000000002")
    assert header[48:] == b"\x00\x01\x01\xbb"
    assert len(header) == 16 + 36


def test_v2_unknown_is_unspec_with_no_addresses() -> None:
    assert pp.encode_v2(None, None) == pp.V2_SIGNATURE + b"\x21\x00\x00\x00"


def test_mixed_families_are_carried_as_ipv6() -> None:
    header = pp.encode_v1(("10.0.0.1", 5), ("::1", 6))
    assert header == b"PROXY TCP6 ::ffff:a00:1 ::1 5 6\r\n"


@pytest.mark.parametrize(
    ("version", "source", "message"),
    [
        (3, ("127.0.0.1", 1), "version 3"),
        (1, ("localhost", 1), "'localhost' is not an ip literal"),
        (2, ("127.0.0.1", 70000), "port 70000 out of range"),
    ],
)
def test_bad_input_names_the_bad_value(
    version: int, source: tuple[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pp.encode(version, source, ("127.0.0.1", 2))
