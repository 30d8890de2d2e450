"""Tiny random-weight models of every supported family: the real architectures at toy size.

They let tests and CPU-only machines exercise the whole pipeline (expert view, quantization,
offloading, decoding) in seconds, without any download. Weights are drawn from a seeded
generator with a spread large enough (std ~0.08) that routing is not degenerate (at the library's
default init of 0.02 nearly every token picks the same experts).
"""

from __future__ import annotations

import torch
from torch import nn

from advisor.models import TINY_FAMILIES, check_tiny_family  # defined torch-free, for the CLI's checks
from advisor.models.tiny_sizes import MASK_TOKEN_ID, TINY_VOCAB, tiny_fields  # noqa: F401 - the sizes, torch-free


def _config(family: str):
    import transformers as tf

    fields = tiny_fields(family)
    if family == "llada_moe":
        from advisor.models.llada_moe import LLaDAMoEConfig

        return LLaDAMoEConfig(**fields)
    if family == "llada2":
        from advisor.models.llada2 import LLaDA2MoeConfig

        return LLaDA2MoeConfig(**fields)
    classes = {"qwen3_moe": tf.Qwen3MoeConfig, "olmoe": tf.OlmoeConfig, "mixtral": tf.MixtralConfig,
               "deepseek_v3": tf.DeepseekV3Config, "diffusion_gemma": tf.DiffusionGemmaConfig}
    return classes[family](**fields)


def _model_class(family: str):
    import transformers as tf

    if family == "diffusion_gemma":
        return tf.DiffusionGemmaForBlockDiffusion
    if family == "llada_moe":
        from advisor.models.llada_moe import LLaDAMoEModelLM

        return LLaDAMoEModelLM
    if family == "llada2":
        from advisor.models.llada2 import LLaDA2MoeModelLM

        return LLaDA2MoeModelLM
    return tf.AutoModelForCausalLM


def randomize_(model: nn.Module, seed: int = 0, std: float = 0.08) -> nn.Module:
    """Overwrite every parameter with seeded noise: norms/scales around 1, everything else N(0, std)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(remove_duplicate=True)):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            if p.dim() == 1 and ("norm" in name or "scale" in leaf):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(std * noise)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias") or name.endswith("expert_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
    return model


def tiny_config(family: str):
    """The tiny config of `family` (see `TINY_FAMILIES`; any case)."""
    return _config(check_tiny_family(family))


def build_tiny(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A deterministic tiny random model of `family` (any case) in eval mode."""
    family = check_tiny_family(family)
    config = tiny_config(family)
    cls = _model_class(family)
    torch.manual_seed(seed)
    model = cls.from_config(config) if cls.__name__.startswith("Auto") else cls(config)
    randomize_(model, seed=seed)
    return model.to(dtype).eval()


def llada_moe_shaped(
    seed: int = 0, *, experts: int = 64, top_k: int = 8, layers: int = 2, hidden: int = 32, expert_ffn: int = 16
) -> nn.Module:
    """A random LLaDA-MoE with the published routing shape (64 experts, top-8) at toy width: the routing
    workload of the real model for cache studies, at a cost a CPU can replay."""
    from advisor.models.llada_moe import LLaDAMoEConfig, LLaDAMoEModelLM

    kw = tiny_fields("llada_moe")
    kw.update(num_experts=experts, num_experts_per_tok=top_k, num_hidden_layers=layers, hidden_size=hidden,
              expert_intermediate_size=expert_ffn, dense_intermediate_size=4 * hidden)
    torch.manual_seed(seed)
    return randomize_(LLaDAMoEModelLM(LLaDAMoEConfig(**kw)), seed=seed).eval()


def sample_inputs(family: str, batch: int = 2, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Forward kwargs for a tiny model of `family` (DiffusionGemma also needs a canvas for its decoder)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY_VOCAB - 8, (batch, length), generator=gen)
    if family == "diffusion_gemma":
        canvas = torch.randint(3, TINY_VOCAB - 8, (batch, 8), generator=gen)
        return {"input_ids": ids, "decoder_input_ids": canvas}
    return {"input_ids": ids}


def seam_equality(family: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    """Logits through the project's experts seam vs the stock implementation, on `device`.

    Native families compare against transformers' "eager" experts; list-layout (LLaDA) families
    against a direct per-token loop over the expert modules. Returns the max abs difference.
    """
    from advisor.models.view import attach_runtime, detach_runtime, moe_layers

    model = build_tiny(family, dtype=dtype).to(device)
    kwargs = {k: v.to(device) for k, v in sample_inputs(family).items()}
    layers = moe_layers(model)
    native = layers[0].layout == "fused"
    with torch.no_grad():
        if native:
            model.set_experts_implementation("eager")
            reference = model(**kwargs).logits.float()
        else:
            reference = _list_reference_logits(model, layers, kwargs)
        routed: dict[int, set[int]] = {}
        attach_runtime(model, observers=[lambda lay, idx, _w: routed.setdefault(lay, set()).update(idx.flatten().tolist())])
        try:
            got = model(**kwargs).logits.float()
        finally:
            detach_runtime(model)
    return {
        "family": family,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "max_abs_diff": float((got - reference).abs().max()),
        "max_abs_logit": float(reference.abs().max()),
        "layers_routed": sorted(routed),
        "distinct_experts_per_layer": {k: len(v) for k, v in sorted(routed.items())},
        "source": "measured:" + ("cuda" if str(device).startswith("cuda") else "cpu"),
    }


def _list_reference_logits(model: nn.Module, layers: list, kwargs: dict) -> torch.Tensor:
    """Logits with each list-layout experts module replaced by a plain per-expert loop (no seam)."""
    originals = {}

    def loop(module):
        def forward(hidden, index, weights):
            out = torch.zeros_like(hidden)
            for e in torch.unique(index).tolist():
                tok, pos = torch.where(index == e)
                out.index_add_(0, tok, module[e](hidden[tok]) * weights[tok, pos, None].to(hidden.dtype))
            return out

        return forward

    for lay in layers:
        originals[lay.experts_module] = lay.experts_module.forward
        lay.experts_module.forward = loop(lay.experts_module)
    try:
        return model(**kwargs).logits.float()
    finally:
        for module, forward in originals.items():
            module.forward = forward


def gpu_checks() -> dict:
    """One prepared CUDA run: every tiny family through the seam on the GPU (fp32 and bf16) vs stock."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    results = []
    for family in TINY_FAMILIES:
        for dtype in (torch.float32, torch.bfloat16):
            try:
                results.append(seam_equality(family, "cuda", dtype))
            except Exception as e:  # report, don't hide: one family failing must not lose the others
                results.append({"family": family, "dtype": str(dtype), "error": f"{type(e).__name__}: {e}"})
    return {"seam_equality": results, "device": torch.cuda.get_device_name(0)}
