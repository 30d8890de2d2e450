"""The study's full-precision accuracy reference: the one rule that `report` (its baseline row, every change
"vs FP16") and `recommend` (the --max-accuracy-drop floor, "within 1 accuracy point of full precision") use.

Full precision is the study's 16-bit format, the one its baseline row is named by (`full_format`): the model's
own format, not whichever plan scored higher. The reference is a trial of that format; where none stores the
metric, of the other 16-bit format, else of fp32; of those the lowest-numbered (a plan's accuracy is measured once
and shared by its trials). Torch-free: read-only commands use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from advisor.baselines import SIXTEEN_BIT, full_precision

T = TypeVar("T")


def full_format(dtype: str | None, formats: Iterable[str | None], no_cache: str | None = None) -> str:
    """The study's full-precision 16-bit format, read from its stored trials: its stored no-cache trial's format
    (`no_cache`: the baselines', which the tuner chose by `advisor.tune.baseline_trials.space_full_format`), else
    the one 16-bit format its uniform plans ran at (`formats`; with both, neither), else its model's recorded
    `dtype` (`advisor.baselines.full_precision`)."""
    ran = {f for f in formats if f in SIXTEEN_BIT}
    return full_precision(dtype, no_cache if no_cache is not None else (ran.pop() if len(ran) == 1 else None))


def tiers(full: str | None) -> list[tuple[str, ...]]:
    """The formats a reference is looked for in, in order: `full`, the other 16-bit format, fp32 (without
    `full`, both 16-bit formats alike)."""
    if full in SIXTEEN_BIT:
        return [(full,), tuple(f for f in SIXTEEN_BIT if f != full), ("fp32",)]
    return [SIXTEEN_BIT, ("fp32",)]


def full_precision_reference(items: Sequence[T], full: str | None, fmt_of: Callable[[T], str | None],
                             number_of: Callable[[T], int]) -> tuple[T, str] | None:
    """The reference among `items` (those storing the metric) and its format: the lowest-numbered of the first
    tier (`tiers`) that has any; None when no item is a uniform 16- or 32-bit plan."""
    for fmts in tiers(full):
        cands = [t for t in items if fmt_of(t) in fmts]
        if cands:
            ref = min(cands, key=number_of)
            return ref, str(fmt_of(ref))
    return None
