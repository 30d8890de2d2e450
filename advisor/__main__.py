"""`python -m advisor` runs the CLI."""

from advisor.cli import run

run()
