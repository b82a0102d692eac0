"""Start the origin, iperf3 and each proxy from the config files of perf.matrix.configs.

Every process is a context manager that stops it (SIGTERM, then SIGKILL) when the
block ends, however it ends, so an error or Ctrl-C leaves nothing behind. The
pids started are recorded in `STARTED` for the report (and the smoke test, which
checks they are gone).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from perf import caslbrun, tools
from perf.matrix import configs, peer
from perf.matrix.configs import L4Ports, L7Ports
from perf.matrix.plan import DIRECT
from perf.net import free_port, wait_listening

STARTED: list[int] = []


def pin(cores: str) -> list[str]:
    """`taskset -c CORES`, or nothing on a one-core machine."""
    return ["taskset", "-c", cores] if (os.cpu_count() or 1) > 1 else []


# The proxy on core 1, the load, the origin and iperf3 on core 0: the proxy's
# core is its own. caslb --workers 2 gets both cores, as its workers are meant to.
PROXY_PIN = "1"
CLIENT_PIN = "0"
CORES = {"caslb-2w": "0,1"}


@contextlib.contextmanager
def started(argv: Sequence[str], log: Path, ports: Sequence[int]) -> Iterator[int]:
    """Run `argv` (its output to `log`) until the block ends; yields its pid once `ports` accept."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    STARTED.append(proc.pid)
    try:
        try:
            for port in ports:
                wait_listening(port, 30, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log.read_text(errors='replace')[-2000:]}") from None
        yield proc.pid
    finally:
        caslbrun.stop(proc)


@dataclass(frozen=True)
class Origin:
    """The origin nginx (static bodies) and the iperf3 server behind every proxy."""

    http: int
    iperf: int
    pid: int  # the origin nginx: wrk's "direct" rows read its CPU


@contextlib.contextmanager
def origin(workdir: Path, bodies: dict[str, int]) -> Iterator[Origin]:
    """nginx serving one file per body size (and caslb's health page), and iperf3 -s."""
    www = workdir / "www"
    (www / "bench").mkdir(parents=True, exist_ok=True)
    (www / "owa").mkdir(exist_ok=True)
    (www / "owa" / "healthcheck.htm").write_text("200 OK")
    for name, size in bodies.items():
        (www / configs.body_path(name).lstrip("/")).write_bytes(b"x" * size)
    http, iperf = free_port(), free_port()
    cfg = workdir / "origin.conf"
    cfg.write_text(configs.nginx_origin(workdir, http))
    nginx = tools.which("nginx") or "nginx"
    iperf3 = ["iperf3", "-s", "-B", configs.HOST, "-p", str(iperf)]
    with (
        started([*pin(CLIENT_PIN), nginx, "-c", str(cfg)], workdir / "origin.log", [http]) as pid,
        started([*pin(CLIENT_PIN), *iperf3], workdir / "iperf3.log", [iperf]),
    ):
        yield Origin(http, iperf, pid)


@dataclass(frozen=True)
class Proxy:
    """A proxy process serving the rows: its pid (its children are found from /proc)."""

    name: str
    pid: int
    ports: L7Ports | L4Ports


def _command(name: str, cfg: Path) -> list[str]:
    if name.startswith("haproxy"):
        return [tools.which("haproxy") or "haproxy", "-db", "-f", str(cfg)]
    if name == "nginx":
        return [tools.which("nginx") or "nginx", "-c", str(cfg)]
    if name == "mitmproxy":  # reads config.yaml from its confdir
        return [str(peer.mitmdump()), "--set", f"confdir={cfg.parent}"]
    raise ValueError(f"no proxy {name}")


@contextlib.contextmanager
def _proxy(name: str, cfg: Path, text: str, ports: L7Ports | L4Ports,
           listen: list[int], tree: Path | None = None, gc_timed: Path | None = None,
           profile: Path | None = None) -> Iterator[Proxy]:
    """Write `text` to `cfg` and run `name` on it until the block ends (caslb from
    `tree`, with its collections timed into `gc_timed` or under cProfile into
    `profile`, when given: see perf.caslbrun)."""
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(text)
    prefix = pin(CORES.get(name, PROXY_PIN))
    if name.startswith("caslb"):
        with caslbrun.running(cfg, listen, ports.admin, workers=2 if name == "caslb-2w" else 1,
                              prefix=prefix, limit=60, tree=tree, gc_timed=gc_timed,
                              profile=profile) as proc:
            STARTED.append(proc.pid)
            yield Proxy(name, proc.pid, ports)
        return
    with started([*prefix, *_command(name, cfg)], cfg.with_suffix(".log"), listen) as pid:
        yield Proxy(name, pid, ports)


@contextlib.contextmanager
def l7_proxy(name: str, origin_: Origin, pem: Path, workdir: Path, *,
             tree: Path | None = None, gc_timed: Path | None = None,
             profile: Path | None = None) -> Iterator[Proxy]:
    """`name`'s L7 process: a plain and a TLS frontend in front of the origin.

    "direct" starts nothing: its rows go straight to the origin (plain only).
    A caslb is imported from `tree` where given (perf.matrixrows' before/after).
    """
    if name == DIRECT:
        yield Proxy(name, origin_.pid, L7Ports(origin_.http, 0, origin_.http))
        return
    ports = L7Ports(free_port(), free_port(), origin_.http, free_port())
    texts = {
        "caslb": lambda: (workdir / f"{name}-l7.toml", configs.caslb_l7(ports, pem)),
        "haproxy": lambda: (workdir / "haproxy-l7.cfg", configs.haproxy_l7(ports, pem)),
        "nginx": lambda: (workdir / "nginx-l7.conf", configs.nginx_l7(workdir, ports, pem)),
        "mitmproxy": lambda: (workdir / "mitmproxy" / "config.yaml",
                              configs.mitmproxy_l7(ports, pem)),
    }
    cfg, text = texts["caslb" if name.startswith("caslb") else name]()
    with _proxy(name, cfg, text, ports, [ports.plain, ports.tls], tree, gc_timed,
                profile) as proxy:
        yield proxy


@contextlib.contextmanager
def l4_proxy(name: str, origin_: Origin, workdir: Path) -> Iterator[Proxy]:
    """`name`'s L4 process: tcp relays to iperf3 (bulk) and to the origin (idle rows)."""
    ports = L4Ports(free_port(), free_port(), origin_.iperf, origin_.http, free_port())
    texts = {
        "caslb": lambda: (workdir / f"{name}-l4.toml", configs.caslb_l4(ports)),
        "haproxy": lambda: (workdir / "haproxy-l4.cfg", configs.haproxy_l4(ports)),
        "haproxy-splice": lambda: (workdir / "haproxy-splice-l4.cfg",
                                   configs.haproxy_l4(ports, splice=True)),
        "nginx": lambda: (workdir / "nginx-l4.conf", configs.nginx_l4(workdir, ports)),
    }
    cfg, text = texts["caslb" if name.startswith("caslb") else name]()
    with _proxy(name, cfg, text, ports, [ports.bulk, ports.hold]) as proxy:
        yield proxy
