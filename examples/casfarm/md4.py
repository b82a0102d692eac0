"""MD4 (RFC 1320), for the NT hash that NTLM keys everything on.

hashlib offers MD4 only when OpenSSL still has its legacy provider loaded, and
OpenSSL 3 does not by default; the NT hash of a password is MD4 of its UTF-16LE
encoding, so casfarm carries the algorithm itself. It is used for short
passwords only: clarity wins over speed.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF
_ROUND2 = 0x5A827999
_ROUND3 = 0x6ED9EBA1
# The word order and shifts of each round (RFC 1320 §3.4).
_ORDER2 = (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
_ORDER3 = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)
_SHIFTS1 = (3, 7, 11, 19)
_SHIFTS2 = (3, 5, 9, 13)
_SHIFTS3 = (3, 9, 11, 15)


def _rotl(value: int, shift: int) -> int:
    value &= _MASK
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def _f(x: int, y: int, z: int) -> int:
    return (x & y) | (~x & z)


def _g(x: int, y: int, z: int) -> int:
    return (x & y) | (x & z) | (y & z)


def _h(x: int, y: int, z: int) -> int:
    return x ^ y ^ z


def _compress(state: list[int], block: bytes) -> None:
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(16):
        a = _rotl(a + _f(b, c, d) + x[i], _SHIFTS1[i % 4])
        a, b, c, d = d, a, b, c
    for i in range(16):
        a = _rotl(a + _g(b, c, d) + x[_ORDER2[i]] + _ROUND2, _SHIFTS2[i % 4])
        a, b, c, d = d, a, b, c
    for i in range(16):
        a = _rotl(a + _h(b, c, d) + x[_ORDER3[i]] + _ROUND3, _SHIFTS3[i % 4])
        a, b, c, d = d, a, b, c
    for i, word in enumerate((a, b, c, d)):
        state[i] = (state[i] + word) & _MASK


def md4(data: bytes) -> bytes:
    """The 16-byte MD4 digest of `data`."""
    state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    bit_length = (len(data) * 8) & 0xFFFFFFFFFFFFFFFF
    padded = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", bit_length)
    for offset in range(0, len(padded), 64):
        _compress(state, padded[offset : offset + 64])
    return struct.pack("<4I", *state)


def nt_hash(password: str) -> bytes:
    """NTOWFv1: MD4 of the password in UTF-16LE, the key NTLMv2 derives from."""
    return md4(password.encode("utf-16-le"))
