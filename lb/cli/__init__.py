"""The `caslb` command line: the composition root.

Each command lives in its own module and registers itself on `app` when imported;
`app` imports a command's module only when that command runs (see lb.cli._app).
"""

from lb.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
