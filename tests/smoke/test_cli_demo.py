"""`caslb demo` as a newcomer runs it: the banner, a request through it, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys

import trio

from lb.cli.demo import LAB
from tests.farmclient import https_client

CASLB = [sys.executable, "-c", "from lb.cli import main; main()"]


async def test_demo_fronts_the_farm_and_stops_on_ctrl_c() -> None:
    process = await trio.lowlevel.open_process(
        [*CASLB, "demo"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    try:
        banner = b""
        with trio.fail_after(30):
            while b"Ctrl-C stops everything." not in banner:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"demo ended early: {banner.decode(errors='replace')}"
                banner += chunk
        text = banner.decode()
        assert "https://mail.lab.local:9443/owa/" in text
        assert "caslb farm set cas1 EwsProxy Inactive" in text
        client = await https_client("127.0.0.1", 9443, ca_path=LAB.parent / "lab-certs/ca.pem",
                                    server_hostname="mail.lab.local")
        try:
            response = await client.request("GET", "/owa/")
        finally:
            await client.aclose()
        assert response.status == 200 and response.header("x-feserver") in {
            "CAS1", "CAS2", "CAS3"}
        process.send_signal(signal.SIGINT)
        with trio.fail_after(40):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()
