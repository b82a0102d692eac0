"""A certificate renewed at the same path, under traffic, is served after SIGHUP to `caslb run`.

The config text never changes: only the files do. A client loop opens a new TLS
connection per request throughout; a connection opened before the renewal
stays open across it. After SIGHUP new handshakes see the new certificate, the
old connection keeps the old one, no request fails, and the pool whose CA file
was renewed has its check go from a certificate error to UP and re-encrypts
with the new CA.
"""

from __future__ import annotations

import hashlib
import signal
import ssl
import subprocess
from pathlib import Path

import casfarm
import trio
import trustme
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP

from tests.farmclient import HttpClient, https_client
from tests.smoke.test_cli_run import CASLB, free_port, member, post, wait_status

NAMESPACE = "mail.lab.local"
# Requests of the loop at most: enough for a slow machine's start, reload and checks.
LOOP_LIMIT = 3000


def config_text(farm: casfarm.Farm, https: int, admin: int, cert: Path, ews_ca: Path) -> str:
    servers = "".join(
        f'[servers.{s.name}]\naddress = "{s.host}:{s.ports["https"]}"\nfqdn = "{s.fqdn}"\n'
        for s in farm.servers)
    names = ", ".join(f'"{s.name}"' for s in farm.servers)
    return f"""{servers}
[admin]
bind = "127.0.0.1:{admin}"

[frontends.https]
bind = "127.0.0.1:{https}"
mode = "http"
routes = {{ "/owa" = "owa", "/ews" = "ews" }}
tls = {{ cert = "{cert}", key = "{cert}" }}

[pools.owa]
servers = [{names}]
protocol = "owa"
tls = {{ ca_file = "{farm.ca_path}" }}
check = {{ ca_file = "{farm.ca_path}", inter = "200ms", rise = 1 }}

[pools.ews]
servers = [{names}]
protocol = "ews"
tls = {{ ca_file = "{ews_ca}" }}
check = {{ ca_file = "{ews_ca}", inter = "200ms", rise = 1 }}
"""


def issue(ca: trustme.CA, path: Path) -> str:
    """Write a new certificate for the namespace (chain and key) to `path`, in place."""
    issued = ca.issue_cert(NAMESPACE)
    path.write_bytes(issued.private_key_and_cert_chain_pem.bytes())
    leaf = ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(leaf).hexdigest()


def fingerprint(client: HttpClient) -> str:
    der = client.stream.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    return hashlib.sha256(der).hexdigest()


async def connect(port: int, tmp_path: Path) -> HttpClient:
    return await https_client("127.0.0.1", port, ca_path=tmp_path / "client-ca.pem",
                              server_hostname=NAMESPACE)


async def test_sighup_serves_a_renewed_certificate_and_ca_under_traffic(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    cert, ews_ca = tmp_path / "mail.pem", tmp_path / "ews-ca.pem"
    old = issue(ca, cert)
    trustme.CA().cert_pem.write_to_path(str(ews_ca))  # not the farm's: ews checks fail
    https, admin_port = free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    async with casfarm.running(servers=2) as farm:
        config = tmp_path / "caslb.toml"
        config.write_text(config_text(farm, https, admin_port, cert, ews_ca))
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                lambda task_status: trio.run_process(
                    [*CASLB, "run", str(config)], check=False, task_status=task_status,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            with trio.fail_after(30):
                while not (status := await wait_status(admin, process))["pools"]["owa"][
                        "servers"][0]["eligible"] or member(status, "ews", "cas1")[
                        "last_check"] is None:
                    await trio.sleep(0.1)
            assert member(status, "ews", "cas1")["last_check"]["reason"] == "CERT_ERROR"
            established = await connect(https, tmp_path)
            assert fingerprint(established) == old
            assert (await established.request("GET", "/owa/")).status == 200

            seen: list[tuple[str, int]] = []
            enough = trio.Event()

            async def loop() -> None:
                for _ in range(LOOP_LIMIT):
                    client = await connect(https, tmp_path)
                    try:
                        seen.append((fingerprint(client),
                                     (await client.request("GET", "/owa/")).status))
                    finally:
                        await client.aclose()
                    if enough.is_set():
                        return
                raise AssertionError(f"the loop ran {LOOP_LIMIT} requests before the end")

            async with trio.open_nursery() as clients:
                clients.start_soon(loop)
                with trio.fail_after(30):
                    while len(seen) < 5:
                        await trio.sleep(0.05)
                new = issue(ca, cert)
                ews_ca.write_bytes(Path(farm.ca_path).read_bytes())
                process.send_signal(signal.SIGHUP)
                with trio.fail_after(30):
                    while not seen or seen[-1][0] != new:
                        await trio.sleep(0.05)
                    while member(await wait_status(admin, process), "ews", "cas1")[
                            "check"] != "UP":
                        await trio.sleep(0.1)
                count = len(seen)
                while len(seen) < count + 5:  # new handshakes after the checks too
                    await trio.sleep(0.05)
                enough.set()

            assert [status for _, status in seen] == [200] * len(seen)
            prints = [print_ for print_, _ in seen]
            switch = prints.index(new)
            # Old until the reload, new from then on: never back.
            assert set(prints[:switch]) == {old} and set(prints[switch:]) == {new}, prints
            assert switch >= 5
            # The connection made before keeps its certificate and goes on serving.
            assert fingerprint(established) == old
            assert (await established.request("GET", "/owa/")).status == 200
            await established.aclose()
            # Re-encryption to the ews pool verifies with its renewed CA file too.
            ews = await connect(https, tmp_path)
            try:
                response = await ews.request("POST", "/EWS/Exchange.asmx", body=SOAP)
            finally:
                await ews.aclose()
            assert response.status == 200 and response.header("x-feserver") in {"CAS1", "CAS2"}

            process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                while process.returncode is None:
                    await trio.sleep(0.1)
            assert process.returncode == 0


async def test_a_renewal_that_does_not_load_is_refused_and_the_next_one_served_on_post_reload(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    cert = tmp_path / "mail.pem"
    old = issue(ca, cert)
    https, admin_port = free_port(), free_port()
    config = tmp_path / "caslb.toml"
    config.write_text(f"""
[admin]
bind = "127.0.0.1:{admin_port}"

[frontends.https]
bind = "127.0.0.1:{https}"
mode = "http"
default_pool = "owa"
tls = {{ cert = "{cert}", key = "{cert}" }}

[pools.owa]
servers = [{{ name = "cas1", address = "127.0.0.1:{free_port()}" }}]
check = false
""")
    log = tmp_path / "caslb.log"

    async def served() -> str:
        client = await connect(https, tmp_path)
        try:
            return fingerprint(client)
        finally:
            await client.aclose()

    async def reloaded(line: str) -> None:
        with trio.fail_after(20):
            while line not in log.read_text():
                await trio.sleep(0.05)

    with log.open("w") as stderr:
        process = await trio.lowlevel.open_process(
            [*CASLB, "run", str(config)], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        await wait_status(f"http://127.0.0.1:{admin_port}", process)
        assert await served() == old
        cert.write_text("renewed by a script that went wrong\n")
        process.send_signal(signal.SIGHUP)
        await reloaded("reload refused: frontends.https.tls.cert:")
        assert await served() == old
        new = issue(ca, cert)
        # The admin API's action, this time: the same reload as SIGHUP.
        await trio.to_thread.run_sync(post, f"http://127.0.0.1:{admin_port}/reload")
        await reloaded(f"renewed on disk: {cert}")
        await reloaded("reloaded ")
        assert await served() == new
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await process.wait() == 0
