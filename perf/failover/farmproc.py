"""The farm process: a casfarm on loopback driven by JSON lines on stdin.

Run by the harness as `python -m perf.failover.farmproc --servers 3 ...`. It
prints one JSON line describing the farm (servers, addresses, ports, CA), then
answers one JSON line per command read on stdin:

    {"op": "inject", "server": "cas1", "fault": "crash", "params": {}}
    {"op": "clear", "server": "cas1", "fault": "crash"}
    {"op": "set_component", "server": "cas1", "component": "EwsProxy",
     "state": "Inactive", "requester": "HealthApi"}
    {"op": "counts"}

Replies are {"ok": true, ...} or {"ok": false, "error": "..."}. It exits when
stdin closes. A bad command gets an error reply; it never stops the farm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import casfarm
import trio


def describe(farm: Any) -> dict[str, Any]:
    """The farm as the harness needs to know it."""
    return {
        "servers": [
            {"name": s.name, "fqdn": s.fqdn, "host": s.host, "ports": dict(s.ports)}
            for s in farm.servers
        ],
        "ca_path": str(farm.ca_path),
    }


def counts(farm: Any) -> dict[str, int]:
    """Real requests (and mail sessions) per server, health checks excluded."""
    return {s.name: farm.counts(s.name).total_requests for s in farm.servers}


def handle(farm: Any, command: dict[str, Any]) -> dict[str, Any]:
    """Carry out one command."""
    op = command.get("op")
    if op == "inject":
        farm.inject(command["server"], command["fault"], **command.get("params", {}))
    elif op == "clear":
        farm.clear(command["server"], command.get("fault"))
    elif op == "set_component":
        farm.set_component(
            command["server"],
            command["component"],
            command["state"],
            requester=command.get("requester", "Maintenance"),
        )
    elif op == "counts":
        return {"ok": True, "counts": counts(farm)}
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"ok": True}


async def serve(args: argparse.Namespace) -> None:
    """Run the farm until stdin closes."""
    async with casfarm.running(
        servers=args.servers,
        heartbeat=args.heartbeat,
        pending_period=args.pending_period,
        health_cache_delay=args.health_cache_delay,
        cert_dir=args.cert_dir,
        namespace=args.namespace,
        control=False,
        hosts=args.hosts.split(",") if args.hosts else None,
        base_ports={"https": args.https_port} if args.https_port else None,
        auth=[v for v in args.auth_vdirs.split(",") if v],
    ) as farm:
        print(json.dumps({"ready": describe(farm)}), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        async with stdin:
            while data := await stdin.receive_some(65536):
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        reply = handle(farm, json.loads(line))
                    except Exception as exc:  # a bad command must not stop the farm
                        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    print(json.dumps(reply), flush=True)


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(prog="python -m perf.failover.farmproc")
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--pending-period", type=float, default=1.0)
    parser.add_argument("--health-cache-delay", type=float, default=0.0)
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--auth-vdirs", default="", help="comma-separated vdirs that log on")
    parser.add_argument("--namespace", default="mail.lab.local")
    # A farm in a network namespace of its own (perf ha): its addresses and HTTPS port.
    parser.add_argument("--hosts", default="", help="comma-separated, one per server")
    parser.add_argument("--https-port", type=int, default=0)
    trio.run(serve, parser.parse_args())


if __name__ == "__main__":
    main()
