"""Header field cases: Host rules, field syntax, control characters, obs-fold, limits.

Sources: RFC 9112 §3.2 (an HTTP/1.1 request without Host, or with more than
one, or with an invalid one gets 400), §5.1 (no whitespace between a field
name and its colon: 400), §5.2 (obs-fold: reject with 400, or replace each
fold with SP before forwarding), §2.2 (a bare CR is invalid; whitespace
before the first field line is rejected or the line dropped), RFC 9110 §5.1
(field names are tokens) and §5.5 (field values carry no CTL but HTAB), and
RFC 6585 §5 (431 for too many or too large header fields).
"""

from __future__ import annotations

from tests.hostile.case import Case, Forwarded, Outcome, refused, request, routed

_CONTROL_BYTES = [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F]


def _owa(*fields: bytes, host: bool = True) -> bytes:
    return request(b"/owa/", *fields, host=host)


def _unfolded_or_refused(id: str, raw: bytes, name: bytes, unfolded: bytes) -> Case:
    return Case(
        id,
        "obs-fold",
        raw,
        (
            Outcome(400),
            Outcome(200, (Forwarded("owa", b"/owa/", fields=((name, unfolded),)),)),
        ),
        source="RFC 9112 §5.2",
    )


HOST_RULES: list[Case] = [
    refused("host-missing", "host", _owa(host=False), source="RFC 9112 §3.2"),
    refused("host-empty", "host", _owa(b"Host:", host=False), source="RFC 9112 §3.2"),
    refused("host-blank", "host", _owa(b"Host:   ", host=False), source="RFC 9112 §3.2"),
    refused("host-twice", "host", _owa(b"Host: other.example"), source="RFC 9112 §3.2"),
    refused("host-twice-same", "host", _owa(b"Host: mail.lab.local"), source="RFC 9112 §3.2"),
    refused(
        "host-invalid-space",
        "host",
        _owa(b"Host: mail lab.local", host=False),
        source="RFC 9112 §3.2",
    ),
    refused(
        "host-with-path",
        "host",
        _owa(b"Host: mail.lab.local/owa", host=False),
        source="RFC 9112 §3.2",
    ),
    refused(
        "host-after-leading-whitespace",
        "host",
        b"GET /owa/ HTTP/1.1\r\n Host: mail.lab.local\r\n\r\n",
        source="RFC 9112 §2.2: the line is rejected or dropped; either way no Host",
    ),
]

FIELD_SYNTAX: list[Case] = [
    routed(
        "control-obs-text-value",
        "field-syntax",
        _owa(b"X-Test: caf\xe9\tau lait"),
        Forwarded("owa", b"/owa/", fields=((b"x-test", b"caf\xe9\tau lait"),)),
        source="RFC 9110 §5.5: obs-text and HTAB are allowed",
    ),
    *(
        refused(
            f"value-control-{byte:02x}",
            "field-control-char",
            _owa(b"X-Test: a%cb" % byte),
            source="RFC 9110 §5.5",
        )
        for byte in _CONTROL_BYTES
    ),
    refused(
        "bare-cr-ends-field", "field-syntax", _owa(b"X-Test: a\rX-Other: b"), source="RFC 9112 §2.2"
    ),
    refused(
        "bare-cr-before-crlf-pair",
        "field-syntax",
        b"GET /owa/ HTTP/1.1\r\nHost: mail.lab.local\r\n\r\r\n",
    ),
    refused("space-before-colon", "field-syntax", _owa(b"X-Test : a"), source="RFC 9112 §5.1"),
    refused(
        "space-before-colon-host",
        "field-syntax",
        _owa(b"Host : mail.lab.local", host=False),
        source="RFC 9112 §5.1",
    ),
    refused("tab-before-colon", "field-syntax", _owa(b"X-Test\t: a"), source="RFC 9112 §5.1"),
    refused("space-in-name", "field-syntax", _owa(b"X Test: a"), source="RFC 9110 §5.1"),
    refused("empty-name", "field-syntax", _owa(b": a"), source="RFC 9110 §5.1"),
    refused("non-token-name", "field-syntax", _owa(b"X@Test: a"), source="RFC 9110 §5.1"),
    refused("nul-in-name", "field-syntax", _owa(b"X-Te\x00st: a"), source="RFC 9110 §5.1"),
    refused("no-colon", "field-syntax", _owa(b"X-Test a"), source="RFC 9112 §5"),
    _unfolded_or_refused("fold-space", _owa(b"X-Test: a", b" b"), b"x-test", b"a b"),
    _unfolded_or_refused("fold-tab", _owa(b"X-Test: a", b"\tb"), b"x-test", b"a b"),
    _unfolded_or_refused(
        "fold-many-spaces", _owa(b"X-Test: a", b"    b", b" c"), b"x-test", b"a b c"
    ),
    Case(
        "whitespace-before-first-field",
        "obs-fold",
        b"GET /owa/ HTTP/1.1\r\n X-Test: a\r\nHost: mail.lab.local\r\n\r\n",
        (Outcome(400), Outcome(200, (Forwarded("owa", b"/owa/", absent=(b"x-test",)),))),
        source="RFC 9112 §2.2",
    ),
]


def _fields(count: int) -> list[bytes]:
    return [b"X-F%03d: v" % i for i in range(count)]


LIMITS: list[Case] = [
    routed(
        "fields-100-accepted",
        "limits",
        _owa(*_fields(99)),
        Forwarded("owa", b"/owa/"),
        source="brief: 100 header fields is the limit",
    ),
    refused("fields-101", "limits", _owa(*_fields(100)), 431, source="RFC 6585 §5"),
    refused("fields-1000", "limits", _owa(*_fields(999)), 431, source="RFC 6585 §5"),
    refused(
        "head-one-field-over-32k",
        "limits",
        _owa(b"X-Big: " + b"a" * 33_000),
        431,
        source="RFC 6585 §5",
    ),
    refused(
        "head-over-32k-in-50-fields",
        "limits",
        _owa(*(b"X-B%02d: %s" % (i, b"b" * 700) for i in range(50))),
        431,
        source="RFC 6585 §5",
    ),
    refused("head-over-64k", "limits", _owa(b"X-Big: " + b"a" * 70_000), 431, source="RFC 6585 §5"),
    Case(
        "target-over-32k",
        "limits",
        request(b"/owa/" + b"a" * 33_000),
        (Outcome(414), Outcome(431)),
        source="RFC 9112 §3 (414) or the head limit (431)",
    ),
]
