"""The typer application every command module registers on.

Commands are listed in the order they are used and their modules are imported only
when a command is looked up, so that `caslb status` loads neither the data plane
(trio, lb.app, probes) nor casfarm.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version

import typer
from typer import _click
from typer.core import TyperGroup

# Command name → the lb.cli module that registers it, in the order of use.
COMMAND_MODULES = {
    "run": "run", "check": "check", "probe": "probe", "demo": "demo",
    "status": "admin", "drain": "admin", "enable": "admin", "maint": "admin",
    "maintenance": "maintenance",
    "farm": "farm",
}


class CommandsByUse(TyperGroup):
    """Lists commands in COMMAND_MODULES order; imports a command's module on lookup."""

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(COMMAND_MODULES)

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"lb.cli.{COMMAND_MODULES[cmd_name]}")
            self.commands.update(typer.main.get_group(app).commands)
        return self.commands.get(cmd_name)


app = typer.Typer(
    name="caslb",
    cls=CommandsByUse,
    help="caslb: a load balancer for Microsoft Exchange Client Access farms.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"caslb {version('caslb')}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version,
        help="Print caslb's version and exit.",
    ),
) -> None:
    """caslb: a load balancer for Microsoft Exchange Client Access farms."""
