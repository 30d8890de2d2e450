"""Command-line interface. Thin: each area registers its commands from `advisor/commands/<area>.py`.

Read-only commands (`recommend`, `export`, `studies`, `pareto`) must not import torch, so command modules
import heavy libraries inside the command bodies only.
"""

from __future__ import annotations

import errno
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
import typer.core
from typer._click.exceptions import BadParameter, NoSuchOption, UsageError  # typer >= 0.26 vendors click

from advisor import __version__
from advisor.commands import (
    CLICK_INT,
    evaluate,
    export,
    models,
    offload,
    option_name,
    quant,
    recommend,
    report,
    tune,
)
from advisor.errors import INTERRUPTED, UserError
from advisor.models import QUIET_LOGGERS


class _PlainHelp:
    """`--help` as a user reads it: a flag (`--wide`, `--offload/--resident`, `--help`) without the `<bool>` typer
    writes as its type, which read as a value to give (a flag takes none: `--wide true` is refused), and long
    words folded rather than cut (`_fold_long_help_words`)."""

    def get_params(self, ctx: typer.Context) -> list:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, typer.core.TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
        return params

    def format_help(self, ctx: typer.Context, formatter: typer._click.HelpFormatter) -> None:
        with _fold_long_help_words():
            super().format_help(ctx, formatter)  # type: ignore[misc]


@contextmanager
def _fold_long_help_words() -> Iterator[None]:
    """`--help` breaks an option's name or a word of its description that is longer than its column over lines,
    as typer's own type column does (`overflow="fold"`), rather than rich's table default, which cut it: at 80
    columns `tune --help` showed `[default: sqlite:///studies/adv…` and `eval --help` `'layers=0-1:int8,2…`, at
    60 `--profiles-…`. typer's renderer is patched while advisor's help is shown, so no other command imports
    it, and put back after: the patch stayed for the process, and another typer app's help and error panels
    there (a library user's, a test's CliRunner) folded as advisor's, its `rich_utils.highlighter` a function."""
    from rich.text import Text
    from typer import rich_utils

    def folding(make: Any) -> Any:
        def folded(*args: Any, **kwargs: Any) -> Any:
            shown = make(*args, **kwargs)
            for item in [shown, *getattr(shown, "renderables", [])]:  # a Text, or a description's Columns
                if isinstance(item, Text):
                    item.overflow = "fold"
            return shown

        folded.folds = True  # type: ignore[attr-defined]
        return folded

    kept = {}
    for name in ("_get_parameter_help", "highlighter", "negative_highlighter"):  # typer's internals: one a
        make = getattr(rich_utils, name, None)  # later typer renames is left as it is, not a traceback on --help
        if make is not None and not getattr(make, "folds", False):
            kept[name] = make
            setattr(rich_utils, name, folding(make))
    try:
        yield
    finally:
        for name, make in kept.items():
            setattr(rich_utils, name, make)


class _Group(_PlainHelp, typer.core.TyperGroup):
    """`advisor` itself (`--version`, `--help`)."""


app = typer.Typer(
    cls=_Group,
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


class _OnceCommand(_PlainHelp, typer.core.TyperCommand):
    """A command that refuses an option of one value given twice (`--budget 8GB --budget 4GB`, `--offload
    --resident`): click keeps the last without a word, so the answer was for a value the user may not have
    meant. Options that take a list (`--opt`, `--expert-shape`) repeat as before."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return self._parse_args(ctx, args)
        except NoSuchOption as e:
            numbers = _refuse_negative_argument(self, ctx, args, e)
            if numbers is None:
                raise
            ctx.meta[_PLAIN_NUMBERS] = numbers  # read back as the arguments given (`make_parser`)
            return self._parse_args(ctx, [next((m for m, a in numbers.items() if a == x), x) for x in args])

    def make_parser(self, ctx: typer.Context) -> Any:
        """click's parser; where a negative number lands in a text argument (`_refuse_negative_argument`), one that
        reads its marked stand-in back as the number given, as `-- -1` gives it."""
        parser = super().make_parser(ctx)
        numbers = ctx.meta.get(_PLAIN_NUMBERS)
        if not numbers:
            return parser
        parse = parser.parse_args

        def unmark(value: Any) -> Any:
            if isinstance(value, list | tuple):
                return type(value)(unmark(v) for v in value)
            return numbers.get(value, value) if isinstance(value, str) else value

        def parse_args(args: list[str]) -> tuple[dict[str, Any], list[str], list[Any]]:
            opts, rest, order = parse(args=args)
            return {k: unmark(v) for k, v in opts.items()}, unmark(rest), order

        parser.parse_args = parse_args
        return parser

    def _parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args:  # the same parse click runs next: its errors (an unknown option) are the ones it would raise
            _, _, order = self.make_parser(ctx).parse_args(args=list(args))
            if any(param.is_eager for param in order):  # --help: shown whatever else the line says, as click does
                order = []
            for param in dict.fromkeys(order):
                once = isinstance(param, typer.core.TyperOption) and not (param.multiple or param.count)
                if once and (n := order.count(param)) > 1:
                    on, off = (sorted(o for o in opts if o in args) for opts in (param.opts, param.secondary_opts))
                    if on and off:  # a flag and its opposite: not the same option twice, to the user
                        raise UsageError(f"{on[0]} and {off[0]} are both given, which contradict each other; give "
                                         "one of them", ctx=ctx)
                    raise UsageError(f"{option_name(param)} is given {n} times; give it once", ctx=ctx)
        return super().parse_args(ctx, args)


NEGATIVE_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A negative number as typed (`-1`, `-0`, `-1.5`, `-1e3`): click reads it as short options (`-1.5` was "No such
option: -1")."""

_PLAIN_NUMBERS = "advisor.plain_numbers"
"""`ctx.meta` key of the negative numbers a line gives as text arguments: marked stand-in -> the number given."""


def _refuse_negative_argument(command: typer.core.TyperCommand, ctx: typer.Context, args: list[str],
                              error: NoSuchOption) -> dict[str, str] | None:
    """A negative number where the command takes an integer argument (`export STUDY -1`) is no option: click said
    "No such option: -1" (of -15 and -1.5, "-1"). The line is parsed again with each such number as a plain
    argument, to see where it lands: in an integer argument it is refused as that argument's own range or type
    refuses it (as `-- -1` was; `-0`, in range, as a minus sign to drop), past the command's arguments as the extra
    argument it is (`export STUDY 5 -1`). An option's value is left to the option (click takes `--seed -1` as its
    value). `--help` on the line is shown, as it is beside any other argument; another mistake on the line (an
    unknown option) is said as click says it without the number. Where each number lands in a text argument
    (`simulate -1`, `export --help -0`), returns them (marked stand-in -> number) for the line to be parsed with
    them as those arguments, as `-- -1` gives them: the command's own refusal of such a file or model (a number
    given as an option's value on the same line, `trace -1 -o -2`, is that option's). None where the error is not
    of a negative number on the line (click's error stands)."""
    marked = [f"\0{i}" if NEGATIVE_NUMBER.fullmatch(a) else a for i, a in enumerate(args)]  # (no option's name)
    numbers = {m: a for m, a in zip(marked, args, strict=True) if m != a}
    if not any(a.startswith(error.option_name or " ") for a in numbers.values()):
        return None
    try:  # the parse click runs, without conversion: an option's value and an argument's stay the strings given
        values, extra, order = command.make_parser(ctx).parse_args(args=list(marked))  # (it empties the list)
    except UsageError as e:  # the line's other mistake (`-1 --bogus`, `-1 --to` without its value): that one, as
        e.ctx = e.ctx or ctx  # click names it where the number is no option, not "No such option: -1"
        raise
    if any(param.is_eager for param in order):  # --help: shown whatever else the line says, as beside `5`
        typer.core.TyperCommand.parse_args(command, ctx, marked)  # (help shown and exits before the arguments)
    arguments = [p for p in command.params if isinstance(p, typer.core.TyperArgument)]
    for param in arguments:
        if (number := numbers.get(str(values.get(param.name)))) is not None and _takes_int(param):
            try:
                value = param.process_value(ctx, number)  # converted and range-checked: a negative trial raises
            except BadParameter as e:  # named as click names the argument's own refusal (`-- -1`)
                e.ctx, e.param = e.ctx or ctx, e.param or param
                raise
            raise BadParameter(f"{number} has a minus sign: give {value}", ctx=ctx, param=param)
    if any(a in numbers for a in extra):
        given = " ".join(numbers.get(a, a) for a in extra)
        names = " ".join((p.metavar or str(p.name)).upper() for p in arguments) or "no arguments"
        raise UsageError(f"Got unexpected extra argument{'s' if len(extra) > 1 else ''} ({given}): "
                         f"{command.name} takes {names}", ctx=ctx)
    # each number left is a text argument's or an option's value (`--tau -2 --tau -3`: click's parse keeps the last
    # value only; the option given twice is refused as such once the line is parsed with the numbers)
    return numbers


def _takes_int(param: typer.core.TyperArgument) -> bool:
    """Whether an argument takes an integer (click's type, whose name an `int_range` argument's parser has too, or
    typer 0.29's annotation where it keeps no type)."""
    kind = getattr(param, "type", None)
    if kind is not None:
        return getattr(kind, "name", "") == CLICK_INT
    return getattr(getattr(param, "type_descriptor", None), "annotation", None) is int


for _area in (tune, recommend, export, report, evaluate, offload, quant, models):
    _area.register(app)
for _info in app.registered_commands:  # every command, here once (none names a class of its own)
    _info.cls = _OnceCommand


def _program_name() -> str:
    """The program as the user ran it (`advisor`, `python -m advisor`), as click names it in a usage error's
    command path: one name for every usage error, given to click and used where it raised without a context."""
    from typer._click.utils import _detect_program_name  # typer >= 0.26 vendors click

    return _detect_program_name()


def _command_path(error: UsageError, program: str) -> str:
    """`PROGRAM COMMAND` whose help explains a usage error. click raises an option missing its value
    (`advisor tune --trials`) with no context, which sent the user to `advisor --help`: the command is then the
    first argument that names one."""
    if error.ctx is not None:
        return error.ctx.command_path
    names = {info.name for info in app.registered_commands}
    return next((f"{program} {a}" for a in sys.argv[1:] if a in names), program)


def run() -> None:
    """Console entry point: bad input is one line on stderr and exit code 2, never a traceback or a box.

    A `UserError`, a click usage error (unknown option, value of the wrong type) and a storage error from
    the database driver each become `error: ...` (passwords in URLs masked); Ctrl-C is one line, exit 130.
    """
    from typer._click import exceptions as click_errors  # typer >= 0.26 vendors click

    from advisor.results.preflight import mask_url
    from advisor.results.reconnect import watch_answers
    from advisor.tune.interrupt import InterruptOnSignal

    for name in QUIET_LOGGERS:  # always, whatever the program that imported advisor set
        logging.getLogger(name).setLevel(logging.ERROR)
    # SIGTERM stops a command as Ctrl-C does; `received` holds the signals that reached this handler, not one a
    # command handled itself (`tune` prints its own line)
    # the process is the command's: its waits for a PostgreSQL server are watched for the whole run
    program = _program_name()
    with InterruptOnSignal() as signals, watch_answers():
        try:
            code = app(prog_name=program, standalone_mode=False)
        except UserError as e:
            _fail(mask_url(str(e)), e.exit_code)
        except click_errors.NoArgsIsHelpError as e:  # the help is already shown
            sys.exit(e.exit_code)
        except click_errors.UsageError as e:
            _fail(f"{e.format_message().rstrip('.')} (see `{_command_path(e, program)} --help`)", 2)
        except click_errors.ClickException as e:  # e.g. a file option that cannot be opened
            _fail(e.format_message(), e.exit_code)
        except (KeyboardInterrupt, typer.Abort):
            _fail(INTERRUPTED, 130)
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:  # any path option or argument: even a look at it raises this
                raise
            name = str(e.filename) if e.filename is not None else "a path given"
            shown = name if len(name) <= 80 else f"{name[:60]}...{name[-17:]}"
            _fail(f"cannot use '{shown}': file name too long ({len(name.encode())} bytes; most file systems take "
                  "255 per name and 4096 per path); give a shorter path", 2)
        except Exception as e:
            from advisor.results.storage_errors import is_locked_error, locked_database, storage_failure

            failure = storage_failure(e)  # a server gone, a disk full: also under another error Optuna raised
            if failure is not None:
                _fail(mask_url(str(failure)), 2)
            if not type(e).__module__.startswith(("sqlalchemy", "optuna.exceptions", "sqlite3", "psycopg")):
                raise
            if is_locked_error(e):
                _fail(str(locked_database()), 2)
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            _fail(f"storage error: {mask_url(first)}; check --storage (a writable, valid database)", 2)
        if code == 130 and signals.received:  # typer turns a KeyboardInterrupt into exit code 130, without a word
            _fail(INTERRUPTED, 130)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(code)


def _one_line(message: str) -> str:
    """`message` with every character that is not printable (a newline or tab in a value typed in quotes, an
    escape sequence, a right-to-left override) shown escaped, as Python writes it in a string: a refusal that
    quoted `--dtype $'a\\nb'` as typed was two lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


if __name__ == "__main__":
    run()
