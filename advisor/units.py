"""Byte sizes as people read them, and the other small definitions every layer shares (the longest decode, the
seed range, a torch dtype's format name). Standard library only, importing nothing of the package: any layer
may import it (the model loader's messages use it as much as the hardware profiles do)."""

from __future__ import annotations

import math
import re

MAX_LENGTH = 2**31 - 1
"""The most tokens, steps or block length a decode takes (no decode needs more), from an option or a search
space: up to it, too much is one out-of-memory line (`advisor.commands.refuse_out_of_memory`); near 2**63,
torch's size arithmetic overflows first ("Storage size calculation overflowed", "Overflow when unpacking
long"), a traceback."""

MAX_PROMPTS = 10_000
"""The most prompts a search space's evaluation.trace_prompts / fidelity_prompts or `advisor trace --limit` takes:
every precision plan decodes that many (a task with fewer uses all it has; a model without a tokenizer decodes
that many seeded random ones, so 10**11 ran until interrupted). More than any task has (GSM8K's test set: 1319)."""

EVAL_FIDELITY_PROMPTS = 16
"""The prompts `advisor eval --precision` measures the fidelity proxy on without --fidelity-prompts, and
`advisor.eval.fidelity.task_reference` by default (a search space sets its own: evaluation.fidelity_prompts)."""

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
"""The seeds torch takes (`torch.Generator.manual_seed`; beyond them, "Overflow when unpacking long long"): a
command's --seed and a search space's evaluation.seed, which seed its decoding and prompt choice."""

SAMPLER_SEED_MAX = 2**31 - 1
"""The largest `advisor tune --seed` (from 0): numpy seeds the Optuna samplers (0 to 2**32 - 1), and a study's k-th
run (a resume, another worker) draws with seed + k, which this leaves room for."""


DECIMAL = r"\d+(?:\.\d*)?|\.\d+"
"""The one number syntax of sizes ("0.5GiB", `advisor.hardware.profiles.parse_budget`) and shares ("12.5%",
`advisor.tune.budget.memory_spec`): plain decimals, no sign, exponent, '_', inf or nan. float() took '1e-3%' as a
share while '1e3KB' was no size."""


def decimal(text: str) -> float | None:
    """`text` (spaces around it dropped) as a `DECIMAL` number, else None."""
    return float(text) if re.fullmatch(DECIMAL, text.strip()) else None


DTYPE_FORMATS = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32"}
"""torch dtype names -> the expert format of that dtype: ONE table, for a recorded dtype (model_meta's and a
trace's "dtype", a loaded expert's `torch.bfloat16`) and for the aliases a format name takes
(`advisor.quant.spec.parse_format`). Here, torch-free, so read-only commands name formats without torch."""


def dtype_format(dtype: object) -> str | None:
    """The dense expert format (bf16, fp16, fp32) of a torch dtype or its name as recorded: `torch.bfloat16`,
    "torch.bfloat16", "bfloat16", or a format name already ("bf16"); None for any other (float8, an integer
    dtype, nothing recorded)."""
    name = str(dtype or "").strip().lower().removeprefix("torch.")
    return DTYPE_FORMATS.get(name, name if name in DTYPE_FORMATS.values() else None)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and its noun, singular for one: "1 point", "3 points" (`plural` where it is not noun + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def binary_unit(n: float) -> tuple[str, int]:
    """The largest binary unit `n` bytes fill at least once ("B", 1 below one KiB)."""
    return next(((u, size) for u, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
                 if abs(n) >= size), ("B", 1))


def h2d_unit(no_cache: float) -> tuple[str, int]:
    """The one unit of H2D bytes per token in `advisor report`, its tables and figures alike (so that rows, curves
    and points compare at a glance): the largest binary unit in which the no-cache baseline still reads 100 or
    more, so that a point moving 1% of it still shows two figures at one decimal - KiB for the bundled model
    (3016.7 KiB), MiB for a LLaDA-MoE-7B (about 11,000 MiB per token, not 11 million KiB)."""
    return binary_unit(no_cache / 100)


def format_bytes(n: float, digits: int = 1) -> str:
    """Binary units, as budgets are usually read: 9.1 GiB, 512 MiB (`digits` decimals)."""
    unit, size = binary_unit(n)
    return f"{n:.0f} B" if size == 1 else f"{n / size:.{digits}f} {unit}"


def digits_apart(n: float, other: float, digits: int = 1) -> int:
    """The decimals that show `n` in binary units so that it does not read as `other`: `digits`, or two more
    where both round to one text (a 1.97 MiB budget and a 1.96 MiB point both read "2.0 MiB"; a 1.83 MiB budget
    and the 1.83 MiB a configuration needs beyond it, at two decimals)."""
    return digits + 2 if format_bytes(n, digits) == format_bytes(other, digits) and n != other else digits


def size_argument(n: float) -> str:
    """`n` bytes as a --budget value to paste: one word, in `format_bytes`' unit, rounded *up* to 2 decimals so that
    it holds `n` ("1.46MiB"); "1.46 MiB or more" was two shell words, rounded to below what was needed."""
    unit, size = binary_unit(n)
    return f"{math.ceil(n)}B" if size == 1 else f"{math.ceil(n * 100 / size) / 100:.2f}{unit}"


BUDGET_DIGITS = 2
"""The decimals of a memory size a user gives or a device has (a budget, a GPU's or a CPU profile's memory), as
`tune`, `studies`, `pareto`, `recommend` and `profile --list` print it ("4.34 MiB", "24.00 GiB"): `profile --list`
and `recommend` said 23.6 GiB of a CPU profile's RAM that `tune` said was 23.59 GiB."""


def budget_text(n: float, given: str | None, digits: int = BUDGET_DIGITS) -> str:
    """A budget's bytes beside the option it came from, as typed: "146.48 KiB (--budget 150KB)", "80.00 GiB (--gpu
    H100 SXM)". The bytes alone read as if they had been typed (150KB is SI: 150,000 bytes); `given` None: the bytes
    alone. The one form of a budget for `advisor tune`'s header and refusals and `advisor recommend`'s reasons."""
    return f"{format_bytes(n, digits)} ({given})" if given else format_bytes(n, digits)


NAMES_SHOWN = 10
"""The most study names an error line lists ("no study named 'x' ... (studies there: ...)"): a shared PostgreSQL
database holds hundreds, which made that one line thousands of characters."""


def names_text(names: list[str], wanted: str | None = None, limit: int = NAMES_SHOWN) -> str:
    """`names` for a one-line message: all of them when few; else the `limit` most like `wanted` (a mistyped name's
    neighbours first, by difflib's ratio) and how many more, e.g. "a, b, ... and 690 more"."""
    if len(names) <= limit:
        return ", ".join(names) or "none"
    import difflib

    close = difflib.get_close_matches(wanted or "", names, n=limit, cutoff=0.0) if wanted else names[:limit]
    return f"{', '.join(close)} ... and {len(names) - len(close)} more"
