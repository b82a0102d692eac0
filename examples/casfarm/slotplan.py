"""Which mode each of a server's listeners is in, from its faults and component states.

Pure: the runtime applies the answer to its ListenerSlots. A crash closes
every port and a black hole swallows every SYN. Otherwise the HTTPS and SMTP
ports stay open whatever the components say (Exchange answers there even in
maintenance: a reset health check, a 4.3.2 after MAIL FROM), but the IMAP4
and POP3 ports close while their service is stopped: Microsoft documents the
Microsoft Exchange IMAP4 and POP3 services as stopped while ImapProxy or
PopProxy (or ServerWideOffline) is Inactive, so a client's connect is refused
(docs/exchange.md §2.5).
"""

from __future__ import annotations

from casfarm.components import Component, ComponentStates
from casfarm.faults import FaultKind, FaultSet
from casfarm.listeners import SlotMode

MAIL_SERVICES = {
    "imap": Component.IMAP_PROXY,
    "imaps": Component.IMAP_PROXY,
    "pop": Component.POP_PROXY,
    "pops": Component.POP_PROXY,
}


def slot_mode(kind: str, faults: FaultSet, seen: ComponentStates) -> SlotMode:
    """The mode of the `kind` listener ("https", "imap", ...).

    Args:
        kind: the listener's kind.
        faults: the server's faults.
        seen: the component states the services see now (after the cache delay).
    """
    if faults.has(FaultKind.CRASH):
        return SlotMode.CLOSED
    if faults.has(FaultKind.BLACKHOLE):
        return SlotMode.BLACKHOLE
    service = MAIL_SERVICES.get(kind)
    if service is not None and not seen.accepts_sessions(service):
        return SlotMode.CLOSED
    return SlotMode.OPEN
