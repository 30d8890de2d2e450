"""One probe forward when a model is loaded: its experts must really compute through the advisor seam.

The expert view accepts any module holding fused 3-D expert tensors (or the project's expert lists), but
accepting the tensors does not prove the model's forward computes with them through the advisor
implementation. A model whose forward bypasses it would be measured as if quantization and offloading
changed nothing (KL 0, zero look-ups, zero transfer). So every loaded model runs one short forward with
a counting runtime attached: every MoE layer must record look-ups, with activations as wide as the view's
hidden size and the view's shapes consistent with the config; otherwise one line says what is wrong.
"""

from __future__ import annotations

import torch
from torch import nn

from advisor.errors import UserError
from advisor.models import experts as seam
from advisor.models.checkpoint import EXPERT_COUNT_KEYS, EXPERT_WIDTH_KEYS
from advisor.models.view import SUPPORTED_TEXT, MoELayer, attach_runtime, detach_runtime


class _CountingRuntime:
    """Resident weights, counting look-ups per layer and the width of the activations each expert sees."""

    def __init__(self, layers: list[MoELayer]):
        self.resident = seam.ResidentRuntime({lay.index: lay.experts for lay in layers})
        self.lookups = {lay.index: 0 for lay in layers}
        self.widths: dict[int, set[int]] = {lay.index: set() for lay in layers}

    def experts_for(self, layer: int, expert_ids: list[int]):
        self.lookups[layer] += len(expert_ids)
        fns = self.resident.experts_for(layer, expert_ids)
        return {e: self._seen(layer, fn) for e, fn in fns.items()}

    def _seen(self, layer: int, fn):
        def run(x: torch.Tensor) -> torch.Tensor:
            self.widths[layer].add(int(x.shape[-1]))
            return fn(x)

        return run


def _text_config(model: nn.Module):
    """The config that describes the text model (a multimodal config's text part), or None."""
    config = getattr(model, "config", None)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _probe_inputs(model: nn.Module, family: str, device: torch.device) -> dict[str, torch.Tensor]:
    text = _text_config(model)
    vocab = int(getattr(text, "vocab_size", 0) or 0) or 16
    ids = (torch.arange(8, device=device) * 7 + 3) % max(vocab - 1, 1)
    inputs = {"input_ids": ids[None]}
    if family == "diffusion_gemma":
        inputs["decoder_input_ids"] = ids[None].flip(-1)
    return inputs


def _config_mismatch(text, lay: MoELayer) -> str | None:
    """What in the view disagrees with the (text) config (None when every field the config has agrees)."""
    hidden = getattr(text, "hidden_size", None)
    if isinstance(hidden, int) and hidden != lay.hidden_size:
        return f"hidden size {lay.hidden_size} read from the expert tensors, {hidden} in the config"
    count = next((getattr(text, a) for a in EXPERT_COUNT_KEYS if isinstance(getattr(text, a, None), int)), None)
    if count is not None and count != lay.num_experts:
        return f"{lay.num_experts} experts read from the tensors, {count} in the config"
    widths = [getattr(text, a) for a in EXPERT_WIDTH_KEYS if isinstance(getattr(text, a, None), int)]
    if widths and lay.intermediate_size not in widths:
        return f"expert width {lay.intermediate_size} read from the tensors, {widths[0]} in the config"
    return None


def verify_experts_path(model: nn.Module, layers: list[MoELayer], family: str) -> None:
    """One probe forward through a counting runtime; `UserError` (one line) unless every MoE layer's
    experts computed through it with the shapes the config describes."""
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", None) or type(model).__name__)
    where = f"model type '{model_type}'"
    text = _text_config(model)
    for lay in layers:
        mismatch = _config_mismatch(text, lay)
        if mismatch:
            raise UserError(f"{where}: MoE layer {lay.index} ({lay.name}): {mismatch}; its experts are laid out in "
                            f"a way this tool does not read correctly. Supported: {SUPPORTED_TEXT}")
    runtime = _CountingRuntime(layers)
    device = next(model.parameters()).device
    attach_runtime(model, runtime, layers=layers)
    try:
        with torch.no_grad():
            model(**_probe_inputs(model, family, device))
    except Exception as e:  # noqa: BLE001 - any failure here means the seam does not fit this model
        raise UserError(f"{where}: a probe forward through the advisor experts implementation failed "
                        f"({type(e).__name__}: {str(e)[:160]}). Supported: {SUPPORTED_TEXT}") from None
    finally:
        detach_runtime(model)
    silent = [lay for lay in layers if runtime.lookups[lay.index] == 0]
    if silent:
        names = ", ".join(f"{lay.index} ({lay.name})" for lay in silent[:4]) + (" ..." if len(silent) > 4 else "")
        raise UserError(
            f"{where}: a probe forward made no expert look-ups through the advisor experts implementation in "
            f"{len(silent)} of {len(layers)} MoE layers ({names}): its forward bypasses the experts module, so "
            f"precision and offloading would be measured as changing nothing. Supported: {SUPPORTED_TEXT}"
        )
    for lay in layers:
        if runtime.widths[lay.index] - {lay.hidden_size}:
            raise UserError(
                f"{where}: MoE layer {lay.index} ({lay.name}) computes its experts on activations of width "
                f"{sorted(runtime.widths[lay.index])}, not the hidden size {lay.hidden_size} the view reads. "
                f"Supported: {SUPPORTED_TEXT}"
            )
