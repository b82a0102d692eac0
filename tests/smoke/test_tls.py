"""TLS contexts over real loopback sockets: SNI certificate choice, versions, ALPN, verification."""

from __future__ import annotations

import functools
import logging
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

from lb.tls import Certificate, client_context, select_context, server_context, tls_version


def write_leaf(ca: trustme.CA, folder: Path, *names: str) -> Certificate:
    leaf = ca.issue_cert(*names)
    path = folder / f"{names[0].replace('*', 'star')}.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    return Certificate(path, None, names)


@asynccontextmanager
async def tls_server(ctx: ssl.SSLContext) -> AsyncIterator[tuple[int, list[str | None]]]:
    """A loopback TLS server that handshakes, records ALPN, and closes."""
    alpn: list[str | None] = []

    async def handle(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, ctx, server_side=True)
        try:
            await stream.do_handshake()
            alpn.append(stream.selected_alpn_protocol())
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1], alpn
        nursery.cancel_scope.cancel()


async def handshake(port: int, ctx: ssl.SSLContext, sni: str | None) -> dict[str, object]:
    """Connect, handshake, return the server certificate (as the ssl module decodes it)."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=sni)
    try:
        await stream.do_handshake()
        return stream.getpeercert() or {}
    finally:
        await trio.aclose_forcefully(stream)


def names_of(cert: dict[str, object]) -> set[str]:
    return {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}  # type: ignore[attr-defined]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def test_sni_chooses_the_certificate(
    ca: trustme.CA, trusting: ssl.SSLContext, tmp_path: Path
) -> None:
    default = write_leaf(ca, tmp_path, "mail.contoso.test")
    legacy = write_leaf(ca, tmp_path, "legacy.contoso.test")
    wildcard = write_leaf(ca, tmp_path, "*.eas.contoso.test")
    ctx = server_context(default, [legacy, wildcard])
    async with tls_server(ctx) as (port, _):
        assert names_of(await handshake(port, trusting, "mail.contoso.test")) == {
            "mail.contoso.test"
        }
        assert names_of(await handshake(port, trusting, "LEGACY.contoso.test")) == {
            "legacy.contoso.test"
        }
        assert names_of(await handshake(port, trusting, "dev1.eas.contoso.test")) == {
            "*.eas.contoso.test"
        }
        no_check = ssl.create_default_context()
        ca.configure_trust(no_check)
        no_check.check_hostname = False
        assert names_of(await handshake(port, no_check, None)) == {"mail.contoso.test"}
        assert names_of(await handshake(port, no_check, "other.test")) == {"mail.contoso.test"}


async def test_alpn_http11_is_negotiated(
    ca: trustme.CA, trusting: ssl.SSLContext, tmp_path: Path
) -> None:
    ctx = server_context(write_leaf(ca, tmp_path, "mail.contoso.test"))
    trusting.set_alpn_protocols(["h2", "http/1.1"])
    async with tls_server(ctx) as (port, alpn):
        await handshake(port, trusting, "mail.contoso.test")
        await trio.testing.wait_all_tasks_blocked()
    assert alpn == ["http/1.1"]


async def test_tls_below_1_2_is_refused(
    ca: trustme.CA, trusting: ssl.SSLContext, tmp_path: Path
) -> None:
    ctx = server_context(write_leaf(ca, tmp_path, "mail.contoso.test"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, that is the point
        trusting.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        trusting.maximum_version = ssl.TLSVersion.TLSv1_1
    async with tls_server(ctx) as (port, _):
        with pytest.raises(trio.BrokenResourceError):
            await handshake(port, trusting, "mail.contoso.test")


async def test_client_context_verifies_against_the_ca_file(ca: trustme.CA, tmp_path: Path) -> None:
    server = server_context(write_leaf(ca, tmp_path, "cas1.contoso.test"))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other_file = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other_file))
    async with tls_server(server) as (port, _):
        cert = await handshake(port, client_context(ca_file), "cas1.contoso.test")
        assert names_of(cert) == {"cas1.contoso.test"}
        with pytest.raises(trio.BrokenResourceError) as wrong_ca:
            await handshake(port, client_context(other_file), "cas1.contoso.test")
        assert isinstance(wrong_ca.value.__cause__, ssl.SSLCertVerificationError)
        with pytest.raises(trio.BrokenResourceError) as wrong_name:
            await handshake(port, client_context(ca_file), "cas2.contoso.test")
        assert "match" in str(wrong_name.value.__cause__)


async def test_verification_off_works_and_warns(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = server_context(write_leaf(ca, tmp_path, "cas1.contoso.test"))
    with caplog.at_level(logging.WARNING, logger="caslb.tls"):
        ctx = client_context(verify=False)
    assert any("verification" in r.getMessage() and "OFF" in r.getMessage() for r in caplog.records)
    async with tls_server(server) as (port, _):
        await handshake(port, ctx, "anything.test")


def test_bad_inputs_are_refused_by_name(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match=r"missing\.pem"):
        server_context(Certificate(missing))
    with pytest.raises(ValueError, match=r"missing\.pem"):
        client_context(missing)
    with pytest.raises(ValueError, match=r"'1\.1'"):
        tls_version("1.1")
    assert tls_version("1.3") is ssl.TLSVersion.TLSv1_3


def test_select_context_prefers_exact_names() -> None:
    exact, wild = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    table = {"a.contoso.test": exact, "*.contoso.test": wild}
    assert select_context(table, "A.contoso.test.") is exact
    assert select_context(table, "b.contoso.test") is wild
    assert select_context(table, "x.b.contoso.test") is None
    assert select_context(table, "localhost") is None
