"""Hypothesis strategies: Exchange-shaped requests, then mutated the way smuggling tools do.

A request is built from a seed (real OWA, EWS, MAPI, RPC and ActiveSync
shapes), then one to four edits: a flipped byte, an inserted CR, LF, NUL,
space, colon or framing field, a duplicated or dropped field line, another
method, version or target, or a truncation. Targets come from segments that
exercise normalisation (dot segments, encodings, parameters, backslashes).
"""

from __future__ import annotations

from hypothesis import strategies as st

SEEDS = [
    b"GET /owa/ HTTP/1.1\r\nHost: mail.lab.local\r\nUser-Agent: Mozilla/5.0\r\n"
    b"Cookie: X-OWA-CANARY=abc\r\n\r\n",
    b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail.lab.local\r\n"
    b'Content-Type: text/xml; charset=utf-8\r\nSOAPAction: "x"\r\nContent-Length: 5\r\n\r\nhello',
    b"POST /mapi/emsmdb/?MailboxId=a@b HTTP/1.1\r\nHost: mail.lab.local\r\n"
    b"X-RequestType: Connect\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"RPC_IN_DATA /rpc/rpcproxy.dll?cas1:6001 HTTP/1.1\r\nHost: mail.lab.local\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"GET /Microsoft-Server-ActiveSync?Cmd=Ping HTTP/1.1\r\nHost: mail.lab.local\r\n"
    b"MS-ASProtocolVersion: 16.1\r\n\r\n",
]

INSERTS = [
    b"\r",
    b"\n",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b"\r\n",
    b"\r\n ",
    b",",
    b";",
    b"\x7f",
    b"\x0b",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 0\r\n",
    b"Host: other.example\r\n",
    b"\r\n\r\n",
    b"0\r\n\r\n",
]

METHODS = [b"GET", b"POST", b"PUT", b"OPTIONS", b"CONNECT", b"RPC_OUT_DATA", b"G ET", b"", b"get"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b""]
SEGMENTS = [
    b"owa",
    b"OWA",
    b"ews",
    b"mapi",
    b"ecp",
    b"..",
    b".",
    b"",
    b"%2e%2e",
    b"%2E",
    b".%2e",
    b"%7E",
    b"%7e",
    b"%41",
    b"%20",
    b"%3f",
    b"a;b",
    b"ecp;x",
    b"%2f",
    b"%5c",
    b"a\\b",
    b"Exchange.asmx",
]
FIXED_TARGETS = [b"*", b"mail.lab.local:443", b"http://mail.lab.local/owa/../ecp/", b"owa/"]


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    """A request target built to stress path normalisation."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(FIXED_TARGETS))
    path = b"/" + b"/".join(draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5)))
    query = draw(st.sampled_from([b"", b"?a=1", b"?x=/../ecp", b"?a=%7e"]))
    return path + query


def _split(request: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = request.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body if sep else b""


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _replace_request_line_part(request: bytes, part: int, value: bytes) -> bytes:
    lines, body = _split(request)
    words = lines[0].split(b" ", 2)
    if len(words) == 3:
        words[part] = value
        lines[0] = b" ".join(words)
    return _join(lines, body)


@st.composite
def edits(draw: st.DrawFn, request: bytes) -> bytes:
    """`request` with one edit applied."""
    kind = draw(
        st.sampled_from(
            ["flip", "insert", "dup", "drop", "method", "version", "target", "truncate"]
        )
    )
    where = draw(st.integers(0, 10_000))
    if kind == "flip" and request:
        i = where % len(request)
        bit = draw(st.integers(0, 7))
        return request[:i] + bytes([request[i] ^ (1 << bit)]) + request[i + 1 :]
    if kind == "insert":
        i = where % (len(request) + 1)
        return request[:i] + draw(st.sampled_from(INSERTS)) + request[i:]
    if kind in ("dup", "drop"):
        lines, body = _split(request)
        if len(lines) < 2:
            return request
        i = 1 + where % (len(lines) - 1)
        if kind == "dup":
            lines.insert(i, lines[i])
        else:
            del lines[i]
        return _join(lines, body)
    if kind == "method":
        return _replace_request_line_part(request, 0, draw(st.sampled_from(METHODS)))
    if kind == "target":
        return _replace_request_line_part(request, 1, draw(targets()))
    if kind == "version":
        return _replace_request_line_part(request, 2, draw(st.sampled_from(VERSIONS)))
    return request[: where % (len(request) + 1)]  # truncate


@st.composite
def hostile_requests(draw: st.DrawFn) -> bytes:
    """A seed request with one to four edits."""
    request = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        request = draw(edits(request))
    return request
