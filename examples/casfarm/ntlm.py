"""NTLM on the server side, as MS-NLMP describes it: messages and NTLMv2 checks.

Theory of operation: a client sends a NEGOTIATE message (type 1); the server
answers with a CHALLENGE (type 2) carrying 8 random bytes and its names as
AV pairs; the client answers with an AUTHENTICATE (type 3) whose NTLMv2
response is HMAC-MD5 over that challenge and a client blob, keyed by a hash of
the password, the user and the domain. The server, which knows the password,
recomputes the proof. Everything here is pure: parsing, building and checking
are values in, values out; which connection a challenge belongs to is the
caller's business (`casfarm.auth`). Only NTLMv2 is accepted, as on a domain
that refuses LM and NTLMv1 (LmCompatibilityLevel 5).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from casfarm.md4 import nt_hash

SIGNATURE = b"NTLMSSP\x00"
NEGOTIATE, CHALLENGE, AUTHENTICATE = 1, 2, 3

UNICODE = 0x00000001
OEM = 0x00000002
REQUEST_TARGET = 0x00000004
SIGN = 0x00000010
SEAL = 0x00000020
NTLM = 0x00000200
ALWAYS_SIGN = 0x00008000
TARGET_TYPE_DOMAIN = 0x00010000
EXTENDED_SESSION_SECURITY = 0x00080000
TARGET_INFO = 0x00800000
VERSION = 0x02000000
KEY_128 = 0x20000000
KEY_EXCH = 0x40000000
KEY_56 = 0x80000000
# What a client may ask for and get echoed; the rest of the answer's flags are ours.
_ECHOED = SIGN | SEAL | ALWAYS_SIGN | EXTENDED_SESSION_SECURITY | VERSION | KEY_128 | KEY_EXCH
_ECHOED |= KEY_56
_SERVER_VERSION = bytes([10, 0]) + struct.pack("<H", 17763) + b"\x00\x00\x00\x0f"

_AV_EOL, _AV_NB_COMPUTER, _AV_NB_DOMAIN, _AV_DNS_COMPUTER, _AV_DNS_DOMAIN = 0, 1, 2, 3, 4
_AV_TIMESTAMP = 7
_FILETIME_EPOCH = 11644473600  # seconds from 1601-01-01 to 1970-01-01


class NtlmError(ValueError):
    """A message that is not the NTLM message it claims to be."""


@dataclass(frozen=True)
class ServerNames:
    """The names a server puts in its challenge.

    Attributes:
        netbios_domain: e.g. "LAB".
        netbios_computer: e.g. "CAS1".
        dns_domain: e.g. "lab.local".
        dns_computer: e.g. "cas1.lab.local".
    """

    netbios_domain: str
    netbios_computer: str
    dns_domain: str
    dns_computer: str


@dataclass(frozen=True)
class Challenge:
    """A CHALLENGE as sent, kept (per connection) to check the answer against.

    Attributes:
        message: the whole type 2 message, as sent.
        server_challenge: its 8 random bytes.
        flags: the flags it chose.
    """

    message: bytes
    server_challenge: bytes
    flags: int


@dataclass(frozen=True)
class Authenticate:
    """The fields of an AUTHENTICATE message that a server checks.

    Attributes:
        user: the user name as the client sent it.
        domain: the domain name as the client sent it (may be empty).
        workstation: the client's computer name.
        nt_response: the NtChallengeResponse (NTProofStr + blob for NTLMv2).
    """

    user: str
    domain: str
    workstation: str
    nt_response: bytes


def message_type(message: bytes) -> int:
    """The type (1, 2, 3) of an NTLM message.

    Raises:
        NtlmError: not an NTLM message.
    """
    if len(message) < 12 or not message.startswith(SIGNATURE):
        raise NtlmError("no NTLMSSP signature")
    kind: int = struct.unpack_from("<I", message, 8)[0]
    return kind


def negotiate_flags(message: bytes) -> int:
    """The flags of a NEGOTIATE message.

    Raises:
        NtlmError: not a NEGOTIATE message.
    """
    if message_type(message) != NEGOTIATE or len(message) < 16:
        raise NtlmError("not an NTLM NEGOTIATE message")
    flags: int = struct.unpack_from("<I", message, 12)[0]
    return flags


def _av_pair(av_id: int, value: bytes) -> bytes:
    return struct.pack("<HH", av_id, len(value)) + value


def target_info(names: ServerNames, unix_time: float) -> bytes:
    """The AV pairs of a challenge: the server's names and a timestamp."""
    filetime = int((unix_time + _FILETIME_EPOCH) * 10_000_000)
    pairs = [
        (_AV_NB_DOMAIN, names.netbios_domain.encode("utf-16-le")),
        (_AV_NB_COMPUTER, names.netbios_computer.encode("utf-16-le")),
        (_AV_DNS_DOMAIN, names.dns_domain.encode("utf-16-le")),
        (_AV_DNS_COMPUTER, names.dns_computer.encode("utf-16-le")),
        (_AV_TIMESTAMP, struct.pack("<Q", filetime)),
    ]
    return b"".join(_av_pair(k, v) for k, v in pairs) + _av_pair(_AV_EOL, b"")


def build_challenge(
    client_flags: int, names: ServerNames, server_challenge: bytes, unix_time: float
) -> Challenge:
    """The CHALLENGE that answers a NEGOTIATE with `client_flags`.

    Unicode when the client offers it, else OEM; NTLMv2 always (target info).
    """
    if len(server_challenge) != 8:
        raise ValueError("a server challenge is 8 bytes")
    charset = UNICODE if client_flags & UNICODE else OEM
    flags = charset | REQUEST_TARGET | NTLM | TARGET_TYPE_DOMAIN | TARGET_INFO
    flags |= client_flags & _ECHOED
    name = names.netbios_domain.encode("utf-16-le" if charset == UNICODE else "ascii")
    info = target_info(names, unix_time)
    header_size = 56
    message = (
        SIGNATURE
        + struct.pack("<I", CHALLENGE)
        + struct.pack("<HHI", len(name), len(name), header_size)
        + struct.pack("<I", flags)
        + server_challenge
        + b"\x00" * 8
        + struct.pack("<HHI", len(info), len(info), header_size + len(name))
        + _SERVER_VERSION
        + name
        + info
    )
    return Challenge(message, server_challenge, flags)


def _field(message: bytes, at: int) -> bytes:
    length, _, offset = struct.unpack_from("<HHI", message, at)
    if offset + length > len(message):
        raise NtlmError("a field runs past the end of the message")
    return message[offset : offset + length]


def parse_authenticate(message: bytes, flags: int) -> Authenticate:
    """The fields of an AUTHENTICATE, its strings decoded as `flags` (the challenge's) say.

    Raises:
        NtlmError: not a well-formed AUTHENTICATE message.
    """
    if message_type(message) != AUTHENTICATE or len(message) < 64:
        raise NtlmError("not an NTLM AUTHENTICATE message")
    encoding = "utf-16-le" if flags & UNICODE else "latin-1"
    try:
        domain, user, workstation = (_field(message, at).decode(encoding) for at in (28, 36, 44))
    except UnicodeDecodeError as exc:
        raise NtlmError(f"a name is not {encoding}") from exc
    return Authenticate(user, domain, workstation, _field(message, 20))


def ntowf_v2(password: str, user: str, domain: str) -> bytes:
    """NTOWFv2: the NTLMv2 key of one account (MS-NLMP §3.3.2)."""
    identity = (user.upper() + domain).encode("utf-16-le")
    return hmac.new(nt_hash(password), identity, hashlib.md5).digest()


def nt_proof(password: str, user: str, domain: str, server_challenge: bytes, blob: bytes) -> bytes:
    """NTProofStr: what an NTLMv2 client proves it knows `password` with."""
    key = ntowf_v2(password, user, domain)
    return hmac.new(key, server_challenge + blob, hashlib.md5).digest()


def verify_v2(answer: Authenticate, password: str, server_challenge: bytes) -> bool:
    """True when `answer` is an NTLMv2 response to `server_challenge` made with `password`.

    An NTLMv1 response (24 bytes) or an anonymous one (empty) is refused.
    """
    if len(answer.nt_response) <= 24:
        return False
    proof, blob = answer.nt_response[:16], answer.nt_response[16:]
    expected = nt_proof(password, answer.user, answer.domain, server_challenge, blob)
    return hmac.compare_digest(proof, expected)
