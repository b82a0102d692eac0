"""`caslb run CONFIG`: run the balancer until told to stop.

SIGHUP re-reads the config and applies it without dropping a connection:
members keep their health, drain and slow-start state, and a frontend whose
settings changed is replaced on the same listening sockets while the old one
finishes its connections. A config that does not validate is logged and
ignored; the old one stays. SIGTERM
or Ctrl-C stops gracefully: listeners close, open connections get the
configured `grace`, then the process exits.

With `--workers N` (N >= 2) this process becomes a supervisor: it runs the
probes and the admin API and starts N worker processes that share the
frontend addresses through SO_REUSEPORT (lb/workers/). `--worker` is how
the supervisor starts each of them; it is not meant to be typed.
"""

from __future__ import annotations

import enum
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Annotated

import trio
import typer

from lb import activation, logs, sdnotify, workers
from lb.app import Balancer, serve
from lb.boundary import guarded
from lb.cli._app import app
from lb.cli._config import load_or_exit
from lb.cli._startup import run_or_exit
from lb.cli.check import exit_on_file_errors, file_errors
from lb.config import Config, ConfigError, load
from lb.config.model import ADMIN_LISTENER

log = logging.getLogger("caslb.run")

# The cyclic collector's first threshold while serving (CPython's default: 700).
# A gen0 collection walks every young object still alive, and under load those
# are the requests in flight: at 256 kept-alive connections some 15,000 objects
# (each request's coroutines, scopes, events), a walk of 1.5-3 ms that frees
# nothing. The threshold counts allocations less deallocations, so at 700 the
# walk came every ~120 requests: 6-7 % of the CPU. At 10,000 it comes 30 times
# less often and costs 2-3 times more, 0.5 % in all (docs/benchmarks.md, "The
# cyclic collector at 64 and 256 connections"). Cyclic garbage waits longer:
# up to 10,000 container objects more, a few MiB.
GEN0_THRESHOLD = 10_000


async def apply_reload(balancer: Balancer, path: Path) -> None:
    """Re-read `path` and apply it; a bad config, or a certificate, key or CA file that
    does not load (a renewal gone wrong), leaves the running one in force."""
    try:
        config = load(path)
        errors = file_errors(config)
    except ConfigError as exc:
        errors = list(exc.errors)
    for key, problem in errors:
        log.error("reload refused: %s: %s", key, problem)
    if errors:
        return
    left: list[str] = []

    async def reload() -> None:
        try:
            left.extend(await balancer.reload(config))
        except (ValueError, OSError) as exc:
            log.error("reload failed part way: %s", exc)
            return
        log.info("reloaded %s", path)
        if left:
            log.warning("changes that need a restart to apply: %s", ", ".join(left))

    # a bug in applying the new config must not take down what is serving
    await guarded(log, f"reload of {path}", balancer.metrics.internal_error, reload)


def reload_myself() -> None:
    """The admin API's `POST /reload`: SIGHUP to this process, so it reloads as
    `systemctl reload` makes it (systemd told, workers forwarded it)."""
    os.kill(os.getpid(), signal.SIGHUP)


async def run_until_signalled(
    config: Config,
    path: Path | None,
    passed: Mapping[str, list[socket.socket]] | None = None,
    *,
    task_status: trio.TaskStatus[Balancer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `config`, on the `passed` sockets (listener name → sockets, lb/activation.py)
    where given; SIGHUP reloads from `path`, SIGTERM/SIGINT stop gracefully. systemd
    hears of each step (lb/sdnotify.py)."""
    given = {name: [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in socks]
             for name, socks in (passed or {}).items()}
    admin = given.pop(ADMIN_LISTENER, None)
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            balancer: Balancer = await nursery.start(
                lambda task_status: serve(config, listeners=given, admin_listeners=admin,
                                          on_reload=None if path is None else reload_myself,
                                          task_status=task_status)
            )
            task_status.started(balancer)
            sdnotify.ready()
            async for signum in signals:
                if signum == signal.SIGHUP and path is not None:
                    sdnotify.reloading()
                    await apply_reload(balancer, path)
                    sdnotify.ready()
                elif signum != signal.SIGHUP:
                    if balancer.stopping:
                        log.warning("second stop signal: exiting now")
                        nursery.cancel_scope.cancel()
                        return
                    log.info("stop signal: draining for up to %gs", config.grace)
                    sdnotify.stopping()
                    balancer.stop()
                    nursery.start_soon(_exit_when_stopped, balancer, nursery.cancel_scope)


async def _exit_when_stopped(balancer: Balancer, scope: trio.CancelScope) -> None:
    await balancer.stopped.wait()
    scope.cancel()


class LogLevel(enum.Enum):
    """The levels `--log-level` accepts."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@app.command()
def run(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="the TOML config file")],
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False, help="how much to log")]
    = LogLevel.INFO,
    access_log: Annotated[bool, typer.Option(
        help="log one line per HTTP request (also [logging] access_log)")] = True,
    worker_count: Annotated[int, typer.Option(
        "--workers", min=1, help="processes serving traffic (2 uses 2 cores; ports must be fixed)"
    )] = 1,
    worker: Annotated[bool, typer.Option("--worker", hidden=True)] = False,
) -> None:
    """Run the balancer: SIGHUP reloads, SIGTERM or Ctrl-C drains and exits.

    Example: caslb run config/lab.toml --workers 2
    """
    loaded = load_or_exit(config)
    exit_on_file_errors(loaded, config)
    logs.setup(log_level.value, access_log=access_log and loaded.logging.access_log,
               form=loaded.logging.format)
    passed = adopt_or_exit(loaded, workers=worker or worker_count > 1)
    if worker:
        raise typer.Exit(start(workers.run_worker, loaded, config, apply_reload))
    if worker_count > 1:
        argv = workers.worker_argv(config, log_level.value, access_log)
        raise typer.Exit(start(
            partial(workers.run_supervisor, argv=argv, on_reload=reload_myself), loaded, config,
            worker_count, apply_reload
        ))
    raise typer.Exit(start(run_until_signalled, loaded, config, passed))


def adopt_or_exit(config: Config, *, workers: bool) -> dict[str, list[socket.socket]]:
    """The sockets systemd passed (lb/activation.py), by listener; a socket for none of
    `config`'s listeners, or passed to `--workers`, ends the command with status 2."""
    listeners = {fe.name: (fe.host, fe.port) for fe in config.frontends}
    listeners[ADMIN_LISTENER] = (config.admin.host, config.admin.port)
    try:
        passed = activation.assign(activation.passed_sockets(), listeners)
        if passed and workers:
            raise ValueError("socket activation: the passed sockets serve one process; "
                             "run without --workers")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if passed:
        log.info("listening on the sockets systemd passed for %s", ", ".join(sorted(passed)))
    return passed


def start(main: Callable[..., Awaitable[object]], *args: object) -> int:
    """Run `main` under trio; a start-up failure is one line on stderr (lb/cli/_startup.py).

    Returns:
        The exit status: 0, 1 when an address cannot be bound or a file read, 2
        for a setting a frontend refused (e.g. a certificate that does not load).
    """
    # What is alive now (modules, the loaded config) lives as long as the process.
    # Frozen, the cyclic collector stops walking it on every full collection:
    # py-spy put gc at 7.5 % of an L4 new-connection load before, 2.4 % after.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, *gc.get_threshold()[1:])
    try:
        run_or_exit(main, *args)
    except typer.Exit as exc:
        return exc.exit_code
    return 0
