"""Fidelity's memory is bounded by its chunk size, not by the prompts x positions x vocabulary of the logits."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from advisor.cli import app
from tests.memory_helpers import HeldBytes

VOCAB = 32768
"""A big vocabulary (the character tokenizer uses the first ~100 ids): one prompt's float logits are ~8 MiB."""


@pytest.fixture(scope="module")
def big_vocab_dir(tmp_path_factory):
    from advisor.eval.chartok import build_tokenizer
    from advisor.models.llada_moe import LLaDAMoEConfig, LLaDAMoEModelLM
    from scripts.train_bundled import save

    tok = build_tokenizer()
    cfg = LLaDAMoEConfig(vocab_size=VOCAB, hidden_size=16, dense_intermediate_size=32, expert_intermediate_size=8,
                         num_hidden_layers=2, num_attention_heads=2, num_experts=4, num_experts_per_tok=2,
                         max_position_embeddings=256, initializer_range=0.2, rope_theta=10000.0,
                         pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, mask_token_id=tok.mask_token_id,
                         bos_token_id=None)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bigvocab") / "m"
    save(LLaDAMoEModelLM(cfg).eval(), tok, out, {"task": "toy", "test": True}, "float32")
    return out


def test_eval_fidelity_holds_one_chunk_of_logits_and_gives_the_same_numbers(big_vocab_dir, tmp_path, monkeypatch):
    """`advisor eval --precision` put every prompt's logits on the device at once, then a float copy of them (a
    DiffusionGemma at its 256-token canvas, 262k vocabulary, 16 prompts: ~2 GiB of bf16 logits + ~4 GiB float).
    It now forwards prompt groups and upcasts blocks of positions of at most fidelity.CHUNK_BYTES, keeping only the
    reference and per-position KL / top-1 matches: the same numbers as one pass over all logits (the chunk larger
    than every prompt's logits together), while the tensors held at once stay far below all prompts' logits."""
    import advisor.eval.fidelity as fid
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model

    prompts = 8
    loaded = load_model(str(big_vocab_dir))
    inputs = fid.task_inputs(loaded, get_task("toy", limit=prompts), n=prompts, seed=0)
    all_logits = inputs["input_ids"].numel() * VOCAB * 4  # float32 logits of every prompt's every position
    n_scored = int(inputs["positions"].sum())
    assert all_logits > 40 * 2**20 and n_scored * VOCAB * 4 <= fid.FULL_VOCAB_BUDGET  # an exact reference

    def run(chunk: int) -> tuple[dict, int]:
        """The CLI's fidelity numbers, and the most bytes its reference and fidelity steps held at once (its
        generation, which keeps logits of its own, is not this measure's)."""
        monkeypatch.setattr(fid, "CHUNK_BYTES", chunk)
        peaks = []

        def measured(step):
            def call(*args, **kwargs):
                with HeldBytes() as held:
                    result = step(*args, **kwargs)
                peaks.append(held.peak)
                return result
            return call

        for name in ("reference_for", "fidelity"):  # what `advisor eval` imports when it measures fidelity
            monkeypatch.setattr(fid, name, measured(getattr(fid, name)))
        out = tmp_path / f"{chunk}.json"
        r = CliRunner().invoke(app, ["eval", str(big_vocab_dir), "--task", "toy", "--limit", str(prompts),
                                     "--precision", "int4", "--fidelity-prompts", str(prompts), "--json", str(out),
                                     "--max-new-tokens", "2", "--no-progress", "--threads", "1"])
        monkeypatch.undo()
        assert r.exit_code == 0, r.output[-2000:]
        assert len(peaks) == 2, peaks
        return json.loads(out.read_text())["fidelity"], max(peaks)

    whole, whole_peak = run(1 << 40)  # one block: every scored position's logits upcast at once
    chunked, peak = run(1 << 20)  # one prompt per forward, 8 positions per float block
    assert chunked["fidelity_positions"] == whole["fidelity_positions"] == n_scored
    assert chunked["fidelity_top1"] == whole["fidelity_top1"]
    # float rounding: one prompt per forward vs all at once changes logits by ~1e-7, and the KL (~1e-4 here) is a
    # sum over 32k terms of near-equal log-probs - it moved by ~1e-8
    assert chunked["fidelity_kl"] == pytest.approx(whole["fidelity_kl"], rel=1e-5, abs=1e-7)
    assert chunked["source"] == whole["source"]
    # held at once, the exact reference (n_scored x vocab) included: one prompt's logits, a 1 MiB block and the
    # reference, far below every prompt's logits (which the old single pass held, then a copy of the scored ones)
    assert whole_peak > all_logits
    assert peak < all_logits / 2, (peak, all_logits)

    # the top-k + rest reference of a bigger vocabulary (forced here by a small exact budget), chunked the same way
    from advisor.quant.apply import quantize_experts

    runtime = quantize_experts(loaded, "int4", attach=False)
    monkeypatch.setattr(fid, "FULL_VOCAB_BUDGET", 0)
    got = {}
    for chunk in (1 << 40, 1 << 20):
        monkeypatch.setattr(fid, "CHUNK_BYTES", chunk)
        ref = fid.reference_logits(loaded, inputs, keep=64)
        assert ref.token_ids.shape == ref.log_probs.shape == (n_scored, 64)
        got[chunk] = fid.fidelity(loaded, ref, runtime)
    assert got[1 << 20]["fidelity_top1"] == got[1 << 40]["fidelity_top1"]
    assert got[1 << 20]["fidelity_kl"] == pytest.approx(got[1 << 40]["fidelity_kl"], rel=1e-5, abs=1e-7)


def test_a_small_vocabulary_is_kept_whole_however_many_positions_are_scored():
    """A model whose vocabulary is no larger than the kept top-k (tiny:*, 256 ids) got the top-k + rest reference
    once its positions passed `FULL_VOCAB_BUDGET` (65536 of them: 4100 random-id prompts of 16 tokens, well within
    `fidelity_prompts` <= 10000): its whole vocabulary sorted at every position and kept with int64 ids beside - 3x
    the exact reference's bytes (10000 prompts: 470 MiB for 156), for the same numbers. It is now kept exact."""
    import advisor.eval.fidelity as fid
    from advisor.models.load import load_model

    torch.set_num_threads(1)
    loaded = load_model("tiny:qwen3_moe")
    vocab = int(loaded.model.config.vocab_size)
    ids = torch.randint(3, vocab - 2, (4100, 16), generator=torch.Generator().manual_seed(0))
    n = ids.numel()
    assert n * vocab * 4 > fid.FULL_VOCAB_BUDGET and vocab <= 256
    ref = fid.reference_logits(loaded, ids)
    assert ref.token_ids is None and ref.log_probs.shape == (n, vocab)
    assert ref.log_probs.nbytes == n * vocab * 4
    # an exact reference, as a budget that holds every position gives
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fid, "FULL_VOCAB_BUDGET", 1 << 40)
        assert torch.equal(fid.reference_logits(loaded, ids).log_probs, ref.log_probs)
