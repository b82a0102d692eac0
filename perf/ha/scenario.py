"""`perf ha`: crash the active caslb of a keepalived pair under a client, bring it back,
then cut the other node off from the farm.

The sequence, on the rig of perf.ha.pair:

1. casfarm, caslb on both nodes, keepalived on lb1 (it takes the VIP), then on lb2;
2. the client requests through the VIP the whole time;
3. `caslb drain cas1 --admin LB1 --admin LB2` from the client's namespace: one command,
   both nodes; from then on cas1 must answer nothing, whichever node serves;
4. SIGKILL lb1's caslb; keepalived's check fails, lb1 goes to FAULT and gives the VIP
   up; lb2 takes it. Measured: until the VIP is on lb2, until the first request that
   started after the kill is answered, and how many requests failed meanwhile;
5. restart lb1's caslb: lb1 goes back to BACKUP and, without preemption, leaves the VIP
   where it is. Measured: until lb1 is BACKUP again, and the client's errors then;
6. the drain again, since a restarted caslb starts with every server READY: the pair
   agrees again (read back from both admin APIs);
7. cut lb2 off from the farm (its routes to the CAS servers become unreachable): its
   caslb is alive but has no server left, the check fails with exit 2 and the VIP goes
   back to lb1. Measured as in 4; from then on lb1 serves with cas1 drained.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from perf.ha import keepalived
from perf.ha.netns import ip
from perf.ha.pair import TOKEN, Pair, Requests, admin_url, wait_for
from perf.tools import ensure

TOOLS = ("keepalived", "curl", "ip")
LIMIT = 20.0  # seconds any one step may take before the run fails
STEADY = 0.3  # seconds of traffic between the steps


@dataclass(frozen=True)
class HaResult:
    """What one run measured (seconds are monotonic differences)."""

    requests: int
    vip_moved_after: float  # kill → the VIP on lb2's interface
    served_after: float  # kill → first answer to a request started after the kill
    failover_errors: int  # failed requests that ended between the kill and that answer
    failback_after: float  # caslb restarted on lb1 → lb1's keepalived BACKUP again
    failback_errors: int  # failed requests from the restart to the cut
    errors_before_kill: int
    vip_after_failback: list[str]  # who holds the VIP once lb1 is back (nopreempt: lb2)
    cut_vip_moved_after: float  # lb2 cut off from the farm → the VIP on lb1's interface
    cut_served_after: float  # the cut → first answer to a request started after it
    cut_errors: int  # failed requests that ended between the cut and that answer
    served_by_cas1_after_drain: int  # requests cas1 answered once drained on both
    answered_after_drain: list[str]  # the servers that did
    admin_after_drain: dict[str, str]  # node → cas1's admin state, read back
    admin_after_restart: dict[str, str]  # the same once lb1's caslb restarted
    admin_after_redrain: dict[str, str]  # and after the drain was repeated
    links_outside: list[str]  # interfaces in the caller's namespace during the run

    def lines(self) -> list[str]:
        """What `python -m perf ha` prints."""
        return [
            f"failover: VIP on lb2 {self.vip_moved_after:.2f} s after caslb on lb1 was "
            f"killed; first answer {self.served_after:.2f} s after; "
            f"{self.failover_errors} client error(s)",
            f"failback: lb1 BACKUP again {self.failback_after:.2f} s after its caslb "
            f"restarted; VIP stays on {', '.join(self.vip_after_failback) or 'nobody'} "
            f"(nopreempt); {self.failback_errors} client error(s)",
            f"unhealthy: VIP on lb1 {self.cut_vip_moved_after:.2f} s after lb2 was cut off "
            f"from the farm; first answer {self.cut_served_after:.2f} s after; "
            f"{self.cut_errors} client error(s)",
            f"requests: {self.requests}, errors before the kill: {self.errors_before_kill}",
            f"drain cas1 on both: {_states(self.admin_after_drain)}; cas1 answered "
            f"{self.served_by_cas1_after_drain} request(s) after it "
            f"({', '.join(self.answered_after_drain)} answered)",
            f"after lb1's restart: {_states(self.admin_after_restart)}; "
            f"drained again: {_states(self.admin_after_redrain)}",
        ]

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return asdict(self)


def _states(states: dict[str, str]) -> str:
    return ", ".join(f"{node} {state}" for node, state in states.items())


def links() -> list[str]:
    """The interface names of the namespace this process runs in."""
    return sorted(line.split(":")[1].strip().split("@")[0]
                  for line in ip("-o", "link", "show").splitlines())


def admin_states(pair: Pair, server: str) -> dict[str, str]:
    """Node → SERVER's admin state in its pools ("DRAIN", or "READY/DRAIN" if mixed)."""
    states = {}
    for node in ("lb1", "lb2"):
        document = pair.status(node) or {}
        seen = sorted({member["admin"] for pool in document.get("pools", {}).values()
                       for member in pool["servers"] if member["name"] == server})
        states[node] = "/".join(seen) or "unreachable"
    return states


def drain_both(pair: Pair, server: str) -> None:
    """The operator's one command, from the client namespace."""
    pair.caslb_cli("drain", server, "--admin", admin_url("lb1"), "--admin", admin_url("lb2"),
                   "--token", TOKEN)


def count_errors(requests: Sequence[dict[str, Any]], start: float, end: float) -> int:
    """Failed requests that ended in [start, end)."""
    return sum(1 for r in requests if r["error"] is not None and start <= r["finished"] < end)


def first_answer(requests: Sequence[dict[str, Any]], moment: float) -> float:
    """When the first request started at or after `moment` was answered."""
    return min(r["finished"] for r in requests
               if r["error"] is None and r["started"] >= moment)


def run(folder: Path) -> HaResult:
    """The whole sequence (module docstring) in `folder`; everything is deleted after.

    Raises:
        RuntimeError: a tool is missing, or a step did not happen within LIMIT.
    """
    missing = ensure(*TOOLS)
    if missing:
        raise RuntimeError(f"perf ha needs {', '.join(missing)} (apt: keepalived, curl, "
                           "iproute2)")
    keepalived.ensure_script_user()
    with Pair(folder) as pair:
        ca = pair.start_farm()
        client = _start(pair, ca)
        at: dict[str, float] = {}
        admin: dict[str, dict[str, str]] = {}
        drain_both(pair, "cas1")
        at["drained"] = time.monotonic()
        admin["drain"] = admin_states(pair, "cas1")
        time.sleep(STEADY)
        outside = links()
        at["killed"] = pair.kill_caslb("lb1")
        at["moved"] = wait_for("the VIP on lb2", lambda: pair.vip_holder() == ["lb2"], LIMIT)
        wait_for("an answer after the kill",
                 lambda: bool(client.served_since(at["killed"])), LIMIT)
        time.sleep(STEADY)
        at["restarted"] = time.monotonic()
        pair.start_caslb("lb1", ca)
        at["backup"] = wait_for("lb1 BACKUP again", lambda: pair.entered("lb1", "BACKUP") > 1,
                                LIMIT)
        admin["restart"] = admin_states(pair, "cas1")
        drain_both(pair, "cas1")
        admin["redrain"] = admin_states(pair, "cas1")
        time.sleep(STEADY)
        holder = pair.vip_holder()
        at["cut"] = pair.cut_off_farm("lb2")
        at["moved_back"] = wait_for("the VIP on lb1", lambda: pair.vip_holder() == ["lb1"],
                                    LIMIT)
        wait_for("an answer after the cut", lambda: bool(client.served_since(at["cut"])),
                 LIMIT)
        return measure(client.snapshot(), at, admin, holder, outside)


def _start(pair: Pair, ca: Path) -> Requests:
    """caslb on both nodes, keepalived on lb1 (it takes the VIP), then lb2; the client."""
    for node in ("lb1", "lb2"):
        pair.start_caslb(node, ca)
    # lb1 first, so that it wins the first election (both are BACKUP, nopreempt).
    pair.wait_caslb("lb1")
    pair.start_keepalived("lb1")
    pair.wait_caslb("lb2")
    wait_for("lb1 holds the VIP", lambda: pair.vip_holder() == ["lb1"], LIMIT)
    pair.start_keepalived("lb2")
    client = pair.start_client(ca)
    wait_for("lb2 is BACKUP", lambda: pair.entered("lb2", "BACKUP") > 0, LIMIT)
    wait_for("the client is served", lambda: bool(client.served_since(0.0)), LIMIT)
    return client


def measure(requests: Sequence[dict[str, Any]], at: Mapping[str, float],
            admin: Mapping[str, dict[str, str]], holder: list[str],
            outside: list[str]) -> HaResult:
    """The result, from the client's requests and the moments of the sequence.

    `at` holds the monotonic moments drained, killed, moved (the VIP on lb2), restarted,
    backup (lb1 BACKUP again), cut (lb2 off the farm) and moved_back (the VIP on lb1);
    `admin` cas1's states after drain, restart, redrain.
    """
    killed, cut = at["killed"], at["cut"]
    served, served_after_cut = first_answer(requests, killed), first_answer(requests, cut)
    return HaResult(
        requests=len(requests),
        vip_moved_after=at["moved"] - killed,
        served_after=served - killed,
        failover_errors=count_errors(requests, killed, served),
        failback_after=at["backup"] - at["restarted"],
        failback_errors=count_errors(requests, at["restarted"], cut),
        cut_vip_moved_after=at["moved_back"] - cut,
        cut_served_after=served_after_cut - cut,
        cut_errors=count_errors(requests, cut, served_after_cut),
        errors_before_kill=count_errors(requests, 0.0, killed),
        vip_after_failback=holder,
        served_by_cas1_after_drain=sum(1 for r in requests if r["server"] == "cas1"
                                       and r["started"] >= at["drained"]),
        answered_after_drain=sorted({r["server"] for r in requests
                                     if r["server"] and r["started"] >= at["drained"]}),
        admin_after_drain=admin["drain"],
        admin_after_restart=admin["restart"],
        admin_after_redrain=admin["redrain"],
        links_outside=outside,
    )
