"""Start-up failures of `caslb run`, `demo`, `farm` and `probe`: one line naming the cause.

Configuration problems exit 2, other start-up failures (an address taken)
exit 1; none prints a traceback.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from lb.cli.demo import LAB
from tests.smoke.test_cli_run import CASLB, free_port

pytestmark = pytest.mark.smoke

CONFIG = """\
[exchange]
namespace = "mail.lab.local"
mode = "l7"
bind = "127.0.0.1"
servers = [ {{ name = "cas1", address = "127.0.0.11", fqdn = "cas1.lab.local" }} ]
protocols = ["owa"]
tls = {{ cert = "{cert}", key = "{key}" }}
listen = {{ https = {https} }}
{extra}
[admin]
bind = "127.0.0.1:{admin}"
"""


def caslb(*args: str, cwd: Path | None = None) -> tuple[int, list[str]]:
    result = subprocess.run([*CASLB, *args], capture_output=True, text=True, timeout=60,
                            cwd=cwd)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return result.returncode, result.stderr.strip().splitlines()


@contextlib.contextmanager
def held(host: str, port: int) -> Iterator[None]:
    """Hold (host, port) as another process would; already listened on elsewhere is as good.

    SO_REUSEADDR lets the bind succeed over connections an earlier test left in
    TIME_WAIT on that port, which would otherwise leave the port unheld.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError:
            with socket.create_connection((host, port), timeout=2):
                pass  # someone else listens there: the port is taken all the same
        yield


def write_config(tmp_path: Path, *, https: int, admin: int, cert: str = "mail.pem",
                 key: str = "mail.pem", extra: str = "") -> Path:
    ca = trustme.CA()
    issued = ca.issue_cert("mail.lab.local")
    (tmp_path / "mail.pem").write_bytes(b"".join(b.bytes() for b in issued.cert_chain_pems)
                                        + issued.private_key_pem.bytes())
    ca.issue_cert("other.lab.local").private_key_pem.write_to_path(str(tmp_path / "other.key"))
    path = tmp_path / "caslb.toml"
    path.write_text(CONFIG.format(cert=cert, key=key, https=https, admin=admin, extra=extra))
    return path


def test_run_names_a_frontend_address_in_use_and_exits_1(tmp_path: Path) -> None:
    https = free_port()
    config = write_config(tmp_path, https=https, admin=free_port())
    with held("127.0.0.1", https):
        code, lines = caslb("run", str(config))
    assert (code, lines) == (1, [
        f"error: cannot listen on 127.0.0.1:{https} for frontend https: address already in use"])


def test_run_names_the_admin_address_in_use(tmp_path: Path) -> None:
    admin = free_port()
    config = write_config(tmp_path, https=free_port(), admin=admin)
    with held("127.0.0.1", admin):
        code, lines = caslb("run", str(config))
    assert (code, lines) == (1, [
        f"error: cannot listen on 127.0.0.1:{admin} for the admin API: address already in use"])


@pytest.mark.parametrize(("cert", "key", "expected"), [
    ("gone.pem", "mail.pem", "frontends.https.tls.cert: file '{dir}/gone.pem' does not exist"),
    ("mail.pem", "other.key", "frontends.https.tls.key: '{dir}/other.key' is not the key of "
                              "'{dir}/mail.pem'"),
], ids=["missing", "mismatch"])
def test_run_with_a_bad_certificate_names_the_key_path_and_exits_2(
    tmp_path: Path, cert: str, key: str, expected: str,
) -> None:
    config = write_config(tmp_path, https=free_port(), admin=free_port(), cert=cert, key=key)
    code, lines = caslb("run", str(config))
    assert code == 2
    assert lines[0] == "error: " + expected.format(dir=tmp_path)


def test_probe_with_a_ca_file_that_does_not_load_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    config = write_config(tmp_path, https=free_port(), admin=free_port(),
                          extra='ca_file = "ca.pem"')
    code, lines = caslb("probe", str(config))
    assert code == 2
    assert len(lines) == 1 and "ca.pem" in lines[0] and lines[0].startswith("error: ")


def test_farm_with_its_port_taken_prints_one_line(tmp_path: Path) -> None:
    with held("127.0.0.13", 5587):
        code, lines = caslb("farm", "--run-for", "1", "--cert-dir", str(tmp_path / "certs"))
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error: cannot start the farm, addresses in use: ")
    assert "127.0.0.13:5587 (cas3 submission): address already in use" in lines[0]
    assert not (tmp_path / "certs").exists()


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    if not folder.exists():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}


def test_demo_with_an_address_taken_refuses_and_leaves_its_certificates_alone() -> None:
    certs = LAB.parent / "lab-certs"
    before = _snapshot(certs)
    with held("127.0.0.1", 5588):  # lab.toml's submission frontend
        code, lines = caslb("demo")
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error: cannot start the demo, addresses in use: ")
    assert "127.0.0.1:5588 (frontend submission): address already in use" in lines[0]
    assert _snapshot(certs) == before
