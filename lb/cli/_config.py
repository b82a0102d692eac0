"""Loading a config for a command: every error with its key path, then exit 2."""

from __future__ import annotations

from pathlib import Path

import typer

from lb.config import Config, ConfigError, load


def load_or_exit(path: Path) -> Config:
    """The validated config at `path`, or every problem on stderr and exit status 2."""
    try:
        return load(path)
    except ConfigError as exc:
        for key, problem in exc.errors:
            typer.echo(f"error: {key}: {problem}" if key else f"error: {problem}", err=True)
        count = len(exc.errors)
        typer.echo(f"{path}: {count} error{'s' if count != 1 else ''}", err=True)
        raise typer.Exit(2) from None
