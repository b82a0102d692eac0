"""The typer application every command module registers on."""

import typer

app = typer.Typer(
    name="caslb",
    help="caslb: a load balancer for Microsoft Exchange Client Access farms.",
    no_args_is_help=True,
    add_completion=False,
)
