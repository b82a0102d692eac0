"""Path normalisation cases: what a request target routes on and what the backend sees.

The balancer routes on the normalised path and forwards exactly that path
(query unchanged): RFC 3986 §5.2.4 remove_dot_segments after decoding
percent-encoded unreserved characters (§2.3, §6.2.2.2), percent-encoding
hex in uppercase (§6.2.2.1), empty segments merged. A dot segment that
climbs above the root, an encoded "/" or "\\", or a raw "\\" cannot be
normalised to one meaning on every server (IIS reads "\\" and "%5c" as
"/"): 400. The segment parameter after ";" is not part of the route
(`/ecp;x/` is ECP) but is forwarded as sent. The query string is never
looked at (ProxyShell reached the backend through it).

There is no route for /ecp: a path that normalises there is 404 without a
default pool, and goes to the default pool ("fallback") with the normalised
target when there is one.
"""

from __future__ import annotations

from tests.hostile.case import Case, Forwarded, Outcome, refused, request, routed


def _to_ecp(id: str, target: bytes, normalised: bytes, source: str) -> list[Case]:
    """Two cases: no default pool (404, nothing forwarded); the default pool gets `normalised`."""
    raw = request(target)
    return [
        Case(f"{id}-no-default", "path-dot-segments", raw, (Outcome(404),), source=source),
        routed(
            f"{id}-default",
            "path-dot-segments",
            raw,
            Forwarded("fallback", normalised),
            default_pool=True,
            source=source,
        ),
    ]


def _path(
    id: str, klass: str, target: bytes, pool: str, forwarded: bytes, source: str = ""
) -> Case:
    return routed(id, klass, request(target), Forwarded(pool, forwarded), source=source)


def _to_ecp_param() -> list[Case]:
    raw = request(b"/ecp;x/")
    return [
        Case("param-ecp-no-default", "path-params", raw, (Outcome(404),), source="RFC 3986 §3.3"),
        routed(
            "param-ecp-default",
            "path-params",
            raw,
            Forwarded("fallback", b"/ecp;x/"),
            default_pool=True,
            source="RFC 3986 §3.3",
        ),
    ]


PATHS: list[Case] = [
    _path("control-plain-owa", "path-control", b"/owa/", "owa", b"/owa/"),
    _path(
        "control-case-kept",
        "path-control",
        b"/OWA/Default.aspx?a=B",
        "owa",
        b"/OWA/Default.aspx?a=B",
    ),
    *_to_ecp("dotdot-owa-to-ecp", b"/owa/../ecp/", b"/ecp/", "RFC 3986 §5.2.4"),
    *_to_ecp("encoded-dotdot-to-ecp", b"/owa/%2e%2e/ecp/", b"/ecp/", "RFC 3986 §2.3, §5.2.4"),
    *_to_ecp("encoded-upper-dotdot-to-ecp", b"/owa/%2E%2E/ecp/", b"/ecp/", "RFC 3986 §2.3, §5.2.4"),
    *_to_ecp("dot-dotdot-upper-to-ecp", b"/OWA/./../ecp/", b"/ecp/", "RFC 3986 §5.2.4"),
    *_to_ecp("encoded-letter-ecp", b"/%65cp/", b"/ecp/", "RFC 3986 §2.3"),
    *_to_ecp("leading-double-slash-ecp", b"//ecp/", b"/ecp/", "brief: empty segments merged"),
    *_to_ecp("inner-double-slash-ecp", b"/ecp//x", b"/ecp/x", "brief: empty segments merged"),
    *_to_ecp("dotdot-query-kept", b"/owa/../ecp/?a=%2e%2e", b"/ecp/?a=%2e%2e", "query unchanged"),
    _path(
        "dotdot-owa-to-ews",
        "path-dot-segments",
        b"/OWA/../ews/",
        "ews",
        b"/ews/",
        "RFC 3986 §5.2.4",
    ),
    _path(
        "dotdot-keeps-case",
        "path-dot-segments",
        b"/Owa/x/../../EWS/Exchange.asmx",
        "ews",
        b"/EWS/Exchange.asmx",
    ),
    _path("encoded-dotdot-to-ews", "path-dot-segments", b"/owa/%2e%2e/ews/", "ews", b"/ews/"),
    _path("dotdot-mixed-encoding", "path-dot-segments", b"/owa/.%2e/mapi/", "mapi", b"/mapi/"),
    _path("dot-segment", "path-dot-segments", b"/owa/./x", "owa", b"/owa/x"),
    _path("trailing-dotdot", "path-dot-segments", b"/owa/x/..", "owa", b"/owa/"),
    _path("trailing-dot", "path-dot-segments", b"/owa/x/.", "owa", b"/owa/x/"),
    _path("double-slash-owa", "path-empty-segments", b"//owa/", "owa", b"/owa/"),
    _path("inner-double-slash-owa", "path-empty-segments", b"/owa//x", "owa", b"/owa/x"),
    _path(
        "many-slashes-ews",
        "path-empty-segments",
        b"///ews///Exchange.asmx",
        "ews",
        b"/ews/Exchange.asmx",
    ),
    # Segment parameters: routed on the segment before ";", forwarded as sent.
    *_to_ecp_param(),
    _path("param-owa", "path-params", b"/owa;x/y", "owa", b"/owa;x/y", "RFC 3986 §3.3"),
    _path(
        "param-ews",
        "path-params",
        b"/ews;jsessionid=1/Exchange.asmx",
        "ews",
        b"/ews;jsessionid=1/Exchange.asmx",
    ),
    # Percent-encoding: unreserved decoded, the rest kept with uppercase hex.
    _path("encoded-tilde", "path-percent", b"/owa/%7Euser", "owa", b"/owa/~user", "RFC 3986 §2.3"),
    _path(
        "encoded-tilde-lower",
        "path-percent",
        b"/owa/%7euser",
        "owa",
        b"/owa/~user",
        "RFC 3986 §2.3",
    ),
    _path(
        "encoded-letters-route", "path-percent", b"/%6Fwa/%41", "owa", b"/owa/A", "RFC 3986 §2.3"
    ),
    _path("encoded-dash", "path-percent", b"/owa/a%2Db", "owa", b"/owa/a-b", "RFC 3986 §2.3"),
    _path(
        "encoded-space-kept",
        "path-percent",
        b"/owa/a%20b",
        "owa",
        b"/owa/a%20b",
        "RFC 3986 §6.2.2.2",
    ),
    _path(
        "encoded-question-upper",
        "path-percent",
        b"/owa/a%3fb",
        "owa",
        b"/owa/a%3Fb",
        "RFC 3986 §6.2.2.1",
    ),
    _path(
        "encoded-question-kept",
        "path-percent",
        b"/owa/a%3Fb",
        "owa",
        b"/owa/a%3Fb",
        "RFC 3986 §6.2.2.1",
    ),
    _path(
        "encoded-obs-text-upper",
        "path-percent",
        b"/owa/%e4",
        "owa",
        b"/owa/%E4",
        "RFC 3986 §6.2.2.1",
    ),
    _path(
        "encoded-percent-kept",
        "path-percent",
        b"/owa/%2541",
        "owa",
        b"/owa/%2541",
        "no double decoding",
    ),
    # The query string never routes and is forwarded byte for byte.
    _path(
        "query-dotdot-ignored",
        "path-query",
        b"/owa/?x=/../ecp",
        "owa",
        b"/owa/?x=/../ecp",
        "ProxyShell",
    ),
    _path(
        "query-proxyshell-shape",
        "path-query",
        b"/owa/x?@mail.lab.local/mapi/nspi?&Email=a%2fb",
        "owa",
        b"/owa/x?@mail.lab.local/mapi/nspi?&Email=a%2fb",
        "ProxyShell",
    ),
    _path(
        "query-encoded-kept", "path-query", b"/ews/?a=%7e&b=%2e%2e", "ews", b"/ews/?a=%7e&b=%2e%2e"
    ),
    # Paths with no single meaning: 400.
    refused(
        "encoded-slash",
        "path-ambiguous",
        request(b"/ews%2fExchange.asmx"),
        source="IIS decodes %2f",
    ),
    refused("encoded-slash-lower-in-segment", "path-ambiguous", request(b"/owa/a%2Fb")),
    refused(
        "encoded-backslash-dotdot",
        "path-ambiguous",
        request(b"/owa%5c..%5cecp"),
        source="IIS: \\ is /",
    ),
    refused("encoded-backslash", "path-ambiguous", request(b"/owa/%5C")),
    refused("raw-backslash", "path-ambiguous", request(b"/owa\\..\\ecp"), source="IIS: \\ is /"),
    refused("raw-backslash-in-segment", "path-ambiguous", request(b"/ews/a\\b")),
    refused("dotdot-above-root", "path-above-root", request(b"/.."), source="RFC 3986 §5.2.4"),
    refused("dotdot-above-root-slash", "path-above-root", request(b"/../owa/")),
    refused("dotdot-twice-above-root", "path-above-root", request(b"/owa/../../x")),
    refused("encoded-dotdot-above-root", "path-above-root", request(b"/%2e%2e/owa/")),
    refused(
        "dotdot-above-root-default",
        "path-above-root",
        request(b"/owa/../../ecp/"),
        default_pool=True,
    ),
]
