"""Whether a request may reach the admin routes at all (pure).

The admin API listens on loopback without a token, so anything that can make
this machine send HTTP to it could act on the farm. A browser can: a page on
any site may submit a form to http://127.0.0.1:9090, or rebind its own name
to 127.0.0.1 and then read and write as a same-origin page. Four rules close
that, each a function that returns the refusal, or None to let it pass:

* `misdirected`: only Host values that name this listener are served (421),
  which defeats DNS rebinding: the browser still sends the attacker's name.
  A listener bound to every address (0.0.0.0, ::) cannot know its own, so
  there any IP literal with its port is served: a literal has no name to
  rebind.
* `foreign_origin`: a browser sends `Origin` on cross-origin requests; any
  value but this API's own origin is refused (403).
* `unmarked`: a state change must carry `Content-Type: application/json` or
  `X-Caslb-Request: 1`. Neither is a "simple" request, so a browser must ask
  first with a CORS preflight, which caslb never answers (403).
* `unauthorized`: with a token, actions need `Authorization: Bearer <token>`,
  compared as bytes in constant time; anything else is 401, never an error.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass

from lb.admin.messages import JSON, Reply, Request
from lb.config import is_loopback

MARKER = "x-caslb-request"
"""The header (value `1`) that marks a state-changing request as not from a form."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""How a loopback listener is named in Host, beside its own bound address."""


@dataclass(frozen=True)
class ListenerHosts:
    """The Host values that name an admin listener: its names, and, when it is
    bound to every address, any IP literal with one of its `wildcard_ports`."""

    names: frozenset[str]
    wildcard_ports: frozenset[int] = frozenset()

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        host = host.lower()
        if host in self.names:
            return True
        address, colon, port = host.rpartition(":")
        if not colon or not port.isdigit() or int(port) not in self.wildcard_ports:
            return False
        try:
            ipaddress.ip_address(address[1:-1] if address.startswith("[") else address)
        except ValueError:
            return False
        return ":" not in address or address.startswith("[")


def listener_hosts(
    addresses: Iterable[tuple[str, int]], names: Iterable[str] = ()
) -> ListenerHosts:
    """The Host values that name an admin listener bound to `addresses`.

    Args:
        addresses: the bound (host, port) of each listening socket.
        names: further names the listener is reached by (`[admin] names`); each
            is accepted as given and with each bound port.
    """
    hosts: set[str] = set()
    ports = set()
    wildcard_ports = set()
    for host, port in addresses:
        ports.add(port)
        if host in ("0.0.0.0", "::"):
            wildcard_ports.add(port)
        hosts.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        if is_loopback(host):
            hosts.update(f"{name}:{port}" for name in LOOPBACK_NAMES)
    for name in names:
        hosts.add(name)
        hosts.update(f"{name}:{port}" for port in ports)
    return ListenerHosts(frozenset(h.lower() for h in hosts), frozenset(wildcard_ports))


def misdirected(request: Request, hosts: ListenerHosts) -> Reply | None:
    """421 unless the request's Host names this listener."""
    host = request.headers.get("host", "")
    if host in hosts:
        return None
    return Reply.error(421, f"host {host!r} is not this admin API")


def foreign_origin(request: Request) -> Reply | None:
    """403 when an `Origin` is sent and is not `http://<Host>`."""
    origin = request.headers.get("origin")
    if origin is None or origin.lower() == f"http://{request.headers.get('host', '')}".lower():
        return None
    return Reply.error(403, f"origin {origin!r} may not use this admin API")


def unmarked(request: Request) -> Reply | None:
    """403 for a state change without the JSON content type or the marker header."""
    if request.headers.get(MARKER, "").strip() == "1":
        return None
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != JSON:
        return Reply.error(
            403, "a state change needs Content-Type: application/json or X-Caslb-Request: 1"
        )
    if request.body.strip() and not _empty_object(request.body):
        return Reply.error(400, "an action takes no parameters in its body: send {} or nothing")
    return None


def _empty_object(body: bytes) -> bool:
    try:
        parsed: object = json.loads(body)
    except ValueError:  # UnicodeDecodeError is one
        return False
    return parsed == {}


def unauthorized(request: Request, token: str | None) -> Reply | None:
    """401 unless `token` is unset or the request bears it."""
    if not token:
        return None
    sent = request.headers.get("authorization", "").encode("latin-1")
    scheme, _, given = sent.partition(b" ")
    if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode()):
        return None
    return Reply.error(401, "missing or wrong bearer token",
                       ("www-authenticate", 'Bearer realm="caslb"'))
