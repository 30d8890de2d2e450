"""CLI commands of this area (registered by advisor.cli). Import heavy libraries inside command bodies."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""
