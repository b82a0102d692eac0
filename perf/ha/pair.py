"""Two caslb nodes with keepalived, a casfarm and a client, each in a namespace on one LAN.

    lan (bridge br0)
     ├── lb1     172.30.71.11  caslb + keepalived (examples/keepalived/keepalived-master.conf)
     ├── lb2     172.30.71.12  caslb + keepalived (examples/keepalived/keepalived-backup.conf)
     ├── farm    172.30.71.21-23  casfarm: cas1..cas3, HTTPS on 443
     └── client  172.30.71.100    the user, and the operator's `caslb drain`
    VIP 172.30.71.10, held by one node at a time over VRRP.

Both nodes run the same caslb config, as the README recommends: L4 passthrough on
the VIP (bound before the node owns it: net.ipv4.ip_nonlocal_bind). Only `[admin] bind`
differs: each node's own address, with a token, so that one `caslb drain` from the
client reaches both (the admin API answers only Host values naming its bound address,
so a wildcard bind would refuse them all).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perf.caslbrun import servers_up
from perf.failover.designs.caslb import CASLB_COMMAND
from perf.failover.procs import REPO_ROOT, python
from perf.ha import keepalived
from perf.ha.netns import Lan

SUBNET = "172.30.71"
VIP = f"{SUBNET}.10"
NODES = {"lb1": f"{SUBNET}.11", "lb2": f"{SUBNET}.12"}
CLIENT = f"{SUBNET}.100"
FARM = [f"{SUBNET}.{21 + i}" for i in range(3)]
ADMIN_PORT = 9090
TOKEN = "ha-pair-token"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

CONFIG = """\
[exchange]
namespace = "mail.lab.local"
mode = "l4"
bind = "{vip}"
protocols = ["owa"]
servers = [
{servers}
]
ports = {{ https = 443 }}
listen = {{ https = 443 }}
ca_file = "{ca}"
inter = "1s"
fastinter = "250ms"
fall = 2
timeout = "1s"

[admin]
bind = "{node}:{admin}"
token = "{token}"
"""


def caslb_config(ca_file: Path, node: str) -> str:
    """The caslb config of `node`: the same on both but for the admin address."""
    servers = ",\n".join(
        f'  {{ name = "cas{i + 1}", address = "{a}", fqdn = "cas{i + 1}.lab.local" }}'
        for i, a in enumerate(FARM))
    return CONFIG.format(vip=VIP, servers=servers, ca=ca_file, node=NODES[node],
                         admin=ADMIN_PORT, token=TOKEN)


def admin_url(node: str) -> str:
    """`node`'s admin API, as the client and the node itself reach it."""
    return f"http://{NODES[node]}:{ADMIN_PORT}"


def wait_for(what: str, ready: Callable[[], bool], limit: float, interval: float = 0.02) -> float:
    """Poll `ready` until true; the monotonic time it was first seen true.

    Raises:
        RuntimeError: not within `limit` seconds, naming `what`.
    """
    deadline = time.monotonic() + limit
    while True:
        if ready():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {limit:g}s")
        time.sleep(interval)


class Requests:
    """The client's JSON lines, read by a thread as they come."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with self._lock:
                self.lines.append(json.loads(raw))

    def snapshot(self) -> list[dict[str, Any]]:
        """Every request so far, in the order they ended."""
        with self._lock:
            return list(self.lines)

    def served_since(self, moment: float) -> list[dict[str, Any]]:
        """The successful requests that started at or after `moment`."""
        return [r for r in self.snapshot() if r["error"] is None and r["started"] >= moment]


class Pair:
    """The whole rig; `close` (or the `with` block's end) stops and deletes everything."""

    def __init__(self, folder: Path) -> None:
        """Create the LAN; start nothing yet."""
        self.folder = folder
        self.caslb: dict[str, subprocess.Popen[bytes]] = {}
        self.farm: subprocess.Popen[bytes] | None = None
        self.script = keepalived.install_script()
        try:
            self.lan = Lan({"lb1": [NODES["lb1"]], "lb2": [NODES["lb2"]], "client": [CLIENT],
                            "farm": FARM})
        except BaseException:
            shutil.rmtree(self.script.parent, ignore_errors=True)
            raise
        try:
            for node in NODES:
                self.lan.sysctl(node, "net.ipv4.ip_nonlocal_bind", "1")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End every process, delete every namespace."""
        if self.farm is not None and self.farm.stdin is not None:
            self.farm.stdin.close()
        self.lan.close()
        shutil.rmtree(self.script.parent, ignore_errors=True)

    def log(self, name: str) -> Path:
        """The log file of one process of the rig."""
        return self.folder / f"{name}.log"

    def start_farm(self, limit: float = 20.0) -> Path:
        """Start casfarm in `farm`; its CA file, once every server listens."""
        certs = self.folder / "farm-certs"
        self.farm = self.lan.start("farm", [
            python(), "-m", "perf.failover.farmproc", "--cert-dir", str(certs),
            "--hosts", ",".join(FARM), "--https-port", "443"],
            log=self.log("farm"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV)
        assert self.farm.stdout is not None
        ready, _, _ = select.select([self.farm.stdout], [], [], limit)
        line = self.farm.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"casfarm did not start: {self.log('farm').read_text()}")
        return Path(json.loads(line)["ready"]["ca_path"])

    def start_caslb(self, node: str, ca_file: Path) -> None:
        """Start caslb on `node`; returns at once (see `wait_caslb`)."""
        config = self.folder / f"caslb-{node}.toml"
        config.write_text(caslb_config(ca_file, node))
        self.caslb[node] = self.lan.start(
            node, [*CASLB_COMMAND, "run", str(config), "--no-access-log"],
            log=self.log(f"caslb-{node}"), env=ENV)

    def status(self, node: str) -> dict[str, Any] | None:
        """`GET /status` on `node`'s admin API, from inside the node; None if it fails."""
        try:
            out = self.lan.run(node, ["curl", "-fsS", "--max-time", "1",
                                      f"{admin_url(node)}/status"])
            document: dict[str, Any] = json.loads(out)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            return None
        return document

    def wait_caslb(self, node: str, limit: float = 20.0) -> float:
        """Until `node`'s caslb shows every server UP with a passed check.

        Raises:
            RuntimeError: caslb exited, or was not ready within `limit` seconds; quoting
                its log and the last check of each server.
        """
        seen: list[dict[str, Any] | None] = [None]

        def up() -> bool:
            if self.caslb[node].poll() is not None:
                raise RuntimeError(f"caslb on {node} exited: "
                                   f"{self.log(f'caslb-{node}').read_text()}")
            seen[0] = self.status(node)
            return seen[0] is not None and servers_up(seen[0])

        try:
            return wait_for(f"caslb on {node} ready", up, limit, interval=0.1)
        except RuntimeError as exc:
            checks = [(s["name"], s["state"], s.get("last_check"))
                      for pool in (seen[0] or {}).get("pools", {}).values()
                      for s in pool["servers"]]
            raise RuntimeError(f"{exc}; servers {checks}") from None

    def kill_caslb(self, node: str) -> float:
        """SIGKILL `node`'s caslb, as a crash would; the moment it was sent."""
        proc = self.caslb.pop(node)
        moment = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return moment

    def cut_off_farm(self, node: str) -> float:
        """Make every CAS server unreachable from `node`, as a broken link would; when."""
        moment = time.monotonic()
        for address in FARM:
            self.lan.run(node, ["ip", "route", "add", "unreachable", f"{address}/32"])
        return moment

    def start_keepalived(self, node: str) -> None:
        """Start keepalived on `node` with its example config."""
        run_dir = self.folder / f"keepalived-{node}"
        run_dir.mkdir()
        config = run_dir / "keepalived.conf"
        config.write_text(keepalived.node_config(node, VIP, NODES, self.script))
        self.lan.start(node, keepalived.argv(config, run_dir), log=self.log(f"keepalived-{node}"))

    def entered(self, node: str, state: str) -> int:
        """How many times `node`'s keepalived logged entering `state` (MASTER, BACKUP...)."""
        path = self.log(f"keepalived-{node}")
        text = path.read_text(errors="replace") if path.exists() else ""
        return text.count(f"Entering {state} STATE")

    def vip_holder(self) -> list[str]:
        """The nodes that have the VIP on their interface (one, except mid-move)."""
        return [node for node in NODES if VIP in self.lan.addresses(node)]

    def start_client(self, ca_file: Path) -> Requests:
        """Start the client in `client`, requesting through the VIP."""
        proc = self.lan.start("client", [python(), "-m", "perf.ha.client", VIP,
                                         str(ca_file)],
                              log=self.log("client"), stdout=subprocess.PIPE, env=ENV)
        return Requests(proc)

    def caslb_cli(self, *args: str) -> str:
        """Run `caslb ARGS` from the client namespace, as an operator would; its output."""
        return self.lan.run("client", [*CASLB_COMMAND, *args], timeout=30.0)
