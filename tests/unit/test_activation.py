"""Socket activation's assignment: each passed socket to a listener, by address, then by name."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from lb.activation import PassedSocket, assign, passed_sockets

LISTENERS = {"https": ("192.0.2.10", 443), "imaps": ("192.0.2.10", 993),
             "admin": ("127.0.0.1", 9090)}


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    with socket.socket() as one:
        yield one


def passed(sock: socket.socket, name: str, host: str, port: int, fd: int = 3) -> PassedSocket:
    return PassedSocket(fd, name, (host, port), sock)


def test_the_address_decides_before_the_name(sock: socket.socket) -> None:
    # systemd gives every socket of one unit the same name: the addresses tell them apart.
    assert assign([passed(sock, "caslb.socket", "192.0.2.10", 993)], LISTENERS) == {
        "imaps": [sock]}
    assert assign([passed(sock, "https", "192.0.2.10", 993)], LISTENERS) == {"imaps": [sock]}


def test_a_name_places_a_socket_bound_elsewhere(sock: socket.socket) -> None:
    assert assign([passed(sock, "admin", "127.0.0.1", 19090)], LISTENERS) == {"admin": [sock]}


def test_a_socket_for_no_listener_is_an_error(sock: socket.socket) -> None:
    with pytest.raises(ValueError, match=r"descriptor 4 \(caslb.socket, bound to "
                                         r"192.0.2.10:995\) matches no frontend"):
        assign([passed(sock, "caslb.socket", "192.0.2.10", 995, fd=4)], LISTENERS)


def test_sockets_for_another_process_are_left_and_the_variables_cleared() -> None:
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x",
               "PATH": "/bin"}
    assert passed_sockets(environ) == []
    assert environ == {"PATH": "/bin"}


def test_a_count_that_is_not_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="LISTEN_FDS='two' is not a count"):
        passed_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "two"})
