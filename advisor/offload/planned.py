"""The runtime that computes one precision plan's experts on a loaded model, wherever the experts live.

A resident model quantizes its own expert weights (`QuantizedRuntime`). An offloaded model has none on the
device: its plan runs through the offload runtime over a host store packed from the checkpoint, with top-k
slots per layer (the outputs do not depend on the cache, only the bytes moved do).
"""

from __future__ import annotations

from typing import Any


def plan_runtime(loaded: Any, plan: Any, *, store: Any = None, profile: Any = None) -> Any:
    """An unattached runtime computing `plan` on `loaded` (`store`: an already packed `ExpertStore`)."""
    if not getattr(loaded, "offloaded", False):
        from advisor.quant.apply import quantize_experts

        return quantize_experts(loaded, plan, attach=False)
    from advisor.offload.runtime import OffloadRuntime
    from advisor.offload.store import ExpertStore, pins_stores

    if store is None:
        store = ExpertStore(loaded.moe, plan, pin=pins_stores(loaded.device))
    slots = [min(m.top_k, m.num_experts) for m in loaded.moe]
    return OffloadRuntime(loaded, store, slots_per_layer=slots, policy="lru", device=loaded.device, profile=profile,
                          attach=False)
