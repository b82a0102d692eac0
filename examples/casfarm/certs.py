"""Certificates for the farm, made at start from a throw-away local CA.

The CA certificate is written to a folder so that clients (and curl, openssl)
can trust it. Each server gets a leaf certificate naming its FQDN, the shared
namespace (a balancer in TLS passthrough hands the client's `mail.lab.local`
connection straight to a server) and its address, plus two bad ones for the
bad_cert fault: one for a foreign name, one that expired a year ago.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

WRONG_NAME = "wrong-host.invalid"


@dataclass(frozen=True)
class ServerTls:
    """The TLS contexts one server can present.

    Attributes:
        good: certificate for the FQDN, namespace and address.
        wrong_name: certificate for a name nobody asks for.
        expired: the right names, expired.
        cert_path: PEM with the good certificate chain and key (for openssl s_server style use).
    """

    good: ssl.SSLContext
    wrong_name: ssl.SSLContext
    expired: ssl.SSLContext
    cert_path: Path

    def context(self, mode: str | None) -> ssl.SSLContext:
        """The context for a bad_cert mode ("wrong_name", "expired") or None (good)."""
        if mode == "wrong_name":
            return self.wrong_name
        if mode == "expired":
            return self.expired
        return self.good


def _server_context(leaf: Any, maximum_version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.maximum_version = maximum_version
    leaf.configure_cert(ctx)
    # Exchange speaks HTTP/1.1 only; offering it keeps ALPN clients honest.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class FarmCA:
    """A local CA that issues the farm's certificates.

    Args:
        cert_dir: folder to write `ca.pem` and one `<server>.pem` per server into.
    """

    def __init__(self, cert_dir: Path) -> None:
        self._ca = trustme.CA(organization_name="casfarm lab CA")
        self.cert_dir = cert_dir
        cert_dir.mkdir(parents=True, exist_ok=True)
        self.ca_path = cert_dir / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))

    def server_tls(
        self, name: str, fqdn: str, namespace: str, host: str,
        maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    ) -> ServerTls:
        """Issue the good and bad certificates of one server, in contexts that speak
        TLS up to `maximum_version`."""
        # *.namespace: the per-protocol names an SNI design gives clients (ews.mail.lab.local).
        names = (fqdn, namespace, f"*.{namespace}", f"autodiscover.{namespace.split('.', 1)[-1]}",
                 host)
        good = self._ca.issue_cert(*names, common_name=fqdn)
        wrong = self._ca.issue_cert(WRONG_NAME, common_name=WRONG_NAME)
        now = datetime.datetime.now(datetime.UTC)
        expired = self._ca.issue_cert(
            *names,
            common_name=fqdn,
            not_before=now - datetime.timedelta(days=730),
            not_after=now - datetime.timedelta(days=365),
        )
        cert_path = self.cert_dir / f"{name}.pem"
        cert_path.write_bytes(
            b"".join(blob.bytes() for blob in good.cert_chain_pems) + good.private_key_pem.bytes()
        )
        return ServerTls(
            good=_server_context(good, maximum_version),
            wrong_name=_server_context(wrong, maximum_version),
            expired=_server_context(expired, maximum_version),
            cert_path=cert_path,
        )
