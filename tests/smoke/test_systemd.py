"""`caslb run` under systemd, with the test as the service manager.

Readiness: the test binds the notify socket (an abstract name, `@...`) and names
it in NOTIFY_SOCKET; caslb must say READY=1 only once its ports accept,
RELOADING=1 (with the monotonic time) and READY=1 around SIGHUP, STOPPING=1 on
SIGTERM. Socket activation: the test binds and listens itself, and passes the
sockets as descriptors 3 and 4 with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES,
through a wrapper that sets LISTEN_PID to its own pid and execs caslb, as
systemd does; caslb must serve on them without binding anything itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.smoke.test_cli_run import CASLB, free_port, wait_status

# systemd puts the sockets at 3, 4, ...; the wrapper moves them there, then execs caslb.
WRAPPER = """
import fcntl, os, sys
fds = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in sys.argv[1].split(",")]
for index, fd in enumerate(fds):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def config_text(frontend: int, admin: int, backend: int) -> str:
    return f"""
[admin]
bind = "127.0.0.1:{admin}"

[frontends.echo]
bind = "127.0.0.1:{frontend}"
mode = "tcp"
pool = "echo"

[pools.echo]
servers = [{{ name = "one", address = "127.0.0.1:{backend}" }}]
check = false
"""


async def echo(stream: trio.SocketStream) -> None:
    async for data in stream:
        await stream.send_all(data)


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A loopback echo server, the pool's one server; yields its port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        yield int(listeners[0].socket.getsockname()[1])
        nursery.cancel_scope.cancel()


async def echoes(port: int) -> bool:
    """Whether a connection to the frontend reaches the echo server and back."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(b"ping")
        return await stream.receive_some(4) == b"ping"
    finally:
        await stream.aclose()


async def accepts(port: int) -> bool:
    try:
        await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
    except OSError:
        return False
    return True


async def start(argv: Sequence[str], env: dict[str, str], **kwargs: object) -> trio.Process:
    return await trio.lowlevel.open_process(
        list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        **kwargs)  # type: ignore[arg-type]


async def stop(process: trio.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        return await process.wait()


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "workers"])
async def test_caslb_tells_the_service_manager_ready_reloading_and_stopping(
    tmp_path: Path, workers: list[str],
) -> None:
    name = f"caslb-test-{os.getpid()}-{time.monotonic_ns()}"
    manager = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await manager.bind("\0" + name)

    async def message() -> str:
        with trio.fail_after(30):
            return (await manager.recv(4096)).decode()

    frontend, admin = free_port(), free_port()
    async with echo_server() as backend:
        config = tmp_path / "caslb.toml"
        config.write_text(config_text(frontend, admin, backend))
        env = dict(os.environ, NOTIFY_SOCKET="@" + name)
        process = await start([*CASLB, "run", str(config), *workers], env)
        try:
            assert await message() == "READY=1"
            # Ready means serving: both ports accept the moment it arrives.
            assert await echoes(frontend) and await accepts(admin)

            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            process.send_signal(signal.SIGHUP)
            reloading, stamp = (await message()).split("\n")
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert reloading == "RELOADING=1" and stamp.startswith("MONOTONIC_USEC=")
            assert before <= int(stamp.removeprefix("MONOTONIC_USEC=")) <= after
            assert await message() == "READY=1"
            assert await echoes(frontend)

            process.send_signal(signal.SIGTERM)
            assert await message() == "STOPPING=1"
            # No second SIGTERM: once caslb's handler is gone, one would kill it (-15).
            with trio.fail_after(15):
                assert await process.wait() == 0
        finally:
            await stop(process)
            manager.close()


def listening(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


async def test_caslb_serves_on_the_sockets_systemd_passed(tmp_path: Path) -> None:
    # The frontend's socket matches by its address; the admin API's by its name,
    # being bound elsewhere than the config's admin address.
    frontend_socket, admin_socket = listening(), listening()
    frontend = frontend_socket.getsockname()[1]
    admin_passed, admin_configured = admin_socket.getsockname()[1], free_port()
    fds = [frontend_socket.fileno(), admin_socket.fileno()]
    async with echo_server() as backend:
        config = tmp_path / "caslb.toml"
        config.write_text(config_text(frontend, admin_configured, backend))
        try:
            process = await start(
                [sys.executable, "-c", WRAPPER, ",".join(map(str, fds)), *CASLB[1:], "run",
                 str(config)], dict(os.environ, LISTEN_FDNAMES="echo:admin"), pass_fds=fds)
        finally:
            # Only caslb holds them now: what accepts is caslb's.
            frontend_socket.close()
            admin_socket.close()
        try:
            status = await wait_status(f"http://127.0.0.1:{admin_passed}", process)
            assert [m["name"] for m in status["pools"]["echo"]["servers"]] == ["one"]
            assert await echoes(frontend)
            # caslb bound nothing of its own: the configured admin address stays free.
            assert not await accepts(admin_configured)
        finally:
            assert await stop(process) == 0


async def test_a_passed_socket_for_no_listener_stops_caslb_at_start(tmp_path: Path) -> None:
    config = tmp_path / "caslb.toml"
    config.write_text(config_text(free_port(), free_port(), free_port()))
    with listening() as stray:
        result = await trio.run_process(
            [sys.executable, "-c", WRAPPER, str(stray.fileno()), *CASLB[1:], "run",
             str(config)], env=dict(os.environ, LISTEN_FDNAMES="stray"),
            pass_fds=[stray.fileno()], check=False, capture_stderr=True)
    assert result.returncode == 2
    assert b"descriptor 3 (stray, bound to 127.0.0.1:" in result.stderr
    assert b"matches no frontend's bind nor name" in result.stderr


async def test_passed_sockets_with_workers_stop_caslb_at_start(tmp_path: Path) -> None:
    with listening() as frontend_socket:
        config = tmp_path / "caslb.toml"
        config.write_text(config_text(frontend_socket.getsockname()[1], free_port(),
                                      free_port()))
        result = await trio.run_process(
            [sys.executable, "-c", WRAPPER, str(frontend_socket.fileno()), *CASLB[1:], "run",
             str(config), "--workers", "2"], pass_fds=[frontend_socket.fileno()],
            check=False, capture_stderr=True)
    assert result.returncode == 2
    assert b"the passed sockets serve one process; run without --workers" in result.stderr
