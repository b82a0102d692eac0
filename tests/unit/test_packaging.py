"""The wheel carries every package (pyproject lists each directory of lb/ and probes/), and
installed on its own, away from the checkout, it runs the demo."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import trio

from tests.farmclient import https_client
from tests.smoke.test_cli_demo import start_demo, stop_demo

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


# The files a wheel is built from (pyproject's readme, packages and package dirs).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "lb", "probes", "examples/casfarm", "config")


def build_wheel(tmp_path: Path) -> Path:
    """A wheel built from a copy of the checkout (the build writes beside its sources)."""
    source = tmp_path / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns(
                "__pycache__", "lab-certs"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("caslb-*.whl")
    return wheel


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A venv with `wheel` installed; its dependencies come from this venv, without a network.

    The dependencies are this venv's site-packages as a .pth line: that adds the
    directory only, not its own .pth files, so this checkout's editable install
    stays out and `lb` is the wheel's.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)
    return venv


@pytest.mark.smoke
async def test_the_installed_wheel_runs_the_demo_from_any_directory(tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path, build_wheel(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    process, banner = await start_demo(caslb=[str(venv / "bin" / "caslb")], cwd=elsewhere)
    try:
        found = re.search(r"CA (\S+ca\.pem)\)", banner)
        assert found, banner
        ca = Path(found[1])
        # The lab configs and the farm's certificates are the installed package's.
        assert ca.is_relative_to(venv) and ca.parent.parent.name == "lab"
        client = await https_client("127.0.0.1", 9443, ca_path=ca,
                                    server_hostname="mail.lab.local")
        try:
            response = await client.request("GET", "/owa/")
        finally:
            await client.aclose()
        # The demo's farm authenticates: OWA sends an anonymous browser to its logon form.
        assert response.status == 302
        assert "/owa/auth/logon.aspx?url=" in (response.header("location") or "")
        assert response.header("x-feserver") in {"CAS1", "CAS2", "CAS3"}
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(40):
            assert await process.wait() == 0
        assert list(elsewhere.iterdir()) == []
    finally:
        await stop_demo(process)
