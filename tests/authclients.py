"""Real authenticating clients, for tests that log on to casfarm directly or through caslb.

requests + requests_ntlm (pyspnego underneath) is what exchangelib and most
Python EWS tools use; curl `--ntlm` is the other client stack. Both are driven
from trio through a worker thread or a subprocess, and both reach a name
(`server_hostname`) at an address, as `curl --resolve` does, so that SNI and
certificate checks are those of a client of the namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import trio
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP
from requests.adapters import HTTPAdapter
from requests_ntlm import HttpNtlmAuth

LOGIN = "LAB\\alice"
PASSWORD = "Passw0rd"


class _NamedHostAdapter(HTTPAdapter):
    """Connects to the URL's address but speaks TLS to `server_hostname` (SNI and checks)."""

    def __init__(self, server_hostname: str) -> None:
        self._server_hostname = server_hostname
        super().__init__(pool_maxsize=1)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._server_hostname
        kwargs["assert_hostname"] = self._server_hostname
        super().init_poolmanager(*args, **kwargs)


def ntlm_session(
    ca_path: str | Path, server_hostname: str, user: str = LOGIN, password: str = PASSWORD
) -> requests.Session:
    """A requests session that logs on with NTLM and keeps its one connection alive."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE and proxies would override the test's own
    session.verify = str(ca_path)
    session.auth = HttpNtlmAuth(user, password)
    session.mount("https://", _NamedHostAdapter(server_hostname))
    return session


@dataclass(frozen=True)
class Seen:
    """What a client saw for one request.

    Attributes:
        status: the final status.
        challenges: the statuses of the handshake's earlier answers (e.g. [401, 401]).
        server: the X-FEServer of the final answer.
    """

    status: int
    challenges: list[int]
    server: str


async def post(session: requests.Session, url: str, body: bytes = SOAP) -> Seen:
    """POST from a worker thread, so the farm and caslb keep running in this trio run."""

    def blocking() -> Seen:
        response = session.post(url, data=body, timeout=20)
        return Seen(
            response.status_code,
            [r.status_code for r in response.history],
            response.headers.get("X-FEServer", "-"),
        )

    return await trio.to_thread.run_sync(blocking)


async def curl_ntlm(
    ca_path: str | Path, name: str, host: str, port: int, path: str, user: str = LOGIN,
    password: str = PASSWORD,
) -> tuple[int, int]:
    """POST with `curl --ntlm`; returns (final status, connections curl opened)."""
    argv = [
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}",
        "--ntlm", "-u", f"{user}:{password}", "--cacert", str(ca_path),
        "--resolve", f"{name}:{port}:{host}", "-X", "POST",
        "-H", "Content-Type: text/xml", "-d", SOAP.decode(),
        f"https://{name}:{port}{path}",
    ]  # fmt: skip
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    status, connects = done.stdout.decode().split()
    return int(status), int(connects)
