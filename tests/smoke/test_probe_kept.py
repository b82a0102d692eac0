"""Healthcheck connections kept from one check to the next (probes.kept).

Counts connections and requests on a tiny loopback server; no timings.
"""

from __future__ import annotations

import pytest
import trio
import trustme

from probes import wire
from probes.checks import Reason, run_check
from probes.kept import KeptConnections
from tests.smoke.test_probe_checks import FQDN, Rig, owa

BODY = f"200 OK<br/>{FQDN}".encode()


@pytest.fixture
def rig(nursery: trio.Nursery, ca: trustme.CA) -> Rig:
    return Rig(nursery, ca)


def keep_alive_response() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class Counting:
    """A server that answers `per_connection` GETs on each connection, then closes it."""

    def __init__(self, recorder: Rig, per_connection: int = 100) -> None:
        self.rig = recorder
        self.connections = 0
        self.per_connection = per_connection

    async def __call__(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        for _ in range(self.per_connection):
            if not await self.rig.read_request(stream):
                return
            await stream.send_all(keep_alive_response())


async def test_checks_share_one_connection_while_it_is_young(rig: Rig, ca_file: str) -> None:
    server = Counting(rig)
    target = await rig.start(server)
    kept = KeptConnections()
    results = [await run_check(owa(ca_file=ca_file), target, kept=kept, reuse_for=3600)
               for _ in range(3)]
    assert [r.reason for r in results] == [Reason.OK] * 3
    assert (server.connections, len(rig.requests)) == (1, 3)
    assert all(b"connection: close" not in r.lower() for r in rig.requests)
    kept.close_all()
    assert len(kept) == 0


async def test_a_kept_connection_keeps_its_tls_session_once(
    rig: Rig, ca_file: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Reading a session copies it (~0.4 ms): checks riding the connection must not.
    kept_sessions: list[object] = []
    keep = wire.SESSIONS.keep
    monkeypatch.setattr(wire.SESSIONS, "keep",
                        lambda key, session: (kept_sessions.append(session), keep(key, session)))
    target = await rig.start(Counting(rig))
    kept = KeptConnections()
    for _ in range(4):
        assert (await run_check(owa(ca_file=ca_file), target, kept=kept, reuse_for=3600)).ok
    assert len(rig.requests) == 4 and len(kept_sessions) == 1
    kept.close_all()


async def test_without_reuse_every_check_opens_its_own(rig: Rig, ca_file: str) -> None:
    server = Counting(rig)
    target = await rig.start(server)
    kept = KeptConnections()
    for _ in range(3):
        assert (await run_check(owa(ca_file=ca_file), target, kept=kept, reuse_for=0)).ok
    assert server.connections == 3 and len(kept) == 0
    assert all(b"connection: close" in r.lower() for r in rig.requests)


async def test_an_idle_close_is_not_a_failure(rig: Rig, ca_file: str) -> None:
    server = Counting(rig, per_connection=1)  # answers, then closes the idle connection
    target = await rig.start(server)
    kept = KeptConnections()
    results = [await run_check(owa(ca_file=ca_file), target, kept=kept, reuse_for=3600)
               for _ in range(3)]
    assert [r.reason for r in results] == [Reason.OK] * 3
    assert server.connections == 3
    kept.close_all()


async def test_a_crash_shows_on_the_next_check(ca: trustme.CA, ca_file: str) -> None:
    kept = KeptConnections()
    async with trio.open_nursery() as serving:
        crashing = Rig(serving, ca)
        target = await crashing.start(Counting(crashing))
        assert (await run_check(owa(ca_file=ca_file), target, kept=kept, reuse_for=3600)).ok
        serving.cancel_scope.cancel()  # the listener and the kept connection go with it
    result = await run_check(owa(ca_file=ca_file), target, kept=kept, reuse_for=3600)
    assert (result.ok, result.reason) == (False, Reason.REFUSED)
    assert len(kept) == 0


async def test_checks_due_together_take_turns_on_one_connection(
    rig: Rig, ca_file: str
) -> None:
    server = Counting(rig)
    target = await rig.start(server)
    kept = KeptConnections()
    results = []

    async def check() -> None:
        results.append(await run_check(owa(ca_file=ca_file), target, kept=kept, reuse_for=3600))

    async with trio.open_nursery() as nursery:
        for _ in range(4):  # as the runner starts one server's checks: at the same instant
            nursery.start_soon(check)
    assert [r.reason for r in results] == [Reason.OK] * 4
    assert (server.connections, len(rig.requests)) == (1, 4)
    kept.close_all()


class HungVdir(Counting):
    """Answers every GET but those for /ecp/, which it never answers."""

    async def __call__(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        while request := await self.rig.read_request(stream):
            if b" /ecp/" in request.split(b"\r\n", 1)[0]:
                await trio.sleep_forever()
            await stream.send_all(keep_alive_response())


async def test_a_hung_vdir_holds_only_its_own_connection(rig: Rig, ca_file: str) -> None:
    server = HungVdir(rig)
    target = await rig.start(server)
    kept = KeptConnections()
    assert (await run_check(owa(ca_file=ca_file), target, kept=kept, reuse_for=3600)).ok
    ecp = owa(ca_file=ca_file, path="/ecp/healthcheck.htm", timeout=30.0)
    done = []
    async with trio.open_nursery() as nursery:

        async def hung_check() -> None:
            done.append(await run_check(ecp, target, kept=kept, reuse_for=3600))

        nursery.start_soon(hung_check)
        while len(rig.requests) < 2:  # ecp now holds the kept connection
            await trio.sleep(0.01)
        # owa waits a tenth of its timeout for the connection, then opens its own
        with trio.fail_after(10):
            result = await run_check(owa(ca_file=ca_file, timeout=1.0), target, kept=kept,
                                     reuse_for=3600)
        assert done == []  # decided while the hung vdir still waits for its answer
        nursery.cancel_scope.cancel()
    assert result.ok and server.connections == 2
    kept.close_all()
