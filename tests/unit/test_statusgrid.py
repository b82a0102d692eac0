"""The status document, its labels and the server × pool grid, pure, with plain numbers."""

from __future__ import annotations

from typing import Any

from lb.config.model import PoolConfig, ServerConfig
from lb.pool import Pool
from lb.statusgrid import (
    Cell,
    Column,
    ago,
    build_grid,
    duration,
    grid_html,
    grid_table,
    member_label,
)
from lb.statuspage import Lookups, render_html, status_document
from probes.state import AdminState, CheckProgress, CheckState, Health, Timing


def labels_along(timing: Timing, results: list[bool]) -> list[str]:
    health = Health(timing)
    seen = [health.progress.label]
    for t, ok in enumerate(results, start=1):
        health.record(ok, float(t))
        seen.append(health.progress.label)
    return seen


def test_transitions_are_labelled_as_haproxy_counts_them() -> None:
    # A fresh server sits at the UP threshold: one failure from DOWN.
    assert labels_along(Timing(rise=2, fall=2), [True, False, False, True, True]) == [
        "UP 1/2", "UP", "UP 1/2", "DOWN", "DOWN 1/2", "UP",
    ]
    # UP counts the checks left before DOWN; DOWN the passes towards rise.
    assert labels_along(Timing(rise=3, fall=3), [True, False, False, False, True, True]) == [
        "UP 1/3", "UP", "UP 2/3", "UP 1/3", "DOWN", "DOWN 1/3", "DOWN 2/3",
    ]


def test_progress_carries_the_counter_and_the_last_change() -> None:
    health = Health(Timing(rise=2, fall=2))
    health.record(False, 7.0)
    assert health.progress == CheckProgress(CheckState.DOWN, 0, 2, 2, 7.0)
    assert health.progress.steps is None


def test_member_labels_and_kinds() -> None:
    def label(state: str, check: str | None = None, *, ramp: float = 1.0,
              eligible: bool = True, ejected: float | None = None) -> tuple[str, str]:
        return member_label(state, check, eligible=eligible, ramp=ramp, ejected_for=ejected)

    assert label("UP") == ("UP", "up")
    assert label("UP", "UP") == ("UP", "up")
    assert label("UP", "UP 1/2") == ("UP 1/2", "going-down")
    assert label("DOWN", "DOWN 1/2", eligible=False) == ("DOWN 1/2", "coming-up")
    assert label("DOWN", "DOWN", eligible=False) == ("DOWN", "down")
    assert label("DRAIN", "UP 1/2", eligible=False) == ("DRAIN", "drain")
    assert label("MAINT", eligible=False) == ("MAINT", "maint")
    assert label("UP", "UP", ramp=0.4) == ("UP 40%", "slowstart")
    assert label("UP", "UP 1/2", ramp=0.4) == ("UP 1/2 40%", "going-down")
    # A ramp means nothing to a server that takes no traffic.
    assert label("DOWN", "DOWN 1/2", ramp=0.4, eligible=False) == ("DOWN 1/2", "coming-up")
    assert label("UP", ejected=26.0) == ("EJECTED 26s", "ejected")
    assert label("DOWN", ejected=26.0, eligible=False) == ("DOWN", "down")


def test_durations_are_short_and_coarse() -> None:
    assert [duration(s) for s in (0, 4.9, 59, 60, 185, 3600, 7500, 86400, 273600)] == [
        "0s", "4s", "59s", "1m00s", "3m05s", "1h00m", "2h05m", "1d00h", "3d04h",
    ]
    assert ago(None) == "-" and ago(75.0) == "1m15s ago"


def pools() -> dict[str, Pool]:
    def server(name: str) -> ServerConfig:
        return ServerConfig(name, "127.0.0.1", 443, f"{name}.lab", weight=3)

    owa = Pool(PoolConfig("owa", (server("cas1"), server("cas2")), protocol="owa",
                          slowstart=10.0))
    eas = Pool(PoolConfig("eas", (server("cas2"),), protocol="eas"))
    return {"owa": owa, "eas": eas}


def document_at(now: float, p: dict[str, Pool], lookups: Lookups | None = None) -> Any:
    return status_document(p, frontends={"https": 2}, now=now, lookups=lookups or Lookups())


def test_the_document_reads_ages_ramps_progress_and_ejections_at_the_time_given() -> None:
    p = pools()
    p["owa"].set_check_state("cas1", CheckState.DOWN, 90.0)
    p["owa"].set_check_state("cas1", CheckState.UP, 100.0)
    p["eas"].set_admin("cas2", AdminState.MAINT, 50.0)
    progress = {("owa", "cas2"): CheckProgress(CheckState.UP, 2, 2, 2, None)}
    lookups = Lookups(progress=lambda pool, server: progress.get((pool, server)),
                      ejected_until=lambda pool, server: 130.0 if server == "cas2" else None)
    doc = document_at(104.0, p, lookups)
    owa, eas = doc["pools"]["owa"], doc["pools"]["eas"]
    cas1, cas2 = owa["servers"]
    assert (cas1["label"], cas1["kind"]) == ("UP 40%", "slowstart")
    assert (cas1["weight"], cas1["effective_weight"], cas1["slowstart"]) == (3, 1.2, 0.4)
    assert cas1["seconds_since_change"] == 4.0
    assert cas1["check_progress"] is None and cas1["ejected_for"] is None
    assert cas2["check_progress"] == {"health": 2, "rise": 2, "fall": 2}
    assert (cas2["label"], cas2["ejected_for"]) == ("EJECTED 26s", 26.0)
    assert cas2["seconds_since_change"] is None
    assert owa["no_server"] is False and owa["protocol"] == "owa"
    assert eas["no_server"] is True and eas["servers"][0]["label"] == "MAINT"
    assert eas["servers"][0]["seconds_since_change"] == 54.0
    # The same state at a later time: the ramp is over, the ejection too.
    later = document_at(200.0, p, lookups)["pools"]["owa"]["servers"]
    assert later[0]["label"] == "UP" and later[0]["effective_weight"] == 3
    assert later[1]["label"] == "UP 1/2" and later[1]["ejected_for"] is None


def test_the_grid_has_a_row_per_server_and_marks_an_empty_pool() -> None:
    p = pools()
    p["owa"].set_admin("cas1", AdminState.DRAIN, 1.0)
    p["eas"].set_check_state("cas2", CheckState.DOWN, 1.0)
    grid = build_grid(document_at(2.0, p))
    assert grid.columns == (Column("eas", "NO SERVER"), Column("owa", ""))
    assert grid.rows == (
        ("cas2", (Cell("DOWN", "down"), Cell("UP", "up"))),
        ("cas1", (None, Cell("DRAIN", "drain"))),
    )
    assert grid_table(grid) == (
        ("server", "eas", "owa"),
        [("", "NO SERVER", ""), ("cas2", "DOWN", "UP"), ("cas1", "-", "DRAIN")],
    )
    page = grid_html(grid)
    assert '<th class="pool NO-SERVER">eas<small>NO SERVER</small></th>' in page
    assert '<td class="absent">-</td><td class="drain">DRAIN</td>' in page


def test_a_panicking_pool_is_marked_but_still_serves() -> None:
    config = PoolConfig("ews", (ServerConfig("cas1", "127.0.0.1", 443, "cas1.lab"),
                                ServerConfig("cas2", "127.0.0.1", 443, "cas2.lab")),
                        panic_threshold=0.6)
    pool = Pool(config)
    pool.set_check_state("cas1", CheckState.DOWN, 1.0)
    grid = build_grid(document_at(2.0, {"ews": pool}))
    assert grid.columns == (Column("ews", "PANIC"),)
    pool.set_admin("cas2", AdminState.MAINT, 1.0)  # panic still routes to cas1
    assert build_grid(document_at(2.0, {"ews": pool})).columns == (Column("ews", "PANIC"),)
    pool.set_admin("cas1", AdminState.DRAIN, 1.0)
    assert build_grid(document_at(2.0, {"ews": pool})).columns == (Column("ews", "NO SERVER"),)


def test_the_page_shows_the_grid_first_then_the_details() -> None:
    p = pools()
    p["owa"].set_check_state("cas2", CheckState.DOWN, 1.0)
    page = render_html(document_at(61.0, p))
    grid, frontends, details = (page.index(s) for s in (
        '<table class="grid">', "<h2>Frontends</h2>", "<h2>pool owa"))
    assert grid < frontends < details
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert '<tr class="down"><td>cas2</td>' in page and "<td>1m00s ago</td>" in page
