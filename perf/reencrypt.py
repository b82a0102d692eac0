"""Re-encryption bench: every client connection opens a TLS connection to the server.

    python -m perf.reencrypt [--seconds S] [--connections N] [--rounds R]

An Exchange farm behind an L7 balancer is re-encrypted, and caslb ties each
client connection to an upstream of its own (NTLM authenticates the TCP
connection), so a new client costs a TLS handshake toward the server. This
bench measures that cost alone: wrk sends `Connection: close` on plain HTTP to
the proxy, so each request is a new client connection and a new TLS upstream.

- the server: HAProxy terminating TLS (a lab-CA ECDSA P-256 certificate) and
  answering every request itself, so it is never the bottleneck;
- `caslb run CONFIG`: one plain http frontend, a pool re-encrypting to the
  server (`tls = { ca_file }`, verified), a TLS healthcheck check every 2 s;
- HAProxy `mode http`: the same, `server ... ssl verify required ca-file`
  (HAProxy resumes its TLS sessions to a server by default).

Each round prints requests/s, p50, the proxy's CPU per request from /proc and
wrk's errors (socket errors and answers other than 2xx/3xx);
rounds alternate between the proxies, since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from casfarm.certs import FarmCA

from perf import caslbrun, l7bench
from perf.l7bench import BACKEND_CFG, CASLB_CFG, CHECK, HOST, PROXY_CFG, haproxy
from perf.net import free_port

SERVER_FQDN = "cas1.lab.local"

POOL = """
[pools.bench]
servers = [{{ name = "cas1", address = "{host}:{target}", fqdn = "{fqdn}" }}]
tls = {{ ca_file = "{ca}" }}

[pools.bench.check]
kind = "healthcheck"
path = "{check}"
tls = true
ca_file = "{ca}"
inter = "2s"
rise = 1
"""

# l7bench's HAProxy proxy, its server line re-encrypting (resumption is its default)
HAPROXY_CFG = PROXY_CFG.replace(
    "server s1 {host}:{target} check",
    "server s1 {host}:{target} ssl verify required ca-file {ca} sni str({fqdn}) check")


def bench(seconds: float, connections: int, rounds: int) -> int:
    missing = l7bench.missing_tools()
    if missing:
        print(f"reencrypt: skipped, missing {', '.join(missing)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="reencrypt-") as tmp:
        work = Path(tmp)
        ca = FarmCA(work / "certs")
        pem = ca.server_tls("cas1", SERVER_FQDN, "lab.local", HOST).cert_path
        target = free_port()
        server = BACKEND_CFG.format(host=HOST, port=target, check=CHECK).replace(
            f"bind {HOST}:{target}", f"bind {HOST}:{target} ssl crt {pem}")
        names = dict(host=HOST, target=target, ca=ca.ca_path, fqdn=SERVER_FQDN, check=CHECK)
        caslb_port, haproxy_port, admin = free_port(), free_port(), free_port()
        cfg = work / "caslb.toml"
        cfg.write_text(CASLB_CFG.format(host=HOST, port=caslb_port, admin=admin)
                       + POOL.format(**names))
        with (
            haproxy(server, target, work),
            caslbrun.running(cfg, [caslb_port], admin) as caslb_proc,
            haproxy(HAPROXY_CFG.format(port=haproxy_port, **names), haproxy_port, work) as hap,
        ):
            proxies = {"caslb": (caslb_port, caslb_proc.pid), "haproxy": (haproxy_port, hap)}
            for port, pid in proxies.values():
                l7bench.wrk(port, connections, 1, pid, close=True)  # warm-up: handshakes, imports
            print(f"new connection per request, {connections} connections, re-encrypted")
            print(f"{'proxy':8} {'req/s':>8} {'p50 ms':>8} {'CPU µs/req':>11} {'errors':>7} "
                  f"{'load':>5}")
            for _ in range(rounds):
                for name, (port, pid) in proxies.items():
                    m = l7bench.wrk(port, connections, seconds, pid, close=True)
                    print(f"{name:8} {m.rps:8.0f} {m.p50_ms:8.2f} {m.cpu_us or 0:11.0f} "
                          f"{m.errors:7d} {os.getloadavg()[0]:5.1f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.reencrypt", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per round (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="per proxy (default 3)")
    args = parser.parse_args(argv)
    return bench(args.seconds, args.connections, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
