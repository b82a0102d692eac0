"""Transparent source addresses on a real network: the server sees the client's address.

Three namespaces (tests/netns.py) stand for three hosts: a client on
192.0.2.0/24, the balancer on both networks, a server on 198.51.100.0/24 whose
default route is the balancer. `caslb run` in the balancer's namespace serves
four frontends to one server, each through its own pool: L4 and L7, with
`transparent = true` and without. The server answers each request with the
address it sees. The balancer gets the routing docs/operations.md asks for
("Transparent source addresses"), set up here command for command.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import netns

pytestmark = pytest.mark.smoke

CLIENT = "192.0.2.10"
VIP = "192.0.2.1"  # the balancer, on the clients' network
BALANCER = "198.51.100.1"  # the balancer, on the servers' network
SERVER = "198.51.100.11"
SERVER_PORT = 8080

FRONTENDS = {  # frontend (and its pool) → (port, mode, transparent)
    "l4-transparent": (8001, "tcp", True),
    "l7-transparent": (8002, "http", True),
    "l4-own-address": (8003, "tcp", False),
    "l7-own-address": (8004, "http", False),
}

# Replies to client addresses reach the balancer (the server routes through it);
# these deliver them to the transparent sockets instead of forwarding them.
DIVERT = """
table ip caslb {
  chain divert {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
  }
}
"""
LOCAL_ROUTING = (("rule", "add", "fwmark", "1", "lookup", "100"),
                 ("route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"))


def config() -> str:
    lines = ['grace = "1s"', "[admin]", 'bind = "127.0.0.1:9090"',
             "[servers.cas1]", f'address = "{SERVER}:{SERVER_PORT}"']
    for name, (port, mode, transparent) in FRONTENDS.items():
        route = "pool" if mode == "tcp" else "default_pool"
        lines += [f"[frontends.{name}]", f'bind = "{VIP}:{port}"', f'mode = "{mode}"',
                  f'{route} = "{name}"', f"[pools.{name}]", 'servers = ["cas1"]',
                  f"transparent = {str(transparent).lower()}"]
    return "\n".join(lines) + "\n"


def wait_for(predicate: Callable[[], bool], what: str, log: Path) -> None:
    """Poll `predicate` until true; bounded, and the balancer's log in the failure."""
    deadline = time.monotonic() + 20
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}; balancer log:\n{log.read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netns.Namespace]:
    """The client's namespace, with the balancer and the server running behind it."""
    work = tmp_path_factory.mktemp("transparent")
    (work / "caslb.toml").write_text(config())
    log = work / "caslb.log"
    with netns.lab() as lab:
        client, balancer, server = (lab.namespace(role) for role in ("client", "lb", "cas1"))
        lab.link(client, f"{CLIENT}/24", balancer, f"{VIP}/24")
        lab.link(balancer, f"{BALANCER}/24", server, f"{SERVER}/24")
        server.ip("route", "add", "default", "via", BALANCER)
        balancer.must("nft", "-f", "-", stdin=DIVERT)
        for args in LOCAL_ROUTING:
            balancer.ip(*args)

        peer_server = server.start(
            [sys.executable, str(Path(__file__).parents[1] / "peer_address.py"), SERVER,
             str(SERVER_PORT)], stdout=-1)
        assert peer_server.stdout is not None and peer_server.stdout.readline() == b"listening\n"
        with log.open("wb") as stderr:
            caslb = balancer.start(
                [sys.executable, "-c", "from lb.cli import main; main()", "run",
                 str(work / "caslb.toml"), "--no-access-log"], stderr=stderr)
        wait_for(lambda: caslb.poll() is not None or b"caslb serving" in log.read_bytes(),
                 "caslb never served", log)
        assert caslb.poll() is None, f"caslb exited:\n{log.read_text()}"
        yield client


@pytest.mark.parametrize(("frontend", "seen"), [
    ("l4-transparent", CLIENT),
    ("l7-transparent", CLIENT),
    ("l4-own-address", BALANCER),
    ("l7-own-address", BALANCER),
])
def test_the_server_sees_the_clients_address_only_through_a_transparent_pool(
    client: netns.Namespace, frontend: str, seen: str
) -> None:
    port = FRONTENDS[frontend][0]
    result = client.run("curl", "-s", "-S", "--max-time", "5", f"http://{VIP}:{port}/owa/")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == seen
