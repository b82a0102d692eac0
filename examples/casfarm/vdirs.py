"""The virtual directories a CAS front end serves, as farm data.

Restated from the Exchange side of the wire (docs/exchange.md §2.3) so that casfarm
shares no code with the balancer: a vdir, the component that gates its
healthcheck.htm, and the short name used in counters.
"""

from __future__ import annotations

from dataclasses import dataclass

from casfarm.components import Component


@dataclass(frozen=True)
class Vdir:
    """One IIS virtual directory of the Default Web Site.

    Attributes:
        name: short lowercase name used in counters and fault parameters.
        path: the vdir path as Exchange spells it, e.g. "/EWS".
        component: the component whose state gates its health check.
    """

    name: str
    path: str
    component: Component


VDIRS: tuple[Vdir, ...] = (
    Vdir("owa", "/owa", Component.OWA_PROXY),
    Vdir("ecp", "/ecp", Component.ECP_PROXY),
    Vdir("ews", "/EWS", Component.EWS_PROXY),
    Vdir("autodiscover", "/Autodiscover", Component.AUTODISCOVER_PROXY),
    Vdir("eas", "/Microsoft-Server-ActiveSync", Component.ACTIVESYNC_PROXY),
    Vdir("oab", "/OAB", Component.OAB_PROXY),
    Vdir("rpc", "/rpc", Component.RPC_PROXY),
    Vdir("mapi", "/mapi", Component.MAPI_PROXY),
    Vdir("powershell", "/PowerShell", Component.RPS_PROXY),
)

VDIR_NAMES: tuple[str, ...] = tuple(v.name for v in VDIRS)


def vdir_for_path(target: str) -> Vdir | None:
    """The vdir whose path prefixes `target` (case-insensitive, query ignored)."""
    bare = target.split("?", 1)[0].lower()
    for vdir in VDIRS:
        prefix = vdir.path.lower()
        if bare == prefix or bare.startswith(prefix + "/"):
            return vdir
    return None


def vdir_named(name: str) -> Vdir:
    """Look a vdir up by short name or path, case-insensitively.

    Raises:
        ValueError: naming the bad value and the known names.
    """
    wanted = name.lower().strip("/")
    for vdir in VDIRS:
        if wanted in (vdir.name, vdir.path.lower().strip("/")):
            return vdir
    raise ValueError(f"unknown vdir {name!r} (known: {', '.join(VDIR_NAMES)})")


def is_healthcheck(method: str, target: str) -> bool:
    """True for the requests Exchange's proxy module answers as a health check.

    Only GET qualifies, and only a path ending in healthcheck.htm; HEAD and the
    rest fall through to normal handling.
    """
    bare = target.split("?", 1)[0].lower()
    return method == "GET" and bare.endswith("/healthcheck.htm")
