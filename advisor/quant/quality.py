"""How much each format hurts each expert: the raw material for sensitivity-aware precision plans.

Per (MoE layer, expert, format): relative weight error ||W - W'||_F / ||W||_F over gate, up and down together,
and relative output error ||f'(x) - f(x)|| / ||f(x)|| of the whole SwiGLU expert on sample activations x.
Samples are either standard-normal vectors (post-norm hidden states are roughly unit-scale) or the hidden
states that really entered the layer on some input (`capture_activations`; all tokens of the layer, not only
those routed to the expert, so every expert is judged on the same inputs). Everything is computed in fp32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from advisor.models.experts import swiglu
from advisor.models.view import model_and_moe
from advisor.quant.expert import quantize_expert
from advisor.quant.formats import get_format


def capture_activations(
    loaded_or_model, input_ids: torch.Tensor, max_tokens: int = 256
) -> dict[int, torch.Tensor]:
    """Hidden states [T, H] entering each MoE layer's experts in one forward on `input_ids` (fp32, CPU)."""
    model = getattr(loaded_or_model, "model", loaded_or_model)
    moe = model_and_moe(loaded_or_model)[1]
    seen: dict[int, torch.Tensor] = {}

    def hook_for(index: int):
        def hook(_module, args, kwargs):
            hidden = args[0] if args else kwargs.get("hidden_states")
            if index not in seen and isinstance(hidden, torch.Tensor):
                seen[index] = hidden.detach().reshape(-1, hidden.shape[-1])[:max_tokens].float().cpu()

        return hook

    handles = [
        layer.experts_module.register_forward_pre_hook(hook_for(layer.index), with_kwargs=True)
        for layer in moe
    ]
    try:
        with torch.no_grad():
            model(input_ids.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return seen


def _rel(err: torch.Tensor, ref: torch.Tensor) -> float:
    denom = float(ref.norm())
    return float(err.norm()) / denom if denom > 0 else float(err.norm())


def quality_report(
    loaded_or_moe_layers,
    formats: Sequence[str],
    n_samples: int = 64,
    *,
    seed: int = 0,
    activations: dict[int, torch.Tensor] | None = None,
    captured_from: str = "",
    layers: Iterable[int] | None = None,
    max_experts: int | None = None,
) -> list[dict]:
    """One row per (layer, expert, format): bytes (counted) and weight/output relative errors (measured).

    `activations` (from `capture_activations`) replaces the random samples for the layers it has; `captured_from`
    says what input the forward that captured them decoded, in its rows' source. `layers` /
    `max_experts` restrict the report to a subset (big models have thousands of experts).
    """
    fmts = [get_format(f) for f in formats]
    wanted = None if layers is None else set(layers)
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    for layer in model_and_moe(loaded_or_moe_layers)[1]:
        if wanted is not None and layer.index not in wanted:
            continue
        if activations is not None and layer.index in activations:
            x, source = activations[layer.index][:n_samples].float(), f"measured:captured-activations{captured_from}"
        else:
            x, source = (
                torch.randn(n_samples, layer.hidden_size, generator=gen),
                "measured:random-activations",
            )
        act = layer.experts.act
        n_experts = layer.num_experts if max_experts is None else min(max_experts, layer.num_experts)
        with torch.no_grad():
            for e in range(n_experts):
                w = layer.experts.get(e)
                w32 = type(w)(**{k: t.detach().float() for k, t in w.tensors().items()})
                xd = x.to(w32.gate.device)
                ref = swiglu(act, w32)(xd)
                for fmt in fmts:
                    q = quantize_expert(w32, fmt)
                    deq = q.dequantize(torch.float32)
                    num = sum(
                        float((a - b).norm()) ** 2
                        for a, b in zip(deq.tensors().values(), w32.tensors().values(), strict=True)
                    )
                    den = sum(float(t.norm()) ** 2 for t in w32.tensors().values())
                    out = q.fn(act)(xd)
                    rows.append(
                        {
                            "layer": layer.index,
                            "expert": e,
                            "format": fmt.name,
                            "nbytes": q.nbytes,
                            "nbytes_source": "counted",
                            "weight_rel_err": (num / den) ** 0.5 if den > 0 else num**0.5,
                            "output_rel_err": _rel(out - ref, ref),
                            "error_source": source,
                            "n_samples": int(x.shape[0]),
                        }
                    )
    return rows


