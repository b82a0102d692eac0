"""Message framing cases: CL.TE, TE.CL, TE.TE obfuscation, bad Content-Length, bad chunks.

Sources: RFC 9112 §6.1 (Transfer-Encoding; a message with both may be
rejected by an intermediary, and caslb does), §6.2 and §6.3 (Content-Length;
an invalid one is unrecoverable: 400 and close), §7.1 (chunk grammar: hex
size, CRLF after every line and after the data), and the published request
smuggling classes (CL.TE, TE.CL, TE.TE with obfuscated Transfer-Encoding).
In every smuggling case the bytes after the first request's framing are a
complete second request: if a backend ever records it, it was smuggled.
"""

from __future__ import annotations

from tests.hostile.case import Case, Forwarded, Outcome, refused, request, routed

SMUGGLED = b"GET /ecp/smuggled HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"


def _post(*fields: bytes, body: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return request(b"/owa/x", *fields, method=b"POST", version=version, body=body)


CHUNKED_SMUGGLE = b"0\r\n\r\n" + SMUGGLED

FRAMING: list[Case] = [
    # Controls: the same framing, well-formed, must go through intact.
    routed(
        "control-content-length-body",
        "framing",
        _post(b"Content-Length: 5", body=b"hello"),
        Forwarded("owa", b"/owa/x", b"POST", b"hello", "length"),
    ),
    routed(
        "control-chunked-body",
        "framing",
        _post(b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
        Forwarded("owa", b"/owa/x", b"POST", b"hello", "chunked"),
    ),
    routed(
        "control-chunked-uppercase-coding-name",
        "framing",
        _post(b"Transfer-Encoding: CHUNKED", body=b"5\r\nhello\r\n0\r\n\r\n"),
        Forwarded("owa", b"/owa/x", b"POST", b"hello", "chunked"),
        source="RFC 9112 §7: transfer coding names are case-insensitive",
    ),
    routed(
        "control-get-with-body",
        "framing",
        request(b"/owa/x", b"Content-Length: %d" % len(SMUGGLED), body=SMUGGLED),
        Forwarded("owa", b"/owa/x", b"GET", SMUGGLED, "length"),
        source="CL.0: a GET body is a body, never the next request",
    ),
    routed(
        "connection-names-content-length",
        "framing",
        _post(b"Connection: Content-Length", b"Content-Length: 5", body=b"hello"),
        Forwarded("owa", b"/owa/x", b"POST", b"hello", "length"),
        source="RFC 9110 §7.6.1: a hop-by-hop list must not strip the framing",
    ),
    routed(
        "connection-names-transfer-encoding",
        "framing",
        _post(
            b"Connection: Transfer-Encoding",
            b"Transfer-Encoding: chunked",
            body=b"5\r\nhello\r\n0\r\n\r\n",
        ),
        Forwarded("owa", b"/owa/x", b"POST", b"hello", "chunked"),
        source="RFC 9110 §7.6.1: a hop-by-hop list must not strip the framing",
    ),
    # CL.TE and TE.CL: both fields, in either order, whatever the body.
    refused(
        "cl-te",
        "cl-te",
        _post(b"Content-Length: 6", b"Transfer-Encoding: chunked", body=CHUNKED_SMUGGLE),
        source="RFC 9112 §6.1; PortSwigger CL.TE",
    ),
    refused(
        "te-cl",
        "te-cl",
        _post(
            b"Transfer-Encoding: chunked",
            b"Content-Length: 4",
            body=b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
        ),
        source="RFC 9112 §6.1; PortSwigger TE.CL",
    ),
    refused(
        "cl-te-zero-length",
        "cl-te",
        _post(b"Content-Length: 0", b"Transfer-Encoding: chunked", body=CHUNKED_SMUGGLE),
    ),
    refused(
        "cl-te-mixed-case-names",
        "cl-te",
        _post(b"content-LENGTH: 5", b"TRANSFER-encoding: chunked", body=CHUNKED_SMUGGLE),
    ),
    # TE.TE: a Transfer-Encoding that is not exactly one final chunked.
    *(
        refused(f"te-{name}", "te-obfuscation", _post(field, body=CHUNKED_SMUGGLE), source=src)
        for name, field, src in [
            (
                "gzip-chunked",
                b"Transfer-Encoding: gzip, chunked",
                "RFC 9112 §6.1; h11 decodes chunked only",
            ),
            ("chunked-identity", b"Transfer-Encoding: chunked, identity", "RFC 9112 §6.3 rule 4"),
            ("xchunked", b"Transfer-Encoding: xchunked", "PortSwigger TE.TE"),
            ("chunked-quoted", b'Transfer-Encoding: "chunked"', "PortSwigger TE.TE"),
            (
                "chunked-vertical-tab",
                b"Transfer-Encoding:\x0bchunked",
                "PortSwigger TE.TE; RFC 9110 §5.5",
            ),
            ("chunked-form-feed", b"Transfer-Encoding: chunked\x0c", "RFC 9110 §5.5"),
            ("chunked-nul", b"Transfer-Encoding: chunked\x00", "RFC 9110 §5.5"),
            ("identity", b"Transfer-Encoding: identity", "RFC 9112 §6.1 (identity is gone)"),
            ("chunk", b"Transfer-Encoding: chunk", "PortSwigger TE.TE"),
            ("space-before-colon", b"Transfer-Encoding : chunked", "RFC 9112 §5.1"),
            ("tab-before-colon", b"Transfer-Encoding\t: chunked", "RFC 9112 §5.1"),
        ]
    ),
    refused(
        "te-twice",
        "te-obfuscation",
        _post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=CHUNKED_SMUGGLE),
        source="brief: Transfer-Encoding twice",
    ),
    refused(
        "te-twice-second-bogus",
        "te-obfuscation",
        _post(b"Transfer-Encoding: chunked", b"Transfer-encoding: x", body=CHUNKED_SMUGGLE),
        source="PortSwigger TE.TE",
    ),
    refused(
        "te-folded-with-cl",
        "te-obfuscation",
        _post(b"Content-Length: 5", b"Transfer-Encoding:", b" chunked", body=CHUNKED_SMUGGLE),
        source="PortSwigger TE.TE (obs-fold); either reading is CL and TE at once",
    ),
    refused(
        "te-in-http10",
        "te-obfuscation",
        _post(b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n", version=b"HTTP/1.0"),
        source="RFC 9112 §6.1: chunked is HTTP/1.1 only",
    ),
    # Content-Length values a parser could read two ways.
    refused(
        "cl-conflicting",
        "content-length",
        _post(b"Content-Length: 5", b"Content-Length: 6", body=b"hello" + SMUGGLED),
        source="RFC 9112 §6.3 rule 5",
    ),
    refused(
        "cl-conflicting-list",
        "content-length",
        _post(b"Content-Length: 5, 6", body=b"hello" + SMUGGLED),
        source="RFC 9112 §6.3 rule 5",
    ),
    *(
        refused(
            f"cl-{name}",
            "content-length",
            _post(b"Content-Length: " + value, body=b"hello" + SMUGGLED),
        )
        for name, value in [
            ("plus", b"+5"),
            ("hex", b"0x5"),
            ("two-numbers", b"5 5"),
            ("negative", b"-5"),
            ("decimal", b"5.0"),
            ("empty", b""),
            ("letters", b"five"),
        ]
    ),
]

# A chunked body that breaks the chunk grammar: 400 from the client side. The
# head (and chunks before the bad one) may already have gone upstream; that
# request must never complete, and nothing after it may be read as a request.
_BAD_CHUNKS = [
    ("data-overrun", b"5\r\nhelloXX0\r\n\r\n", "brief; RFC 9112 §7.1"),
    ("size-not-hex", b"zz\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1"),
    ("size-hex-prefix", b"0x5\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1"),
    ("size-negative", b"-5\r\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1"),
    ("size-over-20-digits", b"0" * 24 + b"5\r\nhello\r\n0\r\n\r\n", "brief: over-long chunk size"),
    (
        "size-overflows-64-bits",
        b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n",
        "brief: over-long chunk size",
    ),
    ("size-bare-lf", b"5\nhello\r\n0\r\n\r\n", "RFC 9112 §7.1: chunk lines end in CRLF"),
    ("data-bare-lf", b"5\r\nhello\n0\r\n\r\n", "RFC 9112 §7.1: chunk data ends in CRLF"),
]

CHUNKED: list[Case] = [
    Case(
        f"chunked-{name}",
        "chunked-body",
        _post(b"Transfer-Encoding: chunked", body=body + SMUGGLED),
        (Outcome(400, partial="owa"),),
        source=src,
    )
    for name, body, src in _BAD_CHUNKS
]
