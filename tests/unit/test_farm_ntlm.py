"""casfarm's MD4, NTLMv2 checks and authentication decisions, against published vectors
and a real NTLM client (pyspnego) that nobody here wrote."""

from __future__ import annotations

import base64

import pytest
import spnego
from casfarm import ntlm
from casfarm.auth import BASIC, NEGOTIATE, NTLM, Accounts, Allow, ConnectionAuth, Refuse
from casfarm.forms import Sessions, is_script_request, logon_redirect, parse_logon
from casfarm.md4 import md4, nt_hash

NAMES = ntlm.ServerNames("LAB", "CAS1", "lab.local", "cas1.lab.local")
ACCOUNTS = Accounts.for_domain("lab.local", {"alice": "Passw0rd"})
WINDOWS = (NEGOTIATE, NTLM)


@pytest.mark.parametrize(
    ("text", "digest"),
    [
        (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
        (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
        (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
        (b"message digest", "d9130a8164549fe818874806e1c7014b"),
        (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
        (
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            "043f8582f241db351ce627e153e7f0e4",
        ),
        (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
    ],
)
def test_md4_matches_rfc_1320s_test_suite(text: bytes, digest: str) -> None:
    assert md4(text).hex() == digest


def test_md4_pads_across_a_block_boundary() -> None:
    # 55 bytes fit one block with the length; 56 need a second: both must differ and be stable.
    assert md4(b"x" * 55) != md4(b"x" * 56)
    assert len({md4(b"y" * n) for n in range(50, 130)}) == 80


def test_ntlmv2_matches_ms_nlmp_4_2_4() -> None:
    # MS-NLMP §4.2.4: User / Domain / Password, server challenge 0123456789abcdef.
    assert nt_hash("Password").hex() == "a4f49c406510bdcab6824ee7c30fd852"
    assert ntlm.ntowf_v2("Password", "User", "Domain").hex() == "0c868a403bfd7a93a3001ef22ef02e3f"
    # AV pairs: NetBIOS domain "Domain", NetBIOS computer "Server", end of list.
    av_pairs = bytes.fromhex("02000c0044006f006d00610069006e0001000c00530065007200760065007200")
    av_pairs += bytes(4)
    # The blob: version 1.1, reserved, time 0, client challenge aa..., reserved, AV pairs, reserved.
    blob = (
        bytes.fromhex("0101000000000000") + bytes(8) + b"\xaa" * 8 + bytes(4) + av_pairs + bytes(4)
    )
    proof = ntlm.nt_proof("Password", "User", "Domain", bytes.fromhex("0123456789abcdef"), blob)
    assert proof.hex() == "68cd0ab851e51c96aabc927bebef6a1c"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _handshake(
    conn: ConnectionAuth, user: str, password: str, *, scheme: str = NTLM
) -> tuple[spnego.ContextProxy, Refuse, bytes]:
    client = spnego.client(user, password, hostname="cas1.lab.local", protocol="ntlm")
    challenge = conn.authorize(
        WINDOWS, f"{scheme} {_b64(client.step() or b'')}", ACCOUNTS, NAMES, 0
    )
    assert isinstance(challenge, Refuse) and len(challenge.challenges) == 1
    got_scheme, token = challenge.challenges[0].split(" ")
    assert got_scheme == scheme
    answer = client.step(base64.b64decode(token))
    assert answer is not None
    return client, challenge, answer


@pytest.mark.parametrize("user", ["LAB\\alice", "alice", "alice@lab.local", "lab.local\\ALICE"])
def test_a_real_ntlm_client_authenticates_the_connection(user: str) -> None:
    conn = ConnectionAuth()
    _, _, answer = _handshake(conn, user, "Passw0rd")
    assert conn.authorize(WINDOWS, f"NTLM {_b64(answer)}", ACCOUNTS, NAMES, 0) == Allow(
        "LAB\\alice"
    )
    # The connection stays authenticated: later requests carry no header.
    assert conn.authorize(WINDOWS, None, ACCOUNTS, NAMES, 0) == Allow("LAB\\alice")


def test_negotiate_carrying_raw_ntlm_is_answered_under_negotiate() -> None:
    conn = ConnectionAuth()
    _, _, answer = _handshake(conn, "alice", "Passw0rd", scheme=NEGOTIATE)
    assert conn.authorize(WINDOWS, f"Negotiate {_b64(answer)}", ACCOUNTS, NAMES, 0) == Allow(
        "LAB\\alice"
    )


def test_the_answer_on_another_connection_fails() -> None:
    first, second = ConnectionAuth(), ConnectionAuth()
    _, _, answer = _handshake(first, "alice", "Passw0rd")
    verdict = second.authorize(WINDOWS, f"NTLM {_b64(answer)}", ACCOUNTS, NAMES, 0)
    assert verdict == Refuse(("Negotiate", "NTLM"))
    assert second.authorize(WINDOWS, None, ACCOUNTS, NAMES, 0) == Refuse(("Negotiate", "NTLM"))


def test_an_answer_to_another_challenge_fails() -> None:
    first, second = ConnectionAuth(), ConnectionAuth()
    _, _, answer = _handshake(first, "alice", "Passw0rd")
    _handshake(second, "alice", "Passw0rd")  # second now holds its own challenge
    assert isinstance(second.authorize(WINDOWS, f"NTLM {_b64(answer)}", ACCOUNTS, NAMES, 0), Refuse)


@pytest.mark.parametrize(
    ("user", "password"), [("alice", "wrong"), ("bob", "Passw0rd"), ("OTHER\\alice", "Passw0rd")]
)
def test_wrong_password_unknown_user_or_foreign_domain_fail(user: str, password: str) -> None:
    conn = ConnectionAuth()
    _, _, answer = _handshake(conn, user, password)
    assert isinstance(conn.authorize(WINDOWS, f"NTLM {_b64(answer)}", ACCOUNTS, NAMES, 0), Refuse)
    assert conn.user is None


def test_an_oem_client_gets_an_oem_challenge_and_is_still_checked() -> None:
    # curl's NEGOTIATE offers OEM only; the challenge must not switch it to Unicode.
    oem = ntlm.OEM | ntlm.REQUEST_TARGET | ntlm.NTLM | ntlm.EXTENDED_SESSION_SECURITY
    challenge = ntlm.build_challenge(oem, NAMES, b"\x01" * 8, 0)
    assert challenge.flags & ntlm.OEM and not challenge.flags & ntlm.UNICODE
    assert challenge.flags & ntlm.TARGET_INFO
    assert b"LAB" in challenge.message and "LAB".encode("utf-16-le") in challenge.message


def test_ntlmv1_and_anonymous_answers_are_refused() -> None:
    for nt_response in (b"", b"\x11" * 24):
        answer = ntlm.Authenticate("alice", "LAB", "WS", nt_response)
        assert not ntlm.verify_v2(answer, "Passw0rd", b"\x02" * 8)


@pytest.mark.parametrize(
    "garbage",
    [
        "NTLM",
        "NTLM !!!",
        "NTLM " + _b64(b"NTLMSSP\0\x07\0\0\0"),
        "Negotiate " + _b64(b"\x60\x28\x06\x06+\x06\x01\x05\x05\x02"),
        "Digest x",
    ],
)
def test_malformed_or_unsupported_tokens_get_the_offer_again(garbage: str) -> None:
    assert ConnectionAuth().authorize(WINDOWS, garbage, ACCOUNTS, NAMES, 0) == Refuse(
        ("Negotiate", "NTLM")
    )


def test_basic_authenticates_each_request_and_not_the_connection() -> None:
    conn = ConnectionAuth()
    good = "Basic " + _b64(b"LAB\\alice:Passw0rd")
    assert conn.authorize((BASIC,), good, ACCOUNTS, NAMES, 0) == Allow("LAB\\alice")
    offer = Refuse(('Basic realm="cas1.lab.local"',))
    assert conn.authorize((BASIC,), None, ACCOUNTS, NAMES, 0) == offer
    assert conn.authorize((BASIC,), "Basic " + _b64(b"alice:nope"), ACCOUNTS, NAMES, 0) == offer
    # NTLM is not offered on ActiveSync, so an NTLM header is not even looked at.
    assert conn.authorize((BASIC,), "NTLM " + _b64(b"NTLMSSP\0"), ACCOUNTS, NAMES, 0) == offer


def test_lab_users_must_be_bare_names_with_passwords() -> None:
    for users in ({"LAB\\alice": "x"}, {"alice@lab": "x"}, {"alice": ""}, {"": "x"}):
        with pytest.raises(ValueError, match="bad lab user"):
            Accounts.for_domain("lab.local", users)


def test_owa_sessions_expire_and_cannot_be_forged() -> None:
    sessions = Sessions(timeout=60)
    cookie = "other=1; cadata=" + sessions.issue("LAB\\alice", 100.0)
    assert sessions.user_of(cookie, 159.0) == "LAB\\alice"
    assert sessions.user_of(cookie, 160.0) is None
    assert Sessions(timeout=60).user_of(cookie, 100.0) is None  # another farm's key
    value = cookie.split("cadata=")[1]
    forged = base64.urlsafe_b64encode(b"LAB\\mallory|9999999").decode() + "." + value.split(".")[1]
    assert sessions.user_of(f"cadata={forged}", 100.0) is None
    assert sessions.user_of("cadata=%%%.zz", 100.0) is None
    assert sessions.user_of(None, 100.0) is None
    with pytest.raises(ValueError, match="owa_session_timeout"):
        Sessions(timeout=0)


def test_owa_tells_script_requests_from_navigation_and_keeps_the_way_back() -> None:
    assert is_script_request("POST", "/owa/service.svc?action=GetFolder", {})
    assert is_script_request("GET", "/owa/x", {"x-requested-with": "XMLHttpRequest"})
    assert not is_script_request("GET", "/owa/", {})
    assert logon_redirect("mail.lab.local", "/ecp/") == (
        "https://mail.lab.local/owa/auth/logon.aspx?url=https%3a%2f%2fmail.lab.local%2fecp%2f"
        "&reason=0"
    )
    logon = parse_logon(b"destination=https%3A%2F%2Fevil.example%2F&username=a&password=b", "h")
    assert (logon.username, logon.password, logon.destination) == ("a", "b", "https://h/owa/")
