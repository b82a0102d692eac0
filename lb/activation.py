"""systemd socket activation (sd_listen_fds(3)): listening sockets handed over at start.

A socket unit binds the addresses (443 needs no privilege from caslb then),
and starts the service with the sockets as file descriptors 3, 4, ... and
three variables: LISTEN_FDS (how many), LISTEN_PID (the process they are
for: a child that inherits the environment must not take them) and
LISTEN_FDNAMES (colon-separated names, from the socket unit's
FileDescriptorName=).

Each passed socket goes to the listener bound to its address (a frontend by
its `bind`, or the admin API); one whose address no listener has goes to the
listener its name names (a frontend's name, or "admin"). A socket for no
listener is a configuration error: caslb would otherwise leave a port the
service manager owns unanswered. Listeners no socket was passed for are bound
by caslb as usual.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

LISTEN_FDS_START = 3
"""The first descriptor passed (SD_LISTEN_FDS_START)."""

Address = tuple[str, int]


@dataclass(frozen=True)
class PassedSocket:
    """One socket the service manager passed.

    Attributes:
        fd: its file descriptor.
        name: its LISTEN_FDNAMES entry ("" when none is given).
        address: the (host, port) it is bound to.
        sock: the socket itself.
    """

    fd: int
    name: str
    address: Address
    sock: socket.socket


def passed_sockets(environ: MutableMapping[str, str] = os.environ) -> list[PassedSocket]:
    """The sockets passed to this process; the variables leave `environ` either way, so
    no child process (a worker, the demo's farm) takes them for its own.

    Raises:
        ValueError: LISTEN_FDS is not a count, or a descriptor is not a listening
            TCP socket.
    """
    pid = environ.pop("LISTEN_PID", None)
    count = environ.pop("LISTEN_FDS", None)
    names = environ.pop("LISTEN_FDNAMES", "").split(":")
    if count is None or pid != str(os.getpid()):
        return []
    if not count.isdigit():
        raise ValueError(f"socket activation: LISTEN_FDS={count!r} is not a count")
    passed = []
    for index in range(int(count)):
        fd = LISTEN_FDS_START + index
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ValueError(f"socket activation: descriptor {fd} is not a socket: {exc}") from None
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"socket activation: descriptor {fd} is not a listening TCP socket")
        sock.set_inheritable(False)
        host, port = sock.getsockname()[:2]
        passed.append(PassedSocket(fd, names[index] if index < len(names) else "",
                                   (str(host), int(port)), sock))
    return passed


def assign(passed: Sequence[PassedSocket],
           listeners: Mapping[str, Address]) -> dict[str, list[socket.socket]]:
    """Listener name → the passed sockets it serves on, by address first, then by name.

    Args:
        passed: the sockets, as `passed_sockets` returns them.
        listeners: each listener's name ("admin" for the admin API) and bind address.

    Raises:
        ValueError: a socket that no listener's address or name matches.
    """
    by_address = {address: name for name, address in listeners.items()}
    assigned: dict[str, list[socket.socket]] = {}
    for one in passed:
        name = by_address.get(one.address) or (one.name if one.name in listeners else None)
        if name is None:
            host, port = one.address
            raise ValueError(
                f"socket activation: descriptor {one.fd} ({one.name or 'unnamed'}, "
                f"bound to {host}:{port}) matches no frontend's bind nor name, nor the admin API")
        assigned.setdefault(name, []).append(one.sock)
    return assigned
