"""exchangelib, the EWS client most Python tools use, pointed at casfarm or at caslb.

exchangelib builds its own requests sessions, so the way in is its documented
hook `BaseProtocol.HTTP_ADAPTER_CLS`: an adapter that speaks TLS to the
namespace's name (SNI and hostname check) at the address under test, and checks
the certificate against the lab CA instead of the system's bundle. Nothing
disables verification. The adapter class is set for the test's duration only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests.adapters
from exchangelib import DELEGATE, NTLM, Account, Build, Configuration, Credentials, Version
from exchangelib.protocol import BaseProtocol

from tests.authclients import LOGIN, PASSWORD

EXCHANGE_2016 = Version(build=Build(15, 1, 2507, 6))
ADDRESS = "alice@lab.local"


def _adapter(ca_path: str, server_hostname: str) -> type[requests.adapters.HTTPAdapter]:
    class LabAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["server_hostname"] = server_hostname
            kwargs["assert_hostname"] = server_hostname
            super().init_poolmanager(*args, **kwargs)

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            super().cert_verify(conn, url, ca_path, cert)  # the lab CA, always verified

    return LabAdapter


@contextmanager
def lab_adapter(ca_path: str | Path, server_hostname: str) -> Iterator[None]:
    """exchangelib's sessions trust the lab CA and name `server_hostname`, inside the block."""
    before = BaseProtocol.HTTP_ADAPTER_CLS
    BaseProtocol.HTTP_ADAPTER_CLS = _adapter(str(ca_path), server_hostname)
    try:
        yield
    finally:
        BaseProtocol.HTTP_ADAPTER_CLS = before


def account(host: str, port: int) -> Account:
    """alice's account over NTLM at https://host:port/EWS/Exchange.asmx, no autodiscover."""
    config = Configuration(
        service_endpoint=f"https://{host}:{port}/EWS/Exchange.asmx",
        credentials=Credentials(LOGIN, PASSWORD),
        auth_type=NTLM,
        version=EXCHANGE_2016,
        max_connections=2,  # one for a long GetStreamingEvents, one for everything else
    )
    return Account(ADDRESS, config=config, autodiscover=False, access_type=DELEGATE)
