"""systemd's readiness protocol (sd_notify(3)), for a `Type=notify` unit.

The service manager names a unix datagram socket in $NOTIFY_SOCKET (a path, or
an abstract name written with a leading `@`); the service sends it one
datagram of newline-separated `KEY=VALUE` lines per change: `READY=1` once it
serves, `RELOADING=1` with the time on the monotonic clock (`MONOTONIC_USEC`,
which systemd 253 and later require to match the reload to its request) and
`READY=1` again once the reload is done, `STOPPING=1` when it begins to stop.

Without $NOTIFY_SOCKET (not run by systemd) every call does nothing. A socket
that cannot be reached is logged once per message and never stops the
balancer: readiness is a courtesy to the service manager, not a dependency.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("caslb.sdnotify")


def _address(name: str) -> str:
    # An abstract socket's name begins with a NUL byte, which systemd writes as "@".
    return "\0" + name[1:] if name.startswith("@") else name


def notify(*fields: str) -> bool:
    """Send `fields` (`KEY=VALUE` each) to $NOTIFY_SOCKET; False when there is none or
    it cannot be reached."""
    name = os.environ.get("NOTIFY_SOCKET")
    if not name:
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, _address(name))
    except OSError as exc:
        log.warning("cannot tell the service manager %s at %s: %s", fields[0], name, exc)
        return False
    return True


def ready() -> bool:
    """Every listener is bound and serving (also: a reload is over)."""
    return notify("READY=1")


def reloading() -> bool:
    """A reload begins; `ready()` follows when it is over."""
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")


def stopping() -> bool:
    """A graceful stop begins: listeners close, connections drain."""
    return notify("STOPPING=1")
