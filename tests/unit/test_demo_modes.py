"""`caslb demo --mode`: each design's lab config, and the curl line the banner prints for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lb.cli.demo import DemoMode, design_lines
from lb.config import load


@pytest.mark.parametrize("mode", list(DemoMode))
def test_every_mode_has_its_lab_config(mode: DemoMode) -> None:
    assert mode.config.is_file() and mode.config.parent.name == "config"


def test_compare_prints_each_design_with_its_port_and_name(tmp_path: Path) -> None:
    config = load(DemoMode.COMPARE.config)
    lines = design_lines(config, "mail.lab.local", tmp_path).splitlines()
    assert [line.split()[:3] for line in lines[::2]] == [
        ["L7", "(B)", "127.0.0.1:9443"], ["L4", "(A)", "127.0.0.1:9444"],
        ["L4-SNI", "(D)", "127.0.0.1:9445"]]
    assert "--resolve ews.mail.lab.local:9445:127.0.0.1" in lines[5]
    assert "https://ews.mail.lab.local:9445/EWS/Exchange.asmx" in lines[5]
    assert "https://mail.lab.local:9444/EWS/Exchange.asmx" in lines[3]
