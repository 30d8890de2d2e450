"""Where a missed expert computes: the ONE decision the live runtime and the simulator share.

A look-up's misses are the experts not resident in a slot (nor staged by prefetch). The cache policy
decides placement (which misses it admits into slots, which it does not keep); the miss policy decides
where each miss computes in *this* forward:

* ``copy`` - copied host->device (into its slot, or through a temporary buffer) and computed there
  (Mixtral-offloading style; what this tool did before);
* ``cpu`` - computed on the host from the host store in its stored format (llama.cpp ``-ot exps=CPU``,
  Fiddler, TIDE); an expert the policy admits is still copied into its slot for later forwards, off the
  critical path;
* ``hybrid`` - per layer and forward, the CPU balanced against the link (as Fiddler, HybriMoE and
  KTransformers schedule): start from the per-expert rule (copied when its tokens reach the threshold at
  which copy + device compute costs as much as CPU compute for that expert alone), then, since the CPU runs
  beside the device, move misses across while the look-up's modelled time (`LayerCosts`:
  max(copy + gpu, cpu, copy + background)) drops: the heaviest CPU expert to the link while the CPU is the
  critical path, the lightest copied expert to the CPU otherwise. Prefetch copies the look-up waits on share
  the link, so they count as background. The result is never slower, on that model, than the per-expert
  rule, `copy` or `cpu`. Without a cost model (thresholds only) hybrid is the
  per-expert rule; without thresholds it refuses.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from advisor.errors import UserError
from advisor.offload.timing import link_ms, lookup_ms

MISS_POLICIES = ("copy", "cpu", "hybrid")


def check_miss_policy(mode: str) -> str:
    if mode not in MISS_POLICIES:
        raise UserError(f"unknown miss policy '{mode}'; choose one of: {', '.join(MISS_POLICIES)}")
    return mode


def split_misses(
    misses: Sequence[int], tokens: dict[int, int] | None, mode: str, threshold: Sequence[int] | None,
    costs: Any = None, device: Sequence[int] = (), admitted: Collection[int] = (), pending_ms: float = 0.0,
) -> tuple[list[int], list[int]]:
    """(copied, computed on the CPU) for `misses`; `tokens` maps expert -> routed tokens this forward,
    `threshold[e]` the smallest token count for which copying expert e is cheaper than CPU compute.
    hybrid with `costs` (the layer's `LayerCosts`) balances the split: `device` are the look-up's experts
    on the device whatever it decides (hits, staged), `admitted` the misses the policy keeps in a slot,
    `pending_ms` the link time of prefetch copies this look-up waits on (background it cannot move)."""
    if mode == "copy" or not misses:
        return list(misses), []
    if mode == "cpu":
        return [], list(misses)
    if tokens is None or threshold is None:
        raise UserError("miss policy 'hybrid' needs token counts and a copy threshold from a CPU expert profile; "
                        "run `advisor profile` (or use miss policy 'copy' or 'cpu')")
    copied = [e for e in misses if tokens.get(e, 0) >= threshold[e]]
    keep = set(copied)
    on_cpu = [e for e in misses if e not in keep]
    if costs is None:
        return copied, on_cpu
    return balance(costs, tokens, device, copied, on_cpu, admitted, pending_ms)


def balance(costs: Any, tokens: dict[int, int], device: Sequence[int], copied: list[int], on_cpu: list[int],
            admitted: Collection[int], pending_ms: float = 0.0) -> tuple[list[int], list[int]]:
    """The split with the least modelled look-up time along one path from (copied, on_cpu): the heaviest
    CPU experts moved to the link one by one when the CPU side is critical, else the lightest copied experts
    to the CPU. The walk stops once the side that only grows reaches the best time (nothing further on can
    beat it), so it returns the path's minimum: no slower than the start, than the path's end (all copied,
    or all on the CPU) and - the other end's time being at least the start's critical side - the other end."""
    n = tokens.__getitem__
    transfer, eb, layer = costs.link.transfer_ms, costs.expert_bytes, costs.gpu_layer_ms
    adm = set(admitted)
    gpu = sum(costs.gpu_ms(e, n(e)) for e in device) + sum(costs.gpu_ms(e, n(e)) for e in copied)
    n_dev = len(device) + len(copied)
    cpu = costs.cpu_batch_ms([(e, n(e)) for e in on_cpu])
    cb, cn = sum(eb[e] for e in copied), len(copied)
    placed = [e for e in on_cpu if e in adm]
    pb, pn = sum(eb[e] for e in placed), len(placed)

    def times() -> tuple[float, float]:
        """(`lookup_ms`, its device side `link_ms`) of the current split: the terms of
        `LayerCosts.lookup_terms`, kept as running sums (a move changes one expert's terms), with the pending
        prefetch copies in the background as `CacheLayer` adds them."""
        g = gpu + (layer if n_dev else 0.0)
        copy, bg = transfer(cb, cn) if cn else 0.0, (transfer(pb, pn) if pn else 0.0) + pending_ms
        return lookup_ms(g, copy, cpu, bg), link_ms(g, copy, bg)

    best, link = times()
    to_link, moved = cpu >= link, 0
    path = sorted(on_cpu, key=n, reverse=True) if to_link else sorted(copied, key=n)
    s = 1 if to_link else -1  # +1: an expert leaves the CPU for the link; -1: the reverse
    for i, e in enumerate(path, 1):
        b = eb[e]
        gpu, n_dev, cb, cn = gpu + s * costs.gpu_ms(e, n(e)), n_dev + s, cb + s * b, cn + s
        cpu -= s * costs.cpu_ms(e, n(e))  # cpu_batch_ms is the sum of cpu_ms
        if e in adm:
            pb, pn = pb - s * b, pn - s
        total, link = times()
        if total < best:
            best, moved = total, i
        elif (link if to_link else cpu) >= best:
            break
    if not moved:
        return copied, on_cpu
    step = set(path[:moved])
    if to_link:
        return copied + path[:moved], [e for e in on_cpu if e not in step]
    return [e for e in copied if e not in step], on_cpu + path[:moved]
