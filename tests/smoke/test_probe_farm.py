"""Every casfarm fault, probed: inject it, run the matching check, assert the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import casfarm
import pytest
import trio

from probes.catalog import CheckKind, protocol
from probes.checks import CheckResult, CheckSpec, Reason, Target, run_check
from probes.wire import Session

TIMEOUT = 0.5  # real seconds: bounds the hang, slow and black-hole cases


@pytest.fixture
async def farm() -> AsyncIterator[casfarm.Farm]:
    async with casfarm.running(servers=1, control=False) as farm:
        yield farm


def target(farm: casfarm.Farm, port: str = "https") -> Target:
    server = farm.server("cas1")
    return Target(server.fqdn, server.host, server.ports[port])


def http(farm: casfarm.Farm, name: str = "owa", **overrides: object) -> CheckSpec:
    overrides.setdefault("ca_file", str(farm.ca_path))
    return CheckSpec.for_protocol(protocol(name), expect_fqdn=True, timeout=TIMEOUT, **overrides)


async def probe_http(farm: casfarm.Farm, name: str = "owa", **overrides: object) -> CheckResult:
    return await run_check(http(farm, name, **overrides), target(farm))


async def test_a_healthy_server_passes_every_protocol(farm: casfarm.Farm) -> None:
    ca = str(farm.ca_path)
    for name in ("owa", "ecp", "ews", "autodiscover", "eas", "oab", "rpc", "mapi"):
        result = await probe_http(farm, name)
        assert result.ok, (name, result)
        assert result.detail == "HTTP 200 cas1.lab.local"
    mail = [
        ("imaps", CheckSpec(CheckKind.IMAP, ca_file=ca)),
        ("imap", CheckSpec(CheckKind.IMAP, tls=False, starttls=True, ca_file=ca)),
        ("pops", CheckSpec(CheckKind.POP, ca_file=ca)),
        ("pop", CheckSpec(CheckKind.POP, tls=False, starttls=True, ca_file=ca)),
        ("smtp", CheckSpec(CheckKind.SMTP, tls=False, starttls=True, ca_file=ca)),
        ("submission", CheckSpec(CheckKind.SMTP, tls=False, starttls=True, ca_file=ca)),
    ]
    for port, spec in mail:
        result = await run_check(spec, target(farm, port))
        assert result.ok, (port, result)


@pytest.mark.parametrize(
    ("fault", "params", "reason", "detail"),
    [
        ("crash", {}, Reason.REFUSED, "refused the connection"),
        ("blackhole", {}, Reason.CONNECT_TIMEOUT, f"no connection within {TIMEOUT}s"),
        ("hang", {}, Reason.TIMEOUT, "waiting for the response"),
        ("hang_tls", {}, Reason.TIMEOUT, "during the TLS handshake"),
        ("slow", {"seconds": 3.0}, Reason.TIMEOUT, "waiting for the response"),
        ("app_pool_stopped", {"vdir": "owa"}, Reason.BAD_STATUS, "HTTP 503"),
        ("wrong_body", {}, Reason.BAD_BODY, "not '200 OK'"),
        ("bad_cert", {"mode": "wrong_name"}, Reason.CERT_ERROR, "Hostname mismatch"),
        ("bad_cert", {"mode": "expired"}, Reason.CERT_ERROR, "expired"),
        # 5xx on real requests behind a green probe: the blind spot passive detection covers
        ("errors", {"vdir": "owa"}, Reason.OK, "HTTP 200"),
    ],
)
async def test_each_fault_gives_its_reason(
    farm: casfarm.Farm, fault: str, params: dict[str, object], reason: Reason, detail: str
) -> None:
    assert (await probe_http(farm)).ok
    farm.inject("cas1", fault, **params)  # type: ignore[arg-type]
    result = await probe_http(farm)
    assert result.reason is reason, result
    assert detail in result.detail
    farm.clear("cas1")
    assert (await probe_http(farm)).ok


async def test_bad_certificate_passes_when_verification_is_off(farm: casfarm.Farm) -> None:
    farm.inject("cas1", "bad_cert", mode="wrong_name")
    assert (await probe_http(farm, ca_file=None, verify=False)).ok


async def test_one_component_inactive_fails_only_its_vdir(farm: casfarm.Farm) -> None:
    farm.set_component("cas1", "EwsProxy", "Inactive", requester="HealthApi")
    ews, owa = await probe_http(farm, "ews"), await probe_http(farm, "owa")
    assert (ews.reason, owa.reason) == (Reason.RESET, Reason.OK)
    farm.inject("cas1", "app_pool_stopped", vdir="mapi")
    assert (await probe_http(farm, "mapi")).reason is Reason.BAD_STATUS


async def test_maintenance_is_seen_by_smtp_while_tcp_still_passes(farm: casfarm.Farm) -> None:
    farm.set_component("cas1", "ServerWideOffline", "Inactive", requester="Maintenance")
    ca = str(farm.ca_path)
    smtp = await run_check(
        CheckSpec(CheckKind.SMTP, tls=False, starttls=True, ca_file=ca), target(farm, "smtp")
    )
    tcp = await run_check(CheckSpec(CheckKind.TCP, tls=False), target(farm, "smtp"))
    assert tcp.ok
    assert (smtp.reason, smtp.detail) == (Reason.NOT_ACTIVE, "MAIL: 452 4.3.2 Service not active")
    # IMAP4 and POP3 are stopped: their ports refuse the connection.
    imap = await run_check(CheckSpec(CheckKind.IMAP, ca_file=ca), target(farm, "imaps"))
    pop = await run_check(CheckSpec(CheckKind.POP, ca_file=ca), target(farm, "pops"))
    assert imap.reason is pop.reason is Reason.REFUSED
    assert (await probe_http(farm)).reason is Reason.RESET
    farm.set_component("cas1", "ServerWideOffline", "Active", requester="Maintenance")
    assert (await run_check(CheckSpec(CheckKind.IMAP, ca_file=ca), target(farm, "imaps"))).ok
    assert (await run_check(CheckSpec(CheckKind.POP, ca_file=ca), target(farm, "pops"))).ok


async def test_crash_refuses_mail_too(farm: casfarm.Farm) -> None:
    farm.inject("cas1", "crash")
    spec = CheckSpec(CheckKind.SMTP, tls=False, timeout=TIMEOUT)
    assert (await run_check(spec, target(farm, "smtp"))).reason is Reason.REFUSED


async def test_flapping_shows_both_verdicts(farm: casfarm.Farm) -> None:
    farm.inject("cas1", "flap", seconds=0.1)
    seen: set[Reason] = set()
    for _ in range(40):  # bounded: about 2 s of probing at most
        seen.add((await probe_http(farm)).reason)
        if {Reason.OK, Reason.RESET} <= seen:
            break
        await trio.sleep(0.05)
    assert {Reason.OK, Reason.RESET} <= seen


async def test_checks_resume_tls_but_a_changed_certificate_is_still_caught(
    farm: casfarm.Farm,
) -> None:
    spec = http(farm)
    server = farm.server("cas1")
    resumed = []
    for _ in range(2):
        session = Session(server.fqdn, server.host, server.ports["https"])
        await session.connect()
        await session.start_tls(spec.tls_context())
        await session.send(f"GET /owa/healthcheck.htm HTTP/1.1\r\nHost: {server.fqdn}\r\n"
                           "Connection: close\r\n\r\n".encode())
        while await session.receive_some():
            pass  # reading the answer is what brings the TLS 1.3 ticket in
        resumed.append(session.resumed)
        session.passed()
        await session.aclose()
    assert resumed == [False, True]
    farm.inject("cas1", "bad_cert", mode="wrong_name")
    result = await probe_http(farm)
    assert not result.ok and result.reason is Reason.CERT_ERROR
