"""Commands: the CLI, one module per area (`tune`, `recommend`, `export`, `report`, `evaluate`, `quant`,
`offload`, `models`); each parses options, checks them before any model loads, and calls the domain.

May import every other advisor package; nothing imports it except `advisor.cli` (and its own modules, for the
shared option text and out-of-memory refusal below). Heavy imports (torch,
optuna) stay inside command bodies, so `--help` and the read-only commands stay fast.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from advisor.errors import UserError, check_device_name
from advisor.files import OUTPUT, P, home_path  # noqa: F401 - OUTPUT: the commands import it from here
from advisor.results.urls import DEFAULT_STORAGE
from advisor.units import SAMPLER_SEED_MAX, SEED_MAX, SEED_MIN, format_bytes

if TYPE_CHECKING:
    from advisor.hardware.profiles import HardwareProfile

MAX_THREADS = max(1024, os.cpu_count() or 1)
"""The most --threads any command takes: no host has more cores, and torch's thread pool takes a C int, which
a larger value overflows (a traceback), while libgomp gives every thread a stack (2**31 threads: it aborts)."""



def _click_int_name() -> str:
    """The name typer < 0.29 gives an integer (its click's `INT`: `integer` in 0.26, `int` in 0.28), which its
    --help shows as the type of an option or argument (`INTEGER`, `<int>`); typer 0.29 keeps no click types."""
    try:
        from typer._click.types import INT  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "int"
    return str(INT.name)


CLICK_INT = _click_int_name()
"""An integer's type name in this typer's click (`advisor.cli._takes_int`, `int_range`'s parser)."""


def int_range(low: int, high: int | None, what: str, why: str = "", see: str = "") -> dict[str, Any]:
    """The keyword arguments of an integer option or argument taking `low` to `high` where those are machine limits,
    checked by a callback: as min/max, the range filled --help with `[-9223372036854775808<=x<=18446744073709551615]`
    (a seed), `[1<=x<=9223372036]` (tune --heartbeat), `[0<=x<=9223372036854775807]` (export's TRIAL). A value
    outside is a usage error (exit 2) naming the range, before any model loads; so is one that is no whole number
    (`export STUDY two`), which typer refused as "Input should be a valid integer, unable to parse string as an
    integer", naming neither the value nor what it stands for. `high` None: no upper limit. `why`: why the limits
    are what they are; `see`: where the user finds a value to give."""
    hint = f"; {see}" if see else ""
    span = f"from {low} to {high}" if high is not None else f"of {low} or more"

    def parse(value: Any) -> Any:
        """The whole number typed (as Python reads one: `+2`, ` 3`, `1_000`); a default passes as it is."""
        if not isinstance(value, str):
            return value
        try:
            return int(value)
        except ValueError:
            raise typer.BadParameter(f"'{value}' is not {what}: give a whole number {span}{hint}") from None

    parse.__name__ = CLICK_INT  # typer < 0.29 shows the name in --help (`--seed <int>`, not `<parse>`)

    def check(value: int | None) -> int | None:
        """None is an option left out whose default is None (`eval --seed`, refused where it chooses nothing)."""
        if value is not None and not (low <= value and (high is None or value <= high)):
            raise typer.BadParameter(f"{value} is not {what}: give one {span}{f' ({why})' if why else ''}{hint}")
        return value

    return {"parser": parse, "callback": check}


def accuracy_option() -> dict[str, Any]:
    """The keyword arguments of an accuracy option (--min-accuracy, --max-accuracy-drop): a fraction (0.95, 0.02)
    or a percentage (95%, 2%). typer's float type refused "95%" as "Input should be a valid number, unable to parse
    string as a number", naming neither the value nor the forms it takes; the range (0..1) is checked where the
    option is used (`advisor.recommend.check_accuracy_fraction`), a percentage's (0..100%) here, naming it as typed
    ('150%' read as 1.5 was told to give 0.015 or 1.5%)."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        try:  # a percentage in decimal: 0.7% is 0.007, where float's 0.7 / 100 read 0.006999999999999999
            percent = Decimal(text[:-1]) if text.endswith("%") else None
            in_range = percent is None or (percent.is_finite() and 0 <= percent <= 100)
            # (checked before dividing: '1e999999999%' overflowed decimal's context, refused as no number)
            fraction = float(text) if percent is None else float(percent / 100) if in_range else None
        except (ValueError, ArithmeticError):  # decimal's InvalidOperation: no number
            raise typer.BadParameter(f"'{value}' is not an accuracy: give a fraction (0.95) or a percentage "
                                     "(95%)") from None
        if not in_range:  # as a fraction, '150%' was told to give '1.5%'
            raise typer.BadParameter(f"'{value}' is not an accuracy: give a percentage from 0% to 100%, or a "
                                     "fraction (0.95)")
        return fraction

    return {"parser": parse, "metavar": "FRACTION"}


def seconds_option(option: str) -> dict[str, Any]:
    """The keyword arguments of a positive number of seconds (`tune --timeout`): refused as typed - `-1e3` was
    said as -1000 (click's float, then `:g`), and `abc` in pydantic's words ("Input should be a valid number")
    naming neither the value nor what it takes. `nan` is no positive number (a timeout that never ends the run)."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            seconds = float(value.strip())
        except ValueError:
            raise typer.BadParameter(f"'{value}' is not a number of seconds (e.g. 600 or 1.5e3)") from None
        if not seconds > 0:  # `<= 0` let nan through
            raise UserError(f"{option} {value.strip()} must be positive (seconds)")
        return seconds

    return {"parser": parse, "metavar": "SECONDS"}


SEED_RANGE = int_range(SEED_MIN, SEED_MAX, "a seed torch takes", "-2**63 to 2**64 - 1")
"""--seed of the commands that seed torch (`torch.Generator.manual_seed`; beyond this range, a traceback after the
model loaded)."""

SAMPLER_SEED_RANGE = int_range(0, SAMPLER_SEED_MAX, "a sampler seed",
                                 "2**31 - 1: a study's k-th run draws with seed + k")
"""`advisor tune --seed`, the Optuna sampler's (`SAMPLER_SEED_MAX`)."""

THREADS_HELP = ("torch CPU threads; 0: every core. On a host busy with other work, 1 or 2 can be many times faster "
                "(waiting threads spin).")


def threads_option(default: int = 0, help: str = THREADS_HELP) -> Any:
    """--threads of every command that runs torch on the CPU, one range for all. `eval`, `trace` and
    `quant-report` default to 0, every core (fastest on a quiet host); `tune` and `profile` to 1 and take no 0:
    the CPU expert times they store are keyed by the thread count. A value outside, or not a whole number, is
    refused naming it and the range (`int_range`), as every such option is."""
    return typer.Option(default, "--threads", **int_range(min(default, 1), MAX_THREADS, "a thread count"), help=help)


def output_option(default: Any, help: str) -> Any:
    """The file or folder a command writes: `-o`, `--output` or `--out`, in every command. `report` and `pareto`
    took only `--out`, `export` and `trace` only `--output`, so a habit from one was "No such option" in another.
    `--output` is the canonical name (`OUTPUT`); `--out` an alias."""
    return typer.Option(default, "-o", "--output", "--out", callback=user_path, help=help)


def option_name(param: Any) -> str:
    """How a refusal names an option: its names as declared, aliases after the first long one left out, and its
    --no- side ("-o/--output", "--plots/--no-plots", "--yes/-y"); `OUTPUT`'s alias --out would read as another
    option."""
    first_long = next((o for o in param.opts if o.startswith("--")), None)
    names = [o for o in param.opts if not o.startswith("--") or o == first_long]
    return "/".join(names + list(getattr(param, "secondary_opts", [])))


def user_path(param: typer.CallbackParam, value: P) -> P:
    """The callback of every option that names a file or directory: a leading '~' expanded (`home_path`), a
    leading '=' refused (`refuse_equals`)."""
    refuse_equals(param, value)
    return home_path(value)


def refuse_equals(param: typer.CallbackParam, value: str | Path | None) -> None:
    """A path option's value that starts with '=': click reads `-o=~/x` (a short option) as the path '=~/x' - only
    a long option's '=' separates its value - so `export -o=x.json` wrote a file named '=x.json', and `-o=~/x.json`
    was refused as a missing folder '=~' (argparse, and so most Python tools, read it as '~/x.json'). Refused in
    one line naming the two spellings that mean the path (`--out==x` gets here too); a file whose name does start
    with '=' is still './=x'."""
    text = "" if value is None else str(value)
    if not text.startswith("=") or param.param_type_name != "option":
        return
    short = next((o for o in param.opts if not o.startswith("--")), None)
    long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    why = f" (`{short}=PATH` is read as the path '=PATH')" if short else ""
    raise UserError(f"{option_name(param)} {text!r}: a path starting with '='{why}; write `{short or long} "
                    f"{text[1:]}` or `{long}={text[1:]}` (a name that starts with '=': ./{text})")


_SQLITE_FILE = re.compile(r"(sqlite(?:\+\w+)?:///)(~[^/?]*)(.*)", re.S)


def user_storage(param: typer.CallbackParam, value: str) -> str:
    """--storage's callback: `home_path` of a SQLite path, given plain or as a URL's file (`sqlite:///~/a.db`, which
    SQLAlchemy would open as ./~/a.db); the home directory percent-encoded in a URL, as SQLAlchemy decodes it."""
    from urllib.parse import quote

    refuse_equals(param, value)
    if "://" not in value:
        return home_path(value)
    m = _SQLITE_FILE.fullmatch(value.strip())
    if m is None or (home := home_path(m[2])) == m[2]:
        return value
    return f"{m[1]}{quote(home, safe='/')}{m[3]}"


def storage_option() -> Any:
    """--storage of every command that reads or writes studies, with one help text: each takes a SQLite file's
    plain path, which only recommend's, export's and report's help said (tune's, pareto's and studies' named a URL
    alone, in three wordings)."""
    return typer.Option(DEFAULT_STORAGE, "--storage", callback=user_storage,
                        help="Study database: a SQLAlchemy URL (sqlite:///FILE, postgresql://...) or a SQLite file's "
                             "path.")


def device_option() -> Any:
    """--device of every command that loads a model, its spelling checked as the options are read (no torch)."""
    return typer.Option("cpu", "--device", callback=check_device_name, help="cpu, cuda or cuda:N.")


def usable_cores() -> int:
    """The cores this process may run on: under `taskset` or a cgroup cpuset fewer than the host's
    (`os.cpu_count`), which --threads 0 ran as many threads as, several then waiting on one core."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity to read (macOS, Windows)
        return os.cpu_count() or 1


def profiles_dir_option(help: str = "Where --gpu's measured hardware profiles are") -> Any:
    """--profiles-dir of every command with --gpu: where `advisor profile --profiles-dir` stored the GPU's."""
    return typer.Option(None, "--profiles-dir", callback=user_path,
                        help=f"{help} (default $ADVISOR_PROFILES_DIR, else studies/profiles).")


def gpu_profile(gpu: str | None, profiles_dir: Path | None, *,
                has_budget: bool = False) -> HardwareProfile | None:
    """--gpu's hardware profile (measured in `profiles_dir` or catalogued), None without --gpu; --profiles-dir
    alone is refused: it only says where --gpu's profile is, so alone it did nothing."""
    if profiles_dir is not None and gpu is None:
        raise UserError("--profiles-dir needs --gpu NAME: it says where that GPU's measured profile is; give --gpu, "
                        "or drop --profiles-dir")
    if gpu is None:
        return None
    from advisor.hardware.profiles import get_gpu

    return get_gpu(gpu, profiles_dir, has_budget=has_budget)  # an empty --gpu is refused, not ignored


def device_budget(budget: str | None, gpu: str | None, profiles_dir: Path | None,
                  share: Callable[[str], UserError]) -> tuple[int | None, HardwareProfile | None, str]:
    """(budget bytes or None, --gpu's hardware profile or None, where the budget came from) from --budget / --gpu,
    checked before any model loads, as `tune` and `inspect` take them: --budget as typed, at most the memory of the
    card --gpu names (`check_budget_fits`); without --budget, that card's memory (a CPU profile's host RAM is no
    device budget: none). Where it came from, as shown after the bytes: "--budget 8GB" as typed (8GB is SI),
    "--gpu RTX 4090 24GB" by the profile's name (not as typed: "4090"), "none". A share ("50%") is refused with
    `share(value)`, the command's own words (0% is "must be positive", as 0B is)."""
    from advisor.hardware.profiles import check_budget_fits, is_share, parse_budget

    profile = gpu_profile(gpu, profiles_dir, has_budget=True)  # an empty --gpu "$GPU" is refused, not ignored
    if is_share(budget):
        raise share(budget.strip())
    nbytes = parse_budget(budget, "--budget ") if budget is not None else None  # an empty "$BUDGET" is refused
    check_budget_fits(profile, nbytes, budget)
    if nbytes is None and profile is not None and profile.gpu_memory_bytes > 0:  # not a CPU profile's host RAM
        nbytes = int(profile.gpu_memory_bytes)
    note = (f"--budget {budget.strip()}" if budget is not None else
            f"--gpu {profile.name}" if nbytes and profile is not None else "none")
    return nbytes, profile, note


def set_threads(threads: int) -> str:
    """torch's intra-op threads for a `threads_option` of default 0: 0 is every core this process may use (eval,
    trace and quant-report all set them here, before the model loads). Returns the note for more threads than
    cores or a host other work keeps busy ("" otherwise), which the command says once the model has loaded
    (`say_busy_host`): a model the load refuses (a tokenizer.json that does not parse, a config.json its
    checkpoint does not match, an unknown model_type) was refused after that note, not in one line."""
    import torch

    n = threads or max(1, min(torch.get_num_threads(), usable_cores()))
    torch.set_num_threads(n)
    return oversubscribed_note(threads) or (busy_host_note(n) if not threads and n > 1 else "")


def say_busy_host(note: str) -> None:
    """`set_threads`'s note on stderr, if there is one."""
    if note:
        from rich.console import Console

        from advisor.terminal import print_wrapped

        print_wrapped(Console(stderr=True), f"note: {note}", 2)


def oversubscribed_note(threads: int) -> str:
    """`--threads N` above the cores this process may use (`usable_cores`): its threads take turns on them and wait
    for each other at every operation, so what it times (CPU expert times, decoding) prices no N-core host - 16
    threads on this 2-core host stored CPU expert times up to 29x one thread's, silently in `tune` and `eval`, and
    `profile` blamed other work for it. "" where N fits (0, every core, always does)."""
    cores = usable_cores()
    if threads <= cores:
        return ""
    return (f"--threads {threads} is more than the {cores} cores this process may use: its threads take turns on "
            f"them and wait for each other, so the times it measures price no {threads}-core host and run slower; "
            f"give --threads {cores} or fewer here, and {threads} on a host with {threads} cores")


def busy_host_note(threads: int) -> str:
    """Where the host's 1-minute load average exceeds the cores it leaves free (of those this process may use,
    `usable_cores`), what --threads 0 (`threads`, every core) costs: torch's threads wait on each other at every
    operation while one is descheduled (2 threads on 2 busy cores at load 4-6, measured: eval 6.6x and trace
    --offload 24.5x slower than 1 thread). "" on a quieter host."""
    if not hasattr(os, "getloadavg"):  # not on Windows
        return ""
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average to read
        return ""
    cores = usable_cores()
    free = cores - load
    if load <= free:
        return ""
    return (f"--threads 0 (the default: every core) runs {threads} threads, but this host's 1-minute load average is {load:.1f} "
            f"(measured: os.getloadavg) on {cores} cores, more than the {max(free, 0.0):.1f} it leaves free: the "
            f"threads wait on each other; --threads {max(1, int(free))} can be many times faster")


def refuse_canvas_past_memory(spec: str, config: dict[str, Any] | None, new_tokens: int, device: Any) -> None:
    """Refuse `--max-new-tokens new_tokens` for a model whose every forward (LLaDA-MoE) or last block's forwards
    (LLaDA2) run over the whole canvas, where that canvas's hidden states alone - new tokens x hidden size x the
    stored dtype's bytes (2 where none is stored), counted from config.json, a lower bound of what decoding holds -
    exceed `device`'s free memory. `trace --max-new-tokens 99999999` on the bundled model ran out of memory only
    after the busy-host and decoding notes (47.7 GiB for one allocation); called after `check_device` and before
    the model loads, so the refusal comes first and alone. Other families (a KV cache, a canvas per block) pass.
    `config`: the model's `spec_config`, as the command read it for its other checks."""
    from advisor.models import config_family, dtype_name
    from advisor.models.load import device_free_bytes

    family = config_family(config)
    if not new_tokens or config is None or family not in ("llada_moe", "llada2"):
        return
    hidden = config.get("hidden_size")
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden <= 0:
        return
    try:
        name = dtype_name(str(config.get("dtype") or config.get("torch_dtype") or "auto"))
    except UserError:
        name = None
    size = {"float32": 4, "float64": 8}.get(name or "", 2)
    need, free = new_tokens * hidden * size, device_free_bytes(device)
    if need > free:
        where = "available RAM (MemAvailable)" if str(device) == "cpu" else f"free memory of {device}"
        raise UserError(f"--max-new-tokens {new_tokens}: {spec} ({family}) decodes with forwards over the whole canvas, whose "
                        f"hidden states alone take {format_bytes(need)} ({new_tokens} x {hidden} hidden x {size} "
                        f"bytes, counted), more than the {format_bytes(free)} {where}; give a smaller "
                        "--max-new-tokens")


@contextmanager
def refuse_out_of_memory(what: str, advice: str) -> Iterator[None]:
    """An allocation the host or device cannot make while `what` runs becomes one line with the size asked and
    what to change, not the allocator's traceback. Matched by name, so this module need not import torch."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        text = str(e)
        if type(e).__name__ != "OutOfMemoryError" and "can't allocate memory" not in text \
                and not isinstance(e, MemoryError):
            raise
        raise UserError(f"out of memory while {what}{_asked(text)}; {advice}") from None


def _asked(message: str) -> str:
    """' (one allocation asked for 476.8 GiB)' from torch's out-of-memory message ('' when it names no size)."""
    from advisor.tune.model_backend import asked_bytes

    n = asked_bytes(message)
    return f" (one allocation asked for {format_bytes(n)})" if n else ""
