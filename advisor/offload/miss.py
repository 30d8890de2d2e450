"""Where a missed expert computes: the ONE decision the live runtime and the simulator share.

A look-up's misses are the experts not resident in a slot (nor staged by prefetch). The cache policy
decides placement (which misses it admits into slots, which it does not keep); the miss policy decides
where each miss computes in *this* forward:

* ``copy`` - copied host->device (into its slot, or through a temporary buffer) and computed there
  (Mixtral-offloading style; what this tool did before);
* ``cpu`` - computed on the host from the host store in its stored format (llama.cpp ``-ot exps=CPU``,
  Fiddler, TIDE); an expert the policy admits is still copied into its slot for later forwards, off the
  critical path;
* ``hybrid`` - per expert and forward: copied when the tokens routed to it reach the layer's threshold
  (the token count at which the measured CPU compute costs as much as the copy), else computed on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

from advisor.errors import UserError

MISS_POLICIES = ("copy", "cpu", "hybrid")


def check_miss_policy(mode: str) -> str:
    if mode not in MISS_POLICIES:
        raise UserError(f"unknown miss policy '{mode}'; choose one of: {', '.join(MISS_POLICIES)}")
    return mode


def split_misses(
    misses: Sequence[int], tokens: dict[int, int] | None, mode: str, threshold: Sequence[int] | None
) -> tuple[list[int], list[int]]:
    """(copied, computed on the CPU) for `misses`; `tokens` maps expert -> routed tokens this forward,
    `threshold[e]` the smallest token count for which copying expert e is cheaper than CPU compute."""
    if mode == "copy" or not misses:
        return list(misses), []
    if mode == "cpu":
        return [], list(misses)
    if tokens is None or threshold is None:
        raise UserError("miss policy 'hybrid' needs token counts and a copy threshold from a CPU expert profile; "
                        "run `advisor profile` (or use miss policy 'copy' or 'cpu')")
    copied = [e for e in misses if tokens.get(e, 0) >= threshold[e]]
    if len(copied) == len(misses):
        return copied, []
    keep = set(copied)
    return copied, [e for e in misses if e not in keep]
