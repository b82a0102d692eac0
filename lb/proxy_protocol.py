"""PROXY protocol headers (HAProxy's proxy-protocol.txt, versions 1 and 2), encoding only.

A backend behind an L4 balancer sees the balancer's address; the PROXY header,
sent once before any client byte, tells it the client's. Both versions carry
the same facts: source and destination address and port, or "unknown" when
the frontend does not know them (memory streams in tests, non-IP sockets).
"""

from __future__ import annotations

import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

_V2_VERSION = 0x20
_V2_PROXY = 0x01
_V2_UNSPEC = 0x00
_V2_TCP4 = 0x11
_V2_TCP6 = 0x21

Endpoint = tuple[str, int]
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def encode(version: int, source: Endpoint | None, destination: Endpoint | None) -> bytes:
    """The PROXY header of the given version for one connection.

    Args:
        version: 1 (text) or 2 (binary).
        source: the client's (ip, port), or None when unknown.
        destination: the address the client connected to, or None when unknown.

    Raises:
        ValueError: for an unknown version, a non-IP host or a port out of range.
    """
    if version == 1:
        return encode_v1(source, destination)
    if version == 2:
        return encode_v2(source, destination)
    raise ValueError(f"proxy protocol version {version!r} is not 1 or 2")


def encode_v1(source: Endpoint | None, destination: Endpoint | None) -> bytes:
    """The version 1 text line, e.g. b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\\r\\n"."""
    pair = _endpoints(source, destination)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    (src, sport), (dst, dport) = pair
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src.compressed} {dst.compressed} {sport} {dport}\r\n".encode()


def encode_v2(source: Endpoint | None, destination: Endpoint | None) -> bytes:
    """The version 2 binary header: signature, PROXY command, addresses, no TLVs."""
    pair = _endpoints(source, destination)
    if pair is None:
        # PROXY command with AF_UNSPEC: the receiver uses the real endpoints.
        return V2_SIGNATURE + bytes((_V2_VERSION | _V2_PROXY, _V2_UNSPEC)) + b"\x00\x00"
    (src, sport), (dst, dport) = pair
    family = _V2_TCP4 if src.version == 4 else _V2_TCP6
    block = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    head = bytes((_V2_VERSION | _V2_PROXY, family)) + struct.pack("!H", len(block))
    return V2_SIGNATURE + head + block


def _endpoints(
    source: Endpoint | None, destination: Endpoint | None
) -> tuple[tuple[_IP, int], tuple[_IP, int]] | None:
    """Both endpoints parsed and in one family, or None when either is unknown."""
    if source is None or destination is None:
        return None
    src, sport = _ip(source[0]), _port(source[1])
    dst, dport = _ip(destination[0]), _port(destination[1])
    if src.version != dst.version:
        # One header holds one family: carry the IPv4 side as IPv4-mapped IPv6.
        src, dst = _as_v6(src), _as_v6(dst)
    return (src, sport), (dst, dport)


def _ip(host: str) -> _IP:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"proxy protocol address {host!r} is not an ip literal") from None


def _port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"proxy protocol port {port!r} out of range 0-65535")
    return port


def _as_v6(ip: _IP) -> ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address):
        return ip
    return ipaddress.IPv6Address(f"::ffff:{ip}")
