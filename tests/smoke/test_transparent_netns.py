"""Transparent source addresses on a real network: the server sees the client's address.

Three namespaces (tests/netns.py) stand for three hosts, in IPv4 and IPv6: a
client on 192.0.2.0/24 and 2001:db8:1::/64, the balancer on both networks, a
server on 198.51.100.0/24 and 2001:db8:2::/64 whose default route is the
balancer. `caslb run` in the balancer's namespace serves eight frontends, each
through its own pool: L4 and L7, each family, with `transparent = true` and
without. The server answers each request with the address it sees. A second
`caslb run` beside it, started without the capabilities IP_TRANSPARENT needs,
shows how that fails. The balancer gets the routing docs/operations.md asks
for ("Transparent source addresses"), set up here command for command.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import netns

pytestmark = pytest.mark.smoke

SERVER_PORT = 8080
PEER_ADDRESS_SERVER = Path(__file__).parents[1] / "peer_address.py"


@dataclass(frozen=True)
class Family:
    """One address family of the lab: each host's address, and `ip`'s flag for it."""

    name: str
    client: str
    vip: str  # the balancer, on the clients' network
    balancer: str  # the balancer, on the servers' network
    server: str
    prefix: int  # of both networks
    flag: str  # "-4" or "-6"
    anywhere: str  # "0.0.0.0/0" or "::/0"


V4 = Family("v4", "192.0.2.10", "192.0.2.1", "198.51.100.1", "198.51.100.11", 24, "-4",
            "0.0.0.0/0")
V6 = Family("v6", "2001:db8:1::10", "2001:db8:1::1", "2001:db8:2::1", "2001:db8:2::11", 64,
            "-6", "::/0")
FAMILIES = (V4, V6)

# Replies to client addresses reach the balancer (the server routes through it):
# packets of a transparent socket are marked, and marked packets delivered locally.
DIVERT = """
table inet caslb {
  chain divert {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
  }
}
"""


def local_delivery(family: Family) -> list[tuple[str, ...]]:
    """The balancer's policy routing: `ip` arguments, one command each."""
    return [(family.flag, "rule", "add", "fwmark", "1", "lookup", "100"),
            (family.flag, "route", "add", "local", family.anywhere, "dev", "lo", "table", "100")]


def host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class Frontend:
    """One frontend and its pool: a wing, a family, transparent or not."""

    mode: str  # "tcp" (L4) or "http" (L7)
    family: Family
    transparent: bool
    port: int

    @property
    def name(self) -> str:
        wing = "l4" if self.mode == "tcp" else "l7"
        source = "transparent" if self.transparent else "own-address"
        return f"{wing}-{source}-{self.family.name}"

    @property
    def seen(self) -> str:
        """The address the server should see."""
        return self.family.client if self.transparent else self.family.balancer

    def toml(self) -> list[str]:
        route = "pool" if self.mode == "tcp" else "default_pool"
        return [f"[frontends.{self.name}]", f'bind = "{host_port(self.family.vip, self.port)}"',
                f'mode = "{self.mode}"', f'{route} = "{self.name}"',
                f"[pools.{self.name}]", f'servers = ["cas1-{self.family.name}"]',
                f"transparent = {str(self.transparent).lower()}"]


FRONTENDS = [
    Frontend(mode, family, transparent, port)
    for port, (family, mode, transparent) in enumerate(
        ((f, m, t) for f in FAMILIES for m in ("tcp", "http") for t in (True, False)), 8001)
]


# Without the capabilities IP_TRANSPARENT needs: each connect fails, refused as a
# dead server's would be (a reset at L4, a 503 at L7).
UNPRIVILEGED = [Frontend("tcp", V4, True, 9001), Frontend("http", V4, True, 9002)]
WITHOUT_CAPABILITIES = ["setpriv", "--bounding-set", "-net_admin,-net_raw"]


def config(frontends: list[Frontend], admin_port: int) -> str:
    lines = ['grace = "1s"', "[admin]", f'bind = "127.0.0.1:{admin_port}"']
    for family in FAMILIES:
        lines += [f"[servers.cas1-{family.name}]",
                  f'address = "{host_port(family.server, SERVER_PORT)}"']
    for frontend in frontends:
        lines += frontend.toml()
    return "\n".join(lines) + "\n"


def wait_for(predicate: Callable[[], bool], what: str, log: Path) -> None:
    """Poll `predicate` until true; bounded, and the balancer's log in the failure."""
    deadline = time.monotonic() + 20
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}; balancer log:\n{log.read_text()}")
        time.sleep(0.05)


def start_caslb(balancer: netns.Namespace, config_text: str, work: Path,
                *, prefix: list[str] | None = None) -> Path:
    """`caslb run` on `config_text` in the balancer's namespace, once it serves; its log."""
    name = f"caslb-{len(balancer.processes)}"
    (work / f"{name}.toml").write_text(config_text)
    log = work / f"{name}.log"
    with log.open("wb") as stderr:
        caslb = balancer.start(
            [*(prefix or []), sys.executable, "-c", "from lb.cli import main; main()", "run",
             str(work / f"{name}.toml"), "--no-access-log"], stderr=stderr)
    wait_for(lambda: caslb.poll() is not None or b"caslb serving" in log.read_bytes(),
             "caslb never served", log)
    assert caslb.poll() is None, f"caslb exited:\n{log.read_text()}"
    return log


@dataclass(frozen=True)
class Rig:
    """The lab as the tests use it: the client's namespace, and the log of the
    caslb that runs without the capabilities."""

    client: netns.Namespace
    unprivileged_log: Path


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The client, with two caslb (root, and without capabilities) and the server behind it."""
    work = tmp_path_factory.mktemp("transparent")
    with netns.lab() as lab:
        client, balancer, server = (lab.namespace(role) for role in ("client", "lb", "cas1"))
        lab.link(client, [f"{f.client}/{f.prefix}" for f in FAMILIES],
                 balancer, [f"{f.vip}/{f.prefix}" for f in FAMILIES])
        lab.link(balancer, [f"{f.balancer}/{f.prefix}" for f in FAMILIES],
                 server, [f"{f.server}/{f.prefix}" for f in FAMILIES])
        balancer.must("nft", "-f", "-", stdin=DIVERT)
        for family in FAMILIES:
            for args in local_delivery(family):
                balancer.ip(*args)
            server.ip(family.flag, "route", "add", "default", "via", family.balancer)
            peer_server = server.start(
                [sys.executable, str(PEER_ADDRESS_SERVER), family.server, str(SERVER_PORT)],
                stdout=-1)
            assert peer_server.stdout is not None
            assert peer_server.stdout.readline() == b"listening\n"
        start_caslb(balancer, config(FRONTENDS, 9090), work)
        log = start_caslb(balancer, config(UNPRIVILEGED, 9091), work, prefix=WITHOUT_CAPABILITIES)
        yield Rig(client, log)


def get(client: netns.Namespace, frontend: Frontend) -> subprocess.CompletedProcess[bytes]:
    url = f"http://{host_port(frontend.family.vip, frontend.port)}/owa/"
    return client.run("curl", "-s", "-S", "--globoff", "--max-time", "5",
                      "--write-out", " %{http_code}", url)


@pytest.mark.parametrize("frontend", FRONTENDS, ids=lambda frontend: frontend.name)
def test_the_server_sees_the_clients_address_only_through_a_transparent_pool(
    rig: Rig, frontend: Frontend
) -> None:
    result = get(rig.client, frontend)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == f"{frontend.seen} 200"


def test_without_the_capabilities_a_transparent_connect_fails_as_a_dead_server(
    rig: Rig,
) -> None:
    l4, l7 = (get(rig.client, frontend) for frontend in UNPRIVILEGED)
    assert l4.returncode != 0 and l4.stdout.decode() == " 000", l4  # reset, nothing relayed
    assert l7.returncode == 0 and l7.stdout.decode().endswith(" 503"), l7
    log = rig.unprivileged_log.read_text()
    assert "l4-transparent-v4/cas1-v4: connect denied" in log, log
    assert "connect to cas1-v4 failed: cas1-v4: [Errno 1] Operation not permitted" in log, log
