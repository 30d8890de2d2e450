"""Byte sizes as people read them. Standard library only: any layer may import it (the model loader's
messages use it as much as the hardware profiles do)."""

from __future__ import annotations

MAX_LENGTH = 2**31 - 1
"""The most tokens, steps or block length a decode takes (no decode needs more), from an option or a search
space: up to it, too much is one out-of-memory line (`advisor.commands.refuse_out_of_memory`); near 2**63,
torch's size arithmetic overflows first ("Storage size calculation overflowed", "Overflow when unpacking
long"), a traceback."""

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
"""The seeds torch takes (`torch.Generator.manual_seed`; beyond them, "Overflow when unpacking long long"): a
command's --seed and a search space's evaluation.seed, which seed its decoding and prompt choice."""


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and its noun, singular for one: "1 point", "3 points" (`plural` where it is not noun + s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def format_bytes(n: float, digits: int = 1) -> str:
    """Binary units, as budgets are usually read: 9.1 GiB, 512 MiB (`digits` decimals)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.{digits}f} {unit}"
    return f"{n:.0f} B"
