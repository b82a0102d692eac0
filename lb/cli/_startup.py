"""Starting a command: a start-up failure is one line and an exit status, never a traceback.

trio wraps whatever a task raised in nested exception groups, so an address in
use arrives as "Exceptions from Trio nursery (1 sub-exception)". Every long-running
command (`run`, `demo`, `farm`, `probe`) runs its trio main through `run_or_exit`,
which finds the real errors inside the groups and prints each once:
configuration problems (ValueError: a setting or file the balancer refused)
exit 2, other start-up failures (OSError: an address, a file) exit 1. Anything
else is a bug and keeps its traceback.

`taken_addresses` lets a command refuse to start, before it touches anything,
when the addresses it needs are held by another process.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import trio
import typer

T = TypeVar("T")


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def run_or_exit(main: Callable[..., Awaitable[T]], *args: object) -> T:
    """`trio.run(main, *args)`; an OSError or ValueError is printed and ends the command.

    Raises:
        typer.Exit: 2 for a configuration problem, 1 for another start-up failure,
            or the status a command inside asked for.
        KeyboardInterrupt: as trio raised it.
    """
    try:
        return trio.run(main, *args)
    except (OSError, ValueError, typer.Exit, BaseExceptionGroup) as exc:
        leaves = _leaves(exc)
        for leaf in leaves:
            if isinstance(leaf, KeyboardInterrupt | typer.Exit):
                raise leaf from None
        if not all(isinstance(leaf, OSError | ValueError) for leaf in leaves):
            raise
        for line in dict.fromkeys(f"error: {leaf}" for leaf in leaves):
            typer.echo(line, err=True)
        raise typer.Exit(2 if any(isinstance(leaf, ValueError) for leaf in leaves)
                         else 1) from None


def bind_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on now ("address already in use"), else None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (exc.strerror or str(exc)).lower()
    return None


def taken_addresses(wanted: Iterable[tuple[str, int, str]]) -> list[str]:
    """"HOST:PORT (what): why" for each wanted (host, port, what) that cannot be bound."""
    return [
        f"{host}:{port} ({what}): {problem}"
        for host, port, what in wanted
        if port and (problem := bind_problem(host, port)) is not None
    ]
