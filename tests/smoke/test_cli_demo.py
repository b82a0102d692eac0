"""`caslb demo` as a newcomer runs it: the banner, a request through it, Ctrl-C.

The farm runs in a process of its own (lb/cli/demo.py says why); these tests
find who listens on a farm address through /proc, so they check the process
model itself and not only what the banner claims.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from lb.cli.demo import LAB
from tests.authclients import ntlm_session, post
from tests.farmclient import https_client

CASLB = [sys.executable, "-c", "from lb.cli import main; main()"]
FARM_HTTPS = ("127.0.0.11", 8443)  # cas1, as lab.toml names it
# A cold start of two interpreters, three certificates and a first probe round,
# on a machine busy with other work.
START_SECONDS = 60


def listener_inode(host: str, port: int) -> int | None:
    """The socket inode listening on host:port, from /proc/net/tcp, or None."""
    wanted = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[9])
    return None


def listener_pid(host: str, port: int) -> int | None:
    """The pid of a process holding the socket that listens on host:port, or None."""
    inode = listener_inode(host, port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # gone, or not ours to look at
            continue
    return None


async def start_demo(*args: str, caslb: Sequence[str] = CASLB,
                     cwd: Path | None = None) -> tuple[trio.Process, str]:
    """A running demo (of `caslb`, this checkout's by default) and its banner."""
    process = await trio.lowlevel.open_process(
        [*caslb, "demo", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd
    )
    assert process.stdout is not None
    banner = b""
    with trio.fail_after(START_SECONDS):
        while b"Ctrl-C stops everything." not in banner:
            chunk = await process.stdout.receive_some(4096)
            assert chunk, f"demo ended early: {banner.decode(errors='replace')}"
            banner += chunk
    return process, banner.decode()


async def stop_demo(process: trio.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            await pipe.aclose()


def farm_pid(banner: str) -> int:
    found = re.search(r"balancer pid (\d+), farm pid (\d+)", banner)
    assert found, banner
    return int(found.group(2))


async def wait_until_nobody_listens(host: str, port: int, seconds: float) -> None:
    with trio.fail_after(seconds):
        while listener_inode(host, port) is not None:
            await trio.sleep(0.1)


async def get_ews(port: int, name: str) -> str | None:
    """Log on to EWS with NTLM through one design, as the lab user; who answered."""
    session = ntlm_session(LAB.parent / "lab-certs/ca.pem", name)
    try:
        seen = await post(session, f"https://127.0.0.1:{port}/EWS/Exchange.asmx")
    finally:
        session.close()
    assert (seen.status, seen.challenges) == (200, [401, 401])
    return seen.server


# One of the two starts runs the three designs side by side (no extra start-up to pay).
@pytest.mark.parametrize(("stop", "mode"), [(signal.SIGINT, "l7"), (signal.SIGTERM, "compare")],
                         ids=["ctrl-c", "sigterm-compare"])
async def test_demo_fronts_a_farm_in_its_own_process_and_stops_both(stop: int, mode: str) -> None:
    process, text = await start_demo("--mode", mode)
    try:
        assert "https://mail.lab.local:9443/owa/" in text
        assert "caslb farm set cas1 EwsProxy Inactive" in text
        farm = farm_pid(text)
        assert farm != process.pid
        assert listener_pid(*FARM_HTTPS) == farm
        assert listener_pid("127.0.0.1", 9443) == process.pid
        client = await https_client("127.0.0.1", 9443, ca_path=LAB.parent / "lab-certs/ca.pem",
                                    server_hostname="mail.lab.local")
        try:
            response = await client.request("GET", "/owa/")
        finally:
            await client.aclose()
        # The demo's farm authenticates: OWA sends a browser to its logon form.
        assert response.status == 302 and response.header("x-feserver") in {
            "CAS1", "CAS2", "CAS3"}
        assert "/owa/auth/logon.aspx?url=" in (response.header("location") or "")
        assert "lab user         LAB\\alice / Passw0rd" in text
        assert await get_ews(9443, "mail.lab.local") in {"CAS1", "CAS2", "CAS3"}
        if mode == "compare":
            assert "L4 (A)      127.0.0.1:9444" in text and "L4-SNI (D)  127.0.0.1:9445" in text
            assert listener_pid("127.0.0.1", 9444) == listener_pid("127.0.0.1", 9445) == (
                process.pid)
            assert await get_ews(9444, "mail.lab.local") in {"CAS1", "CAS2", "CAS3"}
            assert await get_ews(9445, "ews.mail.lab.local") in {"CAS1", "CAS2", "CAS3"}
        process.send_signal(stop)
        with trio.fail_after(40):
            assert await process.wait() == 0
        # The demo reaped its child: nothing of the farm is left listening.
        assert listener_inode(*FARM_HTTPS) is None
    finally:
        await stop_demo(process)


async def test_a_killed_demo_takes_its_farm_with_it() -> None:
    process, text = await start_demo()
    try:
        farm = farm_pid(text)
        assert listener_pid(*FARM_HTTPS) == farm
        process.kill()  # no finally runs in the demo: the farm must notice by itself
        await process.wait()
        await wait_until_nobody_listens(*FARM_HTTPS, seconds=30)
    finally:
        await stop_demo(process)
