"""The `caslb` command line: the composition root.

Each command lives in its own module and registers itself on `app` when imported.
"""

from lb.cli import admin as _admin  # noqa: F401  (registers status/drain/enable/maint)
from lb.cli import check as _check  # noqa: F401  (registers check)
from lb.cli import demo as _demo  # noqa: F401  (registers demo)
from lb.cli import farm as _farm  # noqa: F401  (registers farm)
from lb.cli import probe as _probe  # noqa: F401  (registers probe)
from lb.cli import run as _run  # noqa: F401  (registers run)
from lb.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
