"""perf.pyprofile over a real cProfile run: h11's own work and the C calls it makes are
charged to h11; perf.h11cost prints both of its figures."""

from __future__ import annotations

import cProfile
import io
import pstats
from contextlib import redirect_stdout

from perf import h11cost, pyprofile


def _profiled(exchanges: int) -> pstats.Stats:
    profile = cProfile.Profile()
    profile.runcall(h11cost.h11_exchanges, exchanges)
    return pstats.Stats(profile, stream=io.StringIO())


def test_package_of_names_the_package_in_the_path() -> None:
    assert pyprofile.package_of("/venv/lib/site-packages/h11/_connection.py") == "h11"
    assert pyprofile.package_of("/work/lb/l7/relay.py") == "lb"
    assert pyprofile.package_of("~") == "builtins (C)"
    assert pyprofile.package_of("/usr/lib/python3.11/re/__init__.py") == "stdlib and other"


def test_h11_exchanges_are_charged_to_h11_with_their_c_calls() -> None:
    shares = {s.name: s for s in pyprofile.by_package(_profiled(300), 300)}
    h11 = shares["h11"]
    # The exchange loop itself is perf's (outside the named packages); nearly
    # everything else, builtins and typing included, is work h11 asked for.
    assert h11.fraction > 0.8
    assert h11.calls > 50  # h11 calls per exchange, counted where they live
    assert shares.get("builtins (C)", pyprofile.Share("", 0, 0, 0)).fraction < 0.05
    assert sum(s.fraction for s in shares.values()) > 0.99


def test_top_functions_are_ranked_by_own_time() -> None:
    top = pyprofile.top_functions(_profiled(100), 100, 5)
    assert len(top) == 5
    assert [s.own_us for s in top] == sorted((s.own_us for s in top), reverse=True)
    table = pyprofile.render(top, "top:")
    assert table.splitlines()[0] == "top:" and len(table.splitlines()) == 7


def test_h11cost_prints_all_three_figures() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert h11cost.main(["--requests", "100"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("h11, the data path's calls for one exchange:")
    assert lines[1].startswith("lb.l7.wire, the same calls:")
    assert lines[2].startswith("the least a codec must do for the same bytes:")
