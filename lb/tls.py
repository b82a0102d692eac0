"""TLS contexts: termination with certificates chosen by SNI, and re-encryption to servers.

Server side: one context per certificate, all built the same way (TLS 1.2 or
newer, ALPN `http/1.1`). The context given to the listener carries the
default certificate and an `sni_callback` that swaps in the context whose
names match the ClientHello's server name (exact name first, then a
`*.domain` wildcard one label deep). A client that sends no SNI, or an unknown
name, gets the default certificate.

Client side (SSL bridging): the connector wraps each upstream connection with
the server's FQDN as SNI (or the pool's `sni`, or none) and, with verification
on, checks the chain against a CA file and the FQDN (or the pool's
`verify_name`) against the certificate. Verification can be turned off
for lab farms with self-signed certificates; that is logged as a warning,
since it lets anyone on the path impersonate the servers.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lb.certfiles import certificate_problem

log = logging.getLogger("caslb.tls")

ALPN_HTTP1 = ("http/1.1",)

T = TypeVar("T")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def tls_version(name: str) -> ssl.TLSVersion:
    """The `ssl.TLSVersion` for "1.2" or "1.3".

    Raises:
        ValueError: naming the bad version; older versions are refused.
    """
    try:
        return _VERSIONS[name.strip()]
    except KeyError:
        raise ValueError(f"unsupported minimum TLS version {name!r} (use 1.2 or 1.3)") from None


@dataclass(frozen=True)
class Certificate:
    """A certificate chain and its key, with the names it serves by SNI.

    Attributes:
        cert_file: PEM file with the leaf certificate first, then its chain.
        key_file: PEM file with the private key (None when inside cert_file).
        names: host names (or `*.domain` wildcards) this certificate answers for.
    """

    cert_file: Path
    key_file: Path | None = None
    names: tuple[str, ...] = field(default_factory=tuple)


def _base_server_context(
    cert: Certificate, minimum: ssl.TLSVersion, alpn: Sequence[str]
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = minimum
    try:
        ctx.load_cert_chain(
            str(cert.cert_file), None if cert.key_file is None else str(cert.key_file)
        )
    except (OSError, ssl.SSLError) as exc:
        found = certificate_problem(cert.cert_file, cert.key_file)
        why = f"tls {found.which}: {found.problem}" if found else (
            f"cannot load certificate {str(cert.cert_file)!r}: {exc}")
        raise ValueError(why) from exc
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def _name_table(certs: Iterable[tuple[Certificate, ssl.SSLContext]]) -> dict[str, ssl.SSLContext]:
    table: dict[str, ssl.SSLContext] = {}
    for cert, ctx in certs:
        for name in cert.names:
            key = name.strip().lower().rstrip(".")
            if not key:
                raise ValueError(f"empty SNI name for certificate {str(cert.cert_file)!r}")
            table.setdefault(key, ctx)
    return table


def match_server_name(table: Mapping[str, T], server_name: str) -> T | None:
    """The entry for `server_name`: an exact name first, then a `*.parent` wildcard.

    Shared by TLS termination and the SNI-routing L4 frontend, so a name picks
    the same way whether the balancer decrypts or passes through.

    Args:
        table: lowercased names (or `*.domain`) → entries.
        server_name: the client's SNI name, in any case, with or without a final dot.
    """
    name = server_name.lower().rstrip(".")
    if (hit := table.get(name)) is not None:
        return hit
    _, dot, parent = name.partition(".")
    return table.get("*." + parent) if dot else None


def select_context(table: Mapping[str, ssl.SSLContext], server_name: str) -> ssl.SSLContext | None:
    """The context serving `server_name`: an exact name first, then a wildcard."""
    return match_server_name(table, server_name)


def server_context(
    default: Certificate,
    by_sni: Sequence[Certificate] = (),
    *,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    alpn: Sequence[str] = ALPN_HTTP1,
) -> ssl.SSLContext:
    """A server context for TLS termination, choosing the certificate by SNI.

    Args:
        default: the certificate for clients without SNI or with an unknown name.
        by_sni: further certificates, each chosen by the names it lists.
        minimum_version: the oldest TLS version accepted (1.2 unless raised).
        alpn: protocols offered by ALPN (HTTP/1.1 only: the proxy speaks h11).

    Raises:
        ValueError: when a certificate cannot be loaded or the version is too old.
    """
    if minimum_version < ssl.TLSVersion.TLSv1_2:
        raise ValueError(f"minimum TLS version {minimum_version.name} is below TLS 1.2")
    main = _base_server_context(default, minimum_version, alpn)
    pairs = [(default, main)] + [
        (c, _base_server_context(c, minimum_version, alpn)) for c in by_sni
    ]
    table = _name_table(pairs)
    if len(pairs) > 1 or table:

        def choose(
            sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext
        ) -> None:
            if name is not None and (ctx := select_context(table, name)) is not None:
                sock.context = ctx
            return None

        main.sni_callback = choose
    return main


def client_context(
    ca_file: Path | None = None,
    *,
    verify: bool = True,
    check_hostname: bool = True,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> ssl.SSLContext:
    """A client context for re-encryption to the servers (SSL bridging).

    Args:
        ca_file: PEM bundle to verify the servers against; None uses the
            system store.
        verify: False turns verification off (logged as a warning).
        check_hostname: False when the connector checks the name itself
            (`UpstreamNames` apart from the FQDN); the chain is still verified.
        minimum_version: the oldest TLS version offered.

    Raises:
        ValueError: when the CA file cannot be loaded.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = minimum_version
    ctx.set_alpn_protocols(list(ALPN_HTTP1))
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning(
            "TLS verification of upstream servers is OFF: anyone on the path can impersonate them"
        )
        return ctx
    try:
        if ca_file is None:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            ctx.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load CA file {str(ca_file)!r}: {exc}") from exc
    ctx.check_hostname = check_hostname
    return ctx


@dataclass(frozen=True)
class UpstreamNames:
    """The names re-encryption uses towards a server (HAProxy's `sni` and `verifyhost`).

    A farm whose certificates carry only the namespace (mail.contoso.com), not
    each server's FQDN, needs them apart from the FQDN; a server that picks
    its certificate by SNI may need a name other than the one verified.

    Attributes:
        sni: True for the server's fqdn, a name to send that name, False for no SNI.
        verify_name: the name the certificate must carry; None for the SNI
            sent (the fqdn when none is sent).
    """

    sni: bool | str = True
    verify_name: str | None = None

    @property
    def follows_fqdn(self) -> bool:
        """Whether SNI and the verified name are both the server's FQDN (ssl checks it then)."""
        return self.sni is True and self.verify_name is None

    def for_server(self, fqdn: str) -> tuple[str | None, str]:
        """(SNI to send or None, name the certificate must carry) for the server `fqdn`."""
        sni = fqdn if self.sni is True else (self.sni or None)
        return sni, self.verify_name or sni or fqdn


FQDN_NAMES = UpstreamNames()
"""The default: SNI and the verified name are each server's own FQDN."""


def certificate_matches(cert: Mapping[str, object], name: str) -> bool:
    """Whether a peer certificate (`SSLSocket.getpeercert()`) is valid for `name`.

    RFC 6125: the DNS names of subjectAltName, a `*.` wildcard matching one
    label; the subject's commonName only when the certificate has no DNS name.
    """
    alt = cert.get("subjectAltName", ())
    names = [str(v) for k, v in alt if k == "DNS"] if isinstance(alt, tuple) else []
    if not names:
        subject = cert.get("subject", ())
        rdns = subject if isinstance(subject, tuple) else ()
        names = [str(v) for rdn in rdns for k, v in rdn if k == "commonName"]
    table = {n.lower().rstrip("."): True for n in names}
    return match_server_name(table, name) is not None
