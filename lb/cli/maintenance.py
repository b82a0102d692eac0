"""`caslb maintenance start|end SERVER`: Microsoft's maintenance sequence, balancer side.

`start` drains SERVER in every pool; with `--wait` it polls `GET /status` and shows
its remaining connections per pool until none is left, or until `--grace` expires and
`POST .../maint` resets the rest: then it is safe to patch. `end` re-enables SERVER
everywhere; the pools bring it back with slow start. Like lb.cli.admin, this is only an
HTTP client of the admin API; `--admin` repeated acts on every node of an HA pair, and
`--wait` counts the connections left on all of them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from lb.cli._app import app
from lb.cli.admin import (
    AdminApiError,
    AdminUrls,
    Server,
    Token,
    act,
    call_admin,
    fail,
    nodes,
)

maintenance_app = typer.Typer(
    help="Take a server out for patching and bring it back (drain, wait, enable).",
    no_args_is_help=True,
)
app.add_typer(maintenance_app, name="maintenance")

BAR_WIDTH = 20


def remaining(document: Mapping[str, Any], server: str) -> dict[str, int]:
    """Pool → SERVER's open connections there, for every pool SERVER is in."""
    return {
        pool_name: int(member["active"])
        for pool_name, pool in document.get("pools", {}).items()
        for member in pool.get("servers", [])
        if member["name"] == server
    }


def progress_line(server: str, first: int, counts: Mapping[str, int]) -> str:
    """One line: a bar of the connections gone since the drain, then the count per pool."""
    left = sum(counts.values())
    done = 1.0 if first == 0 else (first - left) / first
    filled = round(done * BAR_WIDTH)
    per_pool = "  ".join(f"{pool} {count}" for pool, count in counts.items())
    return (f"{server} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{left} of {first} left  {per_pool}")


def verdict(server: str, reset: Mapping[str, int], grace: float | None) -> str:
    """What the operator may do now, and what the grace cost."""
    if not reset:
        return f"{server}: no connection left: safe to patch"
    listed = ", ".join(f"{pool} {count}" for pool, count in reset.items())
    total = sum(reset.values())
    return (f"{server}: grace of {grace:g}s expired; reset {total} connection(s): {listed}; "
            "safe to patch")


class Display:
    """Redraws one line on a terminal; prints a line per change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.last = ""

    def show(self, line: str) -> None:
        if line == self.last:
            return
        self.last = line
        if self.tty:
            sys.stdout.write(f"\r{line}\x1b[K")
        else:
            sys.stdout.write(f"{line}\n")
        sys.stdout.flush()

    def close(self) -> None:
        if self.tty and self.last:
            sys.stdout.write("\n")


def _counts(admins: Sequence[str], server: str) -> dict[str, int]:
    """Pool → SERVER's open connections there, summed over every node."""
    counts: dict[str, int] = {}
    for admin in admins:
        try:
            document = call_admin(admin, "GET", "/status")
        except AdminApiError as exc:
            raise fail(str(exc)) from None
        for pool, count in remaining(document, server).items():
            counts[pool] = counts.get(pool, 0) + count
    return counts


def wait_until_safe(admins: Sequence[str], token: str | None, server: str,
                    grace: float | None, interval: float) -> str:
    """Poll until SERVER carries nothing (or reset it at the grace); the verdict line."""
    counts = _counts(admins, server)
    first = sum(counts.values())
    deadline = None if grace is None else time.monotonic() + grace
    display = Display()
    try:
        while True:
            display.show(progress_line(server, first, counts))
            if not any(counts.values()):
                return verdict(server, {}, grace)
            if deadline is not None and time.monotonic() >= deadline:
                left = {pool: count for pool, count in counts.items() if count}
                act("maint", server, None, None, admins, token, quiet=True)
                return verdict(server, left, grace)
            time.sleep(interval)
            counts = _counts(admins, server)
    finally:
        display.close()


@maintenance_app.command("start")
def start(
    server: Server,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Show the remaining connections until it is safe to patch.")] = False,
    grace: Annotated[float | None, typer.Option(
        "--grace", min=0.0, metavar="SECONDS",
        help="With --wait: reset what is left after this long.")] = None,
    interval: Annotated[float, typer.Option(
        "--interval", min=0.01, metavar="SECONDS", help="How often to poll the balancer.")] = 0.5,
    admin: AdminUrls = None,
    token: Token = None,
) -> None:
    """Drain SERVER in every pool; with --wait, say when it is safe to patch.

    Example: caslb maintenance start cas1 --wait --grace 600
    """
    if grace is not None and not wait:
        raise typer.BadParameter("--grace applies with --wait", param_hint="--grace")
    act("drain", server, None, None, nodes(admin), token)
    if wait:
        typer.echo(wait_until_safe(nodes(admin), token, server, grace, interval))


@maintenance_app.command("end")
def end(server: Server, admin: AdminUrls = None, token: Token = None) -> None:
    """Put SERVER back in every pool; it returns with slow start.

    Example: caslb maintenance end cas1
    """
    act("enable", server, None, None, nodes(admin), token)
