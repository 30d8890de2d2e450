"""The activation allowance `advisor tune` (and `inspect --budget`) adds to an offloaded model's counted peak is what the
widest steps of decoding the study's workload hold, as the model decodes it (`advisor.models.generate.widest_step`):
LLaDA-MoE and LLaDA2 compute logits for the block being decoded only; an autoregressive model prefills its prompt
(logits of the last position only), then decodes one token per step with a KV cache; DiffusionGemma encodes its
prompt, then denoises canvas after canvas against the encoded cache. The probe measures the bytes its steps' tensors
hold (`advisor.models.memory`; the CUDA allocator on a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advisor.eval.run import attached
from advisor.eval.tasks import get_task
from advisor.models.generate import generate
from advisor.models.load import load_model
from advisor.tune.model_backend import ModelBackend
from advisor.tune.space import parse_space
from tests.memory_helpers import HeldBytes
from tests.tune_helpers import FIDELITY_SPACE

# toy's block length 8: 13 new tokens are two LLaDA-MoE blocks (16 positions decoded past the prompt); LLaDA2's widest
# forward is its last block's, over the canvas of whole blocks
SPACE = FIDELITY_SPACE + "max_new_tokens = 13\n"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny checkpoint of a family with a 4096-token vocabulary (its logits are its largest tensors), written once."""
    from advisor.models.tiny import _model_class, randomize_, tiny_config

    root, written = tmp_path_factory.mktemp("probe"), {}

    def checkpoint(family: str) -> Path:
        if family not in written:
            config = tiny_config(family)
            (config.get_text_config() if family == "diffusion_gemma" else config).vocab_size = 4096
            cls = _model_class(family)
            model = cls.from_config(config) if cls.__name__.startswith("Auto") else cls(config)
            randomize_(model).eval().save_pretrained(str(root / family))
            written[family] = root / family
        return written[family]

    return checkpoint


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVISOR_CACHE_DIR", str(tmp_path / "cache"))


class _Zeros:
    def experts_for(self, layer, expert_ids):
        return {e: torch.zeros_like for e in expert_ids}


def _decoding_peak(loaded, backend) -> int:
    """The most bytes the tensors of decoding the workload's longest traced prompt (the one the probe runs) hold at
    once, as the study decodes it, experts costing nothing (what the probe leaves out of an allowance: the weights)."""
    ids = max(backend.prompts(backend.settings.trace_prompts), key=lambda t: t.shape[-1])
    with attached(loaded, _Zeros()), torch.no_grad(), HeldBytes() as held:
        generate(loaded, ids, **backend.decoding["generate"])
    return held.peak


@pytest.mark.parametrize("family", ["llada_moe", "llada2"])
def test_activation_allowance_is_what_a_decoding_step_holds(checkpoints, family):
    """On the CPU the allowance counted the two largest module outputs of the probe step: 132 KiB on the tiny
    LLaDA-MoE at a 4096 vocabulary (LLaDA2 136 KiB), the block's logits and one more, where decoding the same workload
    holds 641 KiB (258 KiB) at its peak: LLaDA-MoE's sampler upcasts the block's logits to float64 and softmaxes them
    (two tensors twice the logits' size, alive together), which no module outputs, so a budget admitted
    configurations that do not fit. The probe now measures the bytes its step's tensors hold (as the CUDA allocator
    measures them on a GPU): the whole decoding's peak, within 1% (a prompt's few ids)."""
    loaded = load_model(str(checkpoints(family)), offload=True)
    assert loaded.offloaded
    backend = ModelBackend(loaded, get_task("toy", seed=0), parse_space(SPACE).evaluation)
    peak = _decoding_peak(loaded, backend)
    assert abs(backend.shape.activation_bytes - peak) < 0.01 * peak, (backend.shape.activation_bytes, peak)
    width = 16 + 16 if family == "llada_moe" else 32  # the longest traced prompt (16) + 2 blocks / the whole canvas
    step = "first step" if family == "llada_moe" else "last block's first step"
    assert backend.activation_source == f"measured:live-tensors(probe decoding step: {step} over {width} positions)"


@pytest.mark.parametrize("family", ["qwen3_moe", "diffusion_gemma"])
def test_activation_allowance_of_families_decoded_by_transformers_generate_is_their_widest_steps(checkpoints, family):
    """Families decoded by transformers' generate were probed with one forward over prompt + max_new_tokens, which
    their decoding never runs: at a 4096 vocabulary that held 475 KiB on the tiny Qwen3-MoE (every position's logits)
    where its decoding holds 56 KiB at its peak (a prefill keeps its last position's logits, a decode step one
    position's, beside the KV cache), and 268 KiB on the tiny DiffusionGemma where its decoding holds 1035 KiB (each
    denoising step keeps the previous step's self-conditioning logits beside its own logits, their tempered copy and
    softmax and the sampler's distribution over the canvas). The probe now runs, through generate, the prefill and
    the last decode step after a cache of prompt + all but one new token (DiffusionGemma: its encoder prefill and the
    last canvas's denoising steps after the earlier canvases' cache): the whole decoding's peak, within 1%. (At most
    4 denoising steps per canvas, where toy decodes with 16: the same tensors, fewer forwards.)"""
    import dataclasses

    loaded = load_model(str(checkpoints(family)), offload=True)
    assert loaded.offloaded
    task = get_task("toy", seed=0)
    task = dataclasses.replace(task, gen_kwargs={**task.gen_kwargs, "steps": 4})
    backend = ModelBackend(loaded, task, parse_space(SPACE).evaluation)
    peak = _decoding_peak(loaded, backend)
    assert abs(backend.shape.activation_bytes - peak) < 0.01 * peak, (backend.shape.activation_bytes, peak)
    steps = ("prefill over 16 positions; last decode step after 28 cached" if family == "qwen3_moe" else
             "encoder prefill over 16 positions; last canvas's denoising steps over 8 positions after 24 encoded")
    assert backend.activation_source == f"measured:live-tensors(probe decoding step: {steps})"


def test_the_cuda_meter_counts_its_windows_as_the_cpu_meter_does(monkeypatch):
    """A GPU probe's meter (`CudaPeak`, the allocator's peak) had no CPU test. With a fake allocator it counts as
    `HeldBytes` does: above what was allocated when it started, the most in any window marked by open()/close()
    (state built before a window counts, what ran before the first window does not), and without windows from
    the start."""
    from advisor.models.memory import CudaPeak, peak_meter

    alloc = {"now": 100, "peak": 100}  # 100: the weights

    def to(n: int) -> None:
        alloc["now"] = n
        alloc["peak"] = max(alloc["peak"], n)

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: alloc["now"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: alloc["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: alloc.update(peak=alloc["now"]))
    cuda = torch.device("cuda")
    assert isinstance(peak_meter(cuda), CudaPeak)
    with peak_meter(cuda) as meter:
        to(1100), to(100)  # warm-up before the first window: not counted
        to(150)  # state the step runs in (a KV cache)
        meter.open()
        to(400), to(160)
        meter.close()
        to(1000), to(160)  # between windows: not counted
        meter.open()
        to(500), to(160)
        meter.close()
    assert meter.peak == 400
    with peak_meter(cuda) as meter:
        to(300), to(160)
    assert meter.peak == 140  # above the 160 allocated as it started
