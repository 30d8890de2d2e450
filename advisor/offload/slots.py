"""The cache's grammar, shared by the live runtime and the simulator: GPU expert slots per layer and the
prefetch strategies.

`resolve_slots` turns what a user writes (4, 50%, 0.5, "4,4,6,8") into slots per MoE layer; `PREFETCH` names
the prefetch strategies. Torch-free, so the search-space validator can read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from advisor.errors import UserError
from advisor.units import decimal

PREFETCH = ("none", "lookahead", "prev_step")


def resolve_slots(spec: Any, num_experts: Sequence[int]) -> list[int]:
    """Slots per layer from an int, a fraction (0, 1], a list, or a string ("4", "50%", "0.5", "4,4,6,8")."""
    n = len(num_experts)
    given = spec  # as the user wrote it: the error quotes this, not the parsed number

    def bad(why: str) -> UserError:
        return UserError(f"bad slots '{given}': {why}; give a count (4), a share of experts (50% or 0.5), "
                         f"or one count per MoE layer ({n} comma-separated)")

    if isinstance(spec, str):
        text = spec.strip()
        try:
            if "," in text:
                spec = [int(x) for x in text.split(",")]
            elif text.endswith("%") or "." in text:  # a share, in the one number syntax of shares (`DECIMAL`)
                number = decimal(text.removesuffix("%"))  # float() took '5_0%', '1e1%' and '0.5e0'
                if number is None:
                    raise ValueError(text)
                spec = number / 100.0 if text.endswith("%") else number
                if text.endswith("%") and not 0 < spec <= 1:
                    raise bad("a percentage must be in (0, 100]")
            else:
                spec = int(text)
        except ValueError as e:
            raise bad("not a number") from e
    if isinstance(spec, bool):
        raise bad("not a number")
    if isinstance(spec, float):
        if not 0 < spec <= 1:
            raise bad("a share of experts must be in (0, 1]")
        return [max(1, round(spec * e)) for e in num_experts]
    if isinstance(spec, int):
        if spec < 0:
            raise bad("negative")
        return [min(spec, e) for e in num_experts]
    caps = list(spec)
    if len(caps) != n:
        raise bad(f"{len(caps)} values for {n} MoE layers")
    if any(not isinstance(c, int) or c < 0 for c in caps):
        raise bad("counts must be non-negative integers")
    return [min(int(c), e) for c, e in zip(caps, num_experts, strict=True)]
