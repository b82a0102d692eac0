"""Request-line cases: request forms, versions and request-line tricks.

Sources: RFC 9112 §3 (request-line = method SP request-target SP
HTTP-version, single spaces; an invalid one gets 400), §3.2 (the four
request-target forms; a proxy forwards origin-form and, for absolute-form,
replaces Host with the target's authority: §3.2.2), §2.3 and §2.6
(HTTP-version is case-sensitive "HTTP/" DIGIT "." DIGIT; caslb serves 1.0
and 1.1 only), RFC 9110 §9.3.6 (CONNECT: a reverse proxy for Exchange has no
tunnel to offer, 405) and §9.3.7 (OPTIONS * is for the server itself, which
caslb cannot forward as such: 400).
"""

from __future__ import annotations

from tests.hostile.case import HOST, Case, Forwarded, Outcome, refused, request, routed


def _absolute(id: str, target: bytes, pool: str, forwarded: bytes, host: bytes, **kw: bool) -> Case:
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: other.example\r\n\r\n"
    return routed(
        id,
        "request-form",
        raw,
        Forwarded(pool, forwarded, fields=((b"host", host),)),
        source="RFC 9112 §3.2.2",
        **kw,
    )


REQUEST_FORMS: list[Case] = [
    refused(
        "connect-authority-form",
        "request-form",
        b"CONNECT mail.lab.local:443 HTTP/1.1\r\nHost: mail.lab.local:443\r\n\r\n",
        405,
        source="RFC 9110 §9.3.6",
    ),
    refused(
        "connect-authority-form-default",
        "request-form",
        b"CONNECT mail.lab.local:443 HTTP/1.1\r\nHost: mail.lab.local:443\r\n\r\n",
        405,
        default_pool=True,
    ),
    refused(
        "connect-with-path",
        "request-form",
        request(b"/owa/", method=b"CONNECT"),
        405,
        source="RFC 9110 §9.3.6",
    ),
    refused(
        "options-asterisk",
        "request-form",
        request(b"*", method=b"OPTIONS"),
        source="RFC 9110 §9.3.7",
    ),
    refused(
        "options-asterisk-default",
        "request-form",
        request(b"*", method=b"OPTIONS"),
        default_pool=True,
    ),
    refused("get-asterisk", "request-form", request(b"*"), source="RFC 9112 §3.2.4"),
    refused(
        "get-authority-form",
        "request-form",
        request(b"mail.lab.local:443"),
        status=405,  # authority-form is CONNECT's, and caslb is not a tunnel
        source="RFC 9112 §3.2.3",
    ),
    refused(
        "origin-form-without-slash", "request-form", request(b"owa/"), source="RFC 9112 §3.2.1"
    ),
    _absolute(
        "absolute-form-host-replaced", b"http://mail.lab.local/owa/x", "owa", b"/owa/x", HOST
    ),
    _absolute(
        "absolute-form-https-query",
        b"https://mail.lab.local/ews/Exchange.asmx?a=1",
        "ews",
        b"/ews/Exchange.asmx?a=1",
        HOST,
    ),
    _absolute(
        "absolute-form-port", b"http://mail.lab.local:8080/owa/", "owa", b"/owa/", HOST + b":8080"
    ),
    _absolute("absolute-form-scheme-case", b"HTTP://mail.lab.local/mapi/", "mapi", b"/mapi/", HOST),
    _absolute(
        "absolute-form-normalised", b"http://mail.lab.local/owa/../ews/", "ews", b"/ews/", HOST
    ),
    _absolute(
        "absolute-form-empty-path",
        b"http://mail.lab.local",
        "fallback",
        b"/",
        HOST,
        default_pool=True,
    ),
]

REQUEST_LINES: list[Case] = [
    Case(
        "control-http10-without-host",
        "request-line",
        request(b"/owa/", version=b"HTTP/1.0", host=False),
        (Outcome(200, (Forwarded("owa", b"/owa/"),)),),
        source="RFC 9112 §3.2: Host is required of HTTP/1.1 only",
    ),
    *(
        refused(
            f"version-{name}",
            "request-line",
            request(b"/owa/", version=version),
            source="RFC 9112 §2.3",
        )
        for name, version in [
            ("1.2", b"HTTP/1.2"),
            ("9.9", b"HTTP/9.9"),
            ("2.0", b"HTTP/2.0"),
            ("0.9", b"HTTP/0.9"),
            ("lowercase", b"http/1.1"),
            ("two-digit-minor", b"HTTP/1.10"),
            ("missing-minor", b"HTTP/1"),
        ]
    ),
    *(
        refused(f"line-{name}", "request-line", raw, source="RFC 9112 §3")
        for name, raw in [
            ("no-version", b"GET /owa/\r\nHost: mail.lab.local\r\n\r\n"),
            ("double-space", b"GET  /owa/ HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"),
            ("tab-separators", b"GET\t/owa/\tHTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"),
            ("trailing-word", b"GET /owa/ HTTP/1.1 x\r\nHost: mail.lab.local\r\n\r\n"),
            ("trailing-space", b"GET /owa/ HTTP/1.1 \r\nHost: mail.lab.local\r\n\r\n"),
            ("leading-space", b" GET /owa/ HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"),
            ("nul-in-target", b"GET /owa/\x00x HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"),
            ("space-in-target", b"GET /owa/ x HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"),
            ("control-in-method", b"G\x01ET /owa/ HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"),
            ("bare-cr-in-line", b"GET /owa/\r HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"),
            ("bare-cr-ends-line", b"GET /owa/ HTTP/1.1\rHost: mail.lab.local\r\n\r\n"),
            ("del-in-target", b"GET /owa/\x7f HTTP/1.1\r\nHost: mail.lab.local\r\n\r\n"),
        ]
    ),
]
