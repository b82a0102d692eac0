"""The HA pair for real: `python -m perf ha` in network namespaces, with keepalived.

Two caslb nodes run examples/keepalived/ as shipped (its configs, check script and
script user) in front of casfarm; a client requests through the VIP the whole time.
Asserts what happened and in which order, never how long it took: the VIP moved to
lb2, the client was answered again, the restarted node left the VIP where it was, the
VIP went back when lb2 lost the farm, one drain reached both nodes, and nothing of the
LAN showed outside its namespaces.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perf.__main__ import app
from perf.ha.netns import PREFIX, Lan, ip, namespaces
from perf.ha.scenario import links

pytestmark = pytest.mark.smoke


def ours() -> list[str]:
    return [name for name in namespaces() if name.startswith(f"{PREFIX}-")]


def test_failover_failback_and_one_drain_for_both(tmp_path: Path) -> None:
    before, outside = ours(), links()
    out = tmp_path / "ha.json"
    result = CliRunner().invoke(app, ["ha", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("failover: VIP on lb2 ")
    doc = json.loads(out.read_text())
    # While the pair ran, the caller's namespace saw none of its interfaces...
    assert doc["links_outside"] == outside
    # ... and after it, none of its namespaces is left.
    assert ours() == before
    assert doc["errors_before_kill"] == 0
    assert doc["served_after"] > 0 and doc["vip_moved_after"] > 0
    assert doc["requests"] > doc["failover_errors"]
    # nopreempt: lb1 came back as BACKUP; the VIP and its clients stayed on lb2.
    assert doc["vip_after_failback"] == ["lb2"]
    assert doc["failback_errors"] == 0
    assert doc["failback_after"] > 0
    # lb2 alive but cut off from the farm: unhealthy, so the VIP went back to lb1.
    assert doc["cut_served_after"] > 0 and doc["cut_vip_moved_after"] > 0
    assert doc["cut_errors"] < doc["requests"]
    # One command drained cas1 on both nodes: it answered nothing, before or after the
    # failover, nor once lb1 served again. A restarted caslb starts READY; the same
    # command makes the nodes agree again.
    assert doc["admin_after_drain"] == {"lb1": "DRAIN", "lb2": "DRAIN"}
    assert doc["served_by_cas1_after_drain"] == 0
    assert doc["answered_after_drain"] == ["cas2", "cas3"]
    assert doc["admin_after_restart"] == {"lb1": "READY", "lb2": "DRAIN"}
    assert doc["admin_after_redrain"] == {"lb1": "DRAIN", "lb2": "DRAIN"}


def test_a_failing_block_still_deletes_the_namespaces_and_ends_the_processes() -> None:
    before = ours()
    with pytest.raises(RuntimeError, match="boom"), Lan({"a": ["10.99.0.1"]}) as lan:
        sleeper = lan.start("a", ["sleep", "60"])
        assert lan.ns("a") in namespaces()
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert ours() == before


def test_namespaces_of_a_dead_creator_are_deleted_by_the_next_lan() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{PREFIX}-{dead.pid}-000000-lan"
    ip("netns", "add", stale)
    try:
        with Lan({"a": ["10.99.0.1"]}):
            assert stale not in namespaces()
    finally:
        if stale in namespaces():
            ip("netns", "delete", stale)

