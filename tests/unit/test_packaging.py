"""The wheel carries every package: pyproject lists each directory of lb/ and probes/."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_directory_is_in_the_wheel() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("lb", "probes")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk - listed == set(), "packages missing from pyproject.toml"
    assert "casfarm" in listed
