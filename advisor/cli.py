"""Command-line interface. Thin: each area registers its commands from `advisor/commands/<area>.py`.

Read-only commands (`recommend`, `export`, `studies`, `pareto`) must not import torch, so command modules
import heavy libraries inside the command bodies only.
"""

from __future__ import annotations

import logging
import sys

import typer

from advisor import __version__
from advisor.commands import evaluate, export, models, offload, quant, recommend, report, tune
from advisor.errors import UserError

app = typer.Typer(
    name="advisor",
    help="Tune, recommend and export expert precision x CPU-GPU expert caching for MoE (diffusion) LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moe-advisor {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """moe-advisor: expert precision x expert caching for MoE (diffusion) LLMs on small GPUs."""


for _area in (tune, recommend, export, report, evaluate, offload, quant, models):
    _area.register(app)


# transformers imports torchao whenever it is installed (`pip install "moe-advisor[hf]"`), and torchao warns at
# import about CUDA kernels a CPU build cannot load: noise that would bury the CLI's one-line messages.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def run() -> None:
    """Console entry point: a `UserError` becomes one line on stderr and exit code 2, never a traceback."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    run()
