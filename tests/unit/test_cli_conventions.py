"""The command line's conventions: version, -h, command order, validated choices, and
the admin API's thin clients loading none of the data plane."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from lb.cli import app

# Packages a command that only talks to the admin API has no use for.
DATA_PLANE = ("trio", "h11", "casfarm", "probes", "lb.app", "lb.l4", "lb.l7", "lb.workers",
              "lb.config", "lb.admin", "lb.health")

LOADED_BY = """
import json, sys
from lb.cli import main
sys.argv = ["caslb", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def loaded_by(*argv: str) -> tuple[object, list[str]]:
    """The exit code of `caslb ARGV` run in a fresh interpreter, and the modules it loaded."""
    done = subprocess.run([sys.executable, "-c", LOADED_BY, *argv], capture_output=True,
                          text=True, check=True, timeout=60)
    answer = json.loads(done.stdout.splitlines()[-1])
    return answer["code"], answer["modules"]


@pytest.mark.parametrize("argv", [
    ("status",), ("drain", "cas1"), ("enable", "cas1"), ("maint", "cas1"),
    ("maintenance", "start", "cas1", "--wait"), ("maintenance", "end", "cas1"),
])
def test_admin_clients_load_no_data_plane(argv: tuple[str, ...]) -> None:
    code, modules = loaded_by(*argv, "--admin", "http://127.0.0.1:1")
    assert code == 1  # nothing listens on port 1: a clear error, not a traceback
    heavy = [m for m in modules if any(m == p or m.startswith(p + ".") for p in DATA_PLANE)]
    assert heavy == []


def test_version_and_short_help() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).output.strip() == f"caslb {version('caslb')}"
    short, long = runner.invoke(app, ["-h"]), runner.invoke(app, ["--help"])
    assert short.exit_code == long.exit_code == 0
    assert short.output == long.output
    assert "--install-completion" in short.output


def test_commands_listed_in_order_of_use() -> None:
    commands = CliRunner().invoke(app, ["-h"]).output.split("Commands", 1)[1]
    # A command's name opens its row: "│ run     Run the balancer...".
    listed = [line.split()[1] for line in commands.splitlines()
              if line.startswith("│ ") and line[2] != " "]
    assert listed == ["run", "check", "probe", "demo", "status", "drain", "enable", "maint",
                      "maintenance", "farm"]


def test_unknown_log_level_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["run", "x.toml", "--log-level", "verbose"])
    assert result.exit_code == 2
    assert "verbose" in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)


def test_probe_of_a_missing_config_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["probe", "missing.toml"])
    assert result.exit_code == 2
    assert "config file 'missing.toml' does not exist" in " ".join(result.output.split())
