"""What a matrix run measures: the rows, as values, for the full run and for `--quick`.

Pure data: the runner walks a Plan, the report groups its results by the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass

# name -> bytes: the origin serves one static file of each size
BODIES = {"100B": 100, "10KiB": 10 * 1024, "1MiB": 1024 * 1024}

# the proxies an L7 row can go through, in the order of the tables
L7_PROXIES = ("caslb", "caslb-2w", "haproxy", "nginx", "mitmproxy")
# HAProxy's defaults, and its best bulk configuration (splice, 1 MiB pipes)
L4_PROXIES = ("caslb", "caslb-2w", "haproxy", "haproxy-splice", "nginx")
# wrk straight at the origin, at 1 connection: the latency each proxy adds is
# read against it
DIRECT = "direct"
PROXIES = ("caslb", "caslb-2w", "haproxy", "haproxy-splice", "nginx", "mitmproxy", DIRECT)
DIRECT_ROW_KEY = "l7 direct c1 100B plain ka"
IDLE_PROXIES = ("caslb", "haproxy", "nginx")
IDLE_LAYERS = ("l4", "l7", "l7-tls")
BASELINE = "haproxy"  # every throughput ratio is against it, in the same run


@dataclass(frozen=True)
class L7Row:
    """wrk through one proxy: `connections` at once, one body, TLS or not, kept alive or not."""

    proxy: str
    connections: int
    body: str
    tls: bool
    keepalive: bool

    @property
    def key(self) -> str:
        return (f"l7 {self.proxy} c{self.connections} {self.body} "
                f"{'tls' if self.tls else 'plain'} {'ka' if self.keepalive else 'close'}")

    @property
    def curve(self) -> tuple[str, bool, bool]:
        """The plot this row is a point of: body, TLS, keep-alive."""
        return self.body, self.tls, self.keepalive


@dataclass(frozen=True)
class L4Row:
    """iperf3 through one proxy's tcp frontend with `streams` parallel streams."""

    proxy: str
    streams: int

    @property
    def key(self) -> str:
        return f"l4 {self.proxy} P{self.streams}"


@dataclass(frozen=True)
class Plan:
    """Everything one run measures, and for how long."""

    seconds: float
    l7: tuple[L7Row, ...]
    l4: tuple[L4Row, ...]
    idle_counts: tuple[int, ...]
    idle_layers: tuple[str, ...]
    idle_proxies: tuple[str, ...]

    @property
    def proxies(self) -> tuple[str, ...]:
        """Every proxy the plan starts, in table order."""
        used = {r.proxy for r in (*self.l7, *self.l4)} | set(self.idle_proxies)
        return tuple(p for p in PROXIES if p in used)


def l7_rows(
    proxies: tuple[str, ...], connections: tuple[int, ...], bodies: tuple[str, ...],
    tls: tuple[bool, ...], keepalive: tuple[bool, ...],
) -> tuple[L7Row, ...]:
    """The cross product, grouped by proxy so that each one starts once."""
    return tuple(
        L7Row(p, c, b, t, k)
        for p in proxies for t in tls for k in keepalive for b in bodies for c in connections
    )


def _direct(proxies: tuple[str, ...]) -> tuple[L7Row, ...]:
    return (L7Row(DIRECT, 1, "100B", False, True),) if DIRECT in proxies else ()


def full(seconds: float, proxies: tuple[str, ...] = PROXIES) -> Plan:
    """The whole matrix of issue 12."""
    through = tuple(p for p in proxies if p in L7_PROXIES)
    return Plan(
        seconds=seconds,
        l7=l7_rows(through, (1, 16, 64, 256), tuple(BODIES), (False, True), (True, False))
        + _direct(proxies),
        l4=tuple(L4Row(p, s) for p in L4_PROXIES if p in proxies for s in (1, 8)),
        idle_counts=(1000, 5000, 10000),
        idle_layers=IDLE_LAYERS,
        idle_proxies=tuple(p for p in IDLE_PROXIES if p in proxies),
    )


def quick(seconds: float = 1.0) -> Plan:
    """The smoke subset: caslb against HAProxy, one body, two connection counts (and
    the origin direct at one), and HAProxy's splice configuration at L4."""
    proxies = ("caslb", BASELINE)
    return Plan(
        seconds=seconds,
        l7=l7_rows(proxies, (1, 16), ("100B",), (False,), (True,)) + _direct((DIRECT,)),
        l4=tuple(L4Row(p, 1) for p in (*proxies, "haproxy-splice")),
        idle_counts=(100, 200),
        idle_layers=("l4", "l7"),
        idle_proxies=proxies,
    )
