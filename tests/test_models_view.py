"""The expert view over every supported family: enumeration, seam equality, read/replace, unsupported models."""

import pytest
import torch

from advisor.errors import UserError
from advisor.models.experts import ExpertWeights, ResidentRuntime, swiglu
from advisor.models.load import load_model
from advisor.models.tiny import TINY_FAMILIES, sample_inputs, seam_equality
from advisor.models.view import attach_runtime, detach_runtime, moe_layers

NATIVE = ["qwen3_moe", "olmoe", "mixtral", "deepseek_v3", "diffusion_gemma"]
# family -> (decoder layer of each MoE layer, type name of the always-active expert weights or None)
EXPECTED = {
    "qwen3_moe": ([0, 1], None),
    "olmoe": ([0, 1], None),
    "mixtral": ([0, 1], None),
    "deepseek_v3": ([1, 2], "DeepseekV3MLP"),  # first_k_dense_replace=1: layer 0 is dense
    "diffusion_gemma": ([0, 1], "DiffusionGemmaText4MLP"),  # dense MLP beside the experts
    "llada_moe": ([0, 1], None),
    "llada2": ([1, 2], "SwiGLU"),  # first_k_dense_replace=1, one shared expert
}
CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))


@pytest.fixture(scope="module")
def loaded():
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = load_model(f"tiny:{family}")
        return cache[family]

    return get


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_enumerates_every_moe_layer(loaded, family):
    lm = loaded(family)
    layers, shared = EXPECTED[family]
    assert [lay.index for lay in lm.moe] == list(range(len(layers)))
    assert [lay.decoder_layer for lay in lm.moe] == layers
    for lay in lm.moe:
        assert (lay.num_experts, lay.top_k, lay.hidden_size, lay.intermediate_size) == (8, 2, 32, 16)
        assert lay.dtype == torch.float32
        assert lay.expert_nbytes == 3 * 32 * 16 * 4 == lay.experts.get(3).nbytes
        assert lay.router is not None
        assert (type(lay.shared).__name__ if lay.shared is not None else None) == shared
        assert lay.layout == ("fused" if family in NATIVE else "list")


def test_diffusion_gemma_encoder_twin_shares_one_moe_index(loaded):
    lm = loaded("diffusion_gemma")
    for lay in lm.moe:
        assert "decoder" in lay.name and len(lay.aliases) == 1
        assert lay.aliases[0].gate_up_proj is lay.experts_module.gate_up_proj  # tied, not copied
    seen = []
    attach_runtime(lm.model, observers=[lambda layer, idx, _w: seen.append((layer, idx.shape[0]))])
    try:
        with torch.no_grad():
            lm.model(**sample_inputs("diffusion_gemma"))
    finally:
        detach_runtime(lm.model)
    # encoder (2x10 prompt tokens) then decoder (2x8 canvas tokens), both numbered by the shared MoE index
    assert seen == [(0, 20), (1, 20), (0, 16), (1, 16)]


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_seam_logits_equal_stock_implementation(family, device):
    result = seam_equality(family, device)
    assert result["max_abs_diff"] < 1e-5 * max(1.0, result["max_abs_logit"])
    assert result["layers_routed"] == [0, 1]
    # random weights must route non-trivially, or equality would prove little
    assert all(n > 2 for n in result["distinct_experts_per_layer"].values())


@pytest.mark.parametrize("family", NATIVE)
def test_native_models_switch_to_the_advisor_experts_implementation(loaded, family):
    model = loaded(family).model
    model.set_experts_implementation("eager")
    attach_runtime(model)
    try:
        assert all(m.config._experts_implementation == "advisor" for lay in moe_layers(model) for m in lay.modules)
    finally:
        detach_runtime(model)
    assert all(m.config._experts_implementation == "eager" for lay in moe_layers(model) for m in lay.modules)
    assert not any(hasattr(m, "_advisor") for lay in moe_layers(model) for m in lay.modules)


@pytest.mark.parametrize("family", ["qwen3_moe", "diffusion_gemma", "llada2"])
def test_runtime_decides_what_experts_compute(loaded, family):
    """A runtime that silences one layer's experts changes the logits: the seam is really on the path."""
    lm = loaded(family)
    kwargs = sample_inputs(family)
    asked = []

    class SilenceLayer1(ResidentRuntime):
        def experts_for(self, layer, ids):
            asked.append(layer)
            fns = super().experts_for(layer, ids)
            return {e: (lambda x: torch.zeros_like(x)) for e in fns} if layer == 1 else fns

    with torch.no_grad():
        attach_runtime(lm.model)
        base = lm.model(**kwargs).logits
        detach_runtime(lm.model)
        attach_runtime(lm.model, SilenceLayer1({lay.index: lay.experts for lay in lm.moe}))
        try:
            silenced = lm.model(**kwargs).logits
        finally:
            detach_runtime(lm.model)
    assert set(asked) == {0, 1}
    assert not torch.allclose(base, silenced, atol=1e-4)


@pytest.mark.parametrize("family", ["mixtral", "diffusion_gemma", "llada_moe"])
def test_get_set_one_expert_roundtrip(family):
    lm = load_model(f"tiny:{family}")  # own copy: this test edits weights
    lay = lm.moe[1]
    old = lay.experts.get(5)
    old = ExpertWeights(old.gate.clone(), old.up.clone(), old.down.clone())
    gen = torch.Generator().manual_seed(1)
    new = ExpertWeights(*(torch.randn(t.shape, generator=gen) for t in (old.gate, old.up, old.down)))
    lay.experts.set(5, new)
    got = lay.experts.get(5)
    for a, b in zip(got.tensors().values(), new.tensors().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(lay.experts.get(4).gate, lay.experts.get(4).gate)  # neighbours untouched
    x = torch.randn(3, lay.hidden_size)
    torch.testing.assert_close(swiglu(lay.experts.act, got)(x), swiglu(lay.experts.act, new)(x))
    lay.experts.set(5, old)
    assert torch.equal(lay.experts.get(5).down, old.down)


def test_unsupported_model_names_its_type_and_the_supported_families():
    from transformers import LlamaConfig, LlamaForCausalLM

    dense = LlamaForCausalLM(
        LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(UserError, match=r"'llama'.*supported: .*DiffusionGemma.*Qwen3-MoE"):
        moe_layers(dense)


def test_bf16_halves_the_bytes_per_expert():
    lm = load_model("tiny:qwen3_moe", dtype="bf16")
    assert lm.moe[0].dtype == torch.bfloat16
    assert lm.moe[0].expert_nbytes == 3 * 32 * 16 * 2
