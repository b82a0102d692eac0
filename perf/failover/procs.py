"""Child processes of the harness: start, read lines, stop for sure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

REPO_ROOT = Path(__file__).resolve().parents[2]


def python() -> str:
    """The interpreter running the harness (the project's venv)."""
    return sys.executable


class LineProcess:
    """A child process whose stdout is read line by line."""

    def __init__(self, process: trio.Process, name: str, log: Path | None = None) -> None:
        self.process = process
        self.name = name
        self.log = log
        self._buffer = b""

    def check_alive(self) -> None:
        """Raise if the child has exited, quoting the end of its log.

        Raises:
            RuntimeError: naming the command, its exit code and last log line.
        """
        if self.process.poll() is None:
            return
        last = ""
        if self.log and self.log.exists():
            lines = self.log.read_text(errors="replace").strip().splitlines()
            last = lines[-1] if lines else ""
        raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {last}")

    async def readline(self, timeout: float) -> str:
        """The next stdout line.

        Raises:
            RuntimeError: naming the process when it exits or stays silent.
        """
        assert self.process.stdout is not None
        with trio.move_on_after(timeout):
            while b"\n" not in self._buffer:
                data = await self.process.stdout.receive_some(65536)
                if not data:
                    raise RuntimeError(f"process {self.process.args!r} exited")
                self._buffer += data
            line, self._buffer = self._buffer.split(b"\n", 1)
            return line.decode()
        raise RuntimeError(f"process {self.process.args!r} said nothing for {timeout} s")

    async def send_line(self, text: str) -> None:
        """Write one line to the child's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")


async def stdin_closed() -> None:
    """Return when the parent closes our stdin: how a child process is told to finish."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        while await stdin.receive_some(1024):
            pass


@asynccontextmanager
async def child(
    argv: Sequence[str],
    *,
    stdin: bool = False,
    log: Path | None = None,
    grace: float = 3.0,
    name: str | None = None,
) -> AsyncIterator[LineProcess]:
    """Run `argv` from the repository root; terminate it (then kill) on exit.

    Args:
        argv: the command.
        stdin: give the child a pipe on stdin.
        log: file for the child's stderr (default: discarded).
        grace: seconds between SIGTERM and SIGKILL.
        name: what errors call it (default: the executable's name).
    """
    err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=str(REPO_ROOT),
            env=env,
        )
        try:
            yield LineProcess(process, name or Path(argv[0]).name, log)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process, grace)
    finally:
        if log:
            err.close()  # type: ignore[union-attr]


async def _stop(process: trio.Process, grace: float) -> None:
    if process.stdin is not None:
        await process.stdin.aclose()
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()
