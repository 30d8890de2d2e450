"""LLaDA samplers: every mask filled, blocks decoded strictly in order, one on_forward per forward."""

from __future__ import annotations

import pytest
import torch
from test_llada2 import tiny_model as tiny_llada2
from test_llada_moe import MASK, VOCAB
from test_llada_moe import tiny_model as tiny_llada_moe
from torch import nn

from advisor.errors import UserError
from advisor.models.samplers import ForwardInfo, llada2_generate, llada_generate, transfer_schedule


class Recorder(nn.Module):
    """Wraps a model and keeps a copy of every canvas and attention mask it is called with."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []
        self.masks: list[torch.Tensor | None] = []

    def forward(self, input_ids, attention_mask=None, **kw):
        self.inputs.append(input_ids.clone())
        self.masks.append(attention_mask)
        return self.inner(input_ids, attention_mask=attention_mask, **kw)


class Constant(nn.Module):
    """A 'model' that always predicts `token` with probability ~1 (for threshold / eos behaviour)."""

    def __init__(self, token: int):
        super().__init__()
        self.token = token

    def forward(self, input_ids, **kw):
        logits = torch.zeros(*input_ids.shape, VOCAB)
        logits[..., self.token] = 50.0
        return type("Out", (), {"logits": logits})()


def test_transfer_schedule_is_linear_and_sums_to_masked():
    sched = transfer_schedule(torch.tensor([8, 7, 0]), 3)
    assert sched.tolist() == [[3, 3, 2], [3, 2, 2], [0, 0, 0]]


def test_llada_generate_fills_every_mask_block_by_block():
    rec = Recorder(tiny_llada_moe())
    prompt = torch.randint(0, VOCAB - 2, (2, 5))
    infos: list[ForwardInfo] = []
    out = llada_generate(
        rec, prompt, steps=8, gen_length=16, block_length=4, mask_id=MASK, on_forward=infos.append
    )
    assert out.shape == (2, 21)
    assert torch.equal(out[:, :5], prompt)
    assert not (out == MASK).any()
    # on_forward: once per forward, 2 steps in each of 4 blocks, in order
    assert len(infos) == len(rec.inputs) == 8
    assert [(i.index, i.step, i.block) for i in infos] == [(n, n % 2, n // 2) for n in range(8)]
    for info, x in zip(infos, rec.inputs, strict=True):
        start = 5 + 4 * info.block
        assert not (x[:, 5:start] == MASK).any()  # earlier blocks complete before this block starts
        assert (x[:, start + 4 :] == MASK).all()  # later blocks untouched
        assert (
            int((x[:, start : start + 4] == MASK).sum(1).min()) == 4 - 2 * info.step
        )  # linear schedule: 2 per step


def test_llada_generate_random_remasking_and_temperature_still_fill():
    torch.manual_seed(0)
    out = llada_generate(
        tiny_llada_moe(),
        torch.randint(0, VOCAB - 2, (1, 3)),
        steps=4,
        gen_length=8,
        block_length=8,
        mask_id=MASK,
        temperature=0.7,
        remasking="random",
    )
    assert not (out == MASK).any()


@pytest.mark.parametrize(
    "kw",
    [
        dict(steps=5, gen_length=16, block_length=4),
        dict(steps=8, gen_length=10, block_length=4),
        dict(steps=8, gen_length=16, block_length=4, remasking="sideways"),
    ],
)
def test_llada_generate_rejects_inconsistent_arguments(kw):
    with pytest.raises(UserError):
        llada_generate(tiny_llada_moe(), torch.zeros(1, 2, dtype=torch.long), mask_id=MASK, **kw)


def test_llada2_generate_is_block_causal_and_fills_every_mask():
    rec = Recorder(tiny_llada2())
    prompt = torch.randint(0, VOCAB - 2, (2, 6))
    infos: list[ForwardInfo] = []
    out = llada2_generate(
        rec,
        prompt,
        gen_length=10,
        block_length=4,
        steps=4,
        threshold=0.9,
        mask_id=MASK,
        on_forward=infos.append,
    )
    assert out.shape == (2, 16)
    assert torch.equal(out[:, :6], prompt)
    assert not (out == MASK).any()
    assert len(infos) == len(rec.inputs) and [i.index for i in infos] == list(range(len(infos)))
    blocks = [i.block for i in infos]
    assert blocks == sorted(blocks) and set(blocks) == {0, 1, 2}  # prompt ends inside block 1 of 4 tokens
    for info, x, mask in zip(infos, rec.inputs, rec.masks, strict=True):
        end = 8 + 4 * info.block  # decoding block spans [end - 4, end)
        assert x.shape[1] == end  # canvas cut after the current block
        assert not (x[:, : end - 4] == MASK).any()  # all earlier blocks complete
        assert mask.shape[-1] == end and mask.dtype == torch.bool
        assert not mask[0, 0, 0, 4:].any() and mask[0, 0, end - 1, :].all()  # block-causal
    steps_per_block = {b: sum(1 for i in infos if i.block == b) for b in set(blocks)}
    assert all(1 <= n <= 4 for n in steps_per_block.values())


def test_llada2_threshold_commits_all_confident_tokens_at_once():
    infos: list[ForwardInfo] = []
    out = llada2_generate(
        Constant(7),
        torch.zeros(1, 4, dtype=torch.long),
        gen_length=8,
        block_length=4,
        steps=4,
        threshold=0.95,
        mask_id=MASK,
        on_forward=infos.append,
    )
    assert (out[0, 4:] == 7).all()
    assert [(i.step, i.block) for i in infos] == [(0, 0), (0, 1)]  # one forward per block


def test_llada2_commits_at_least_one_token_per_step_below_threshold():
    infos: list[ForwardInfo] = []
    out = llada2_generate(
        tiny_llada2(),
        torch.zeros(1, 4, dtype=torch.long),
        gen_length=8,
        block_length=4,
        steps=4,
        threshold=1.01,
        mask_id=MASK,
        on_forward=infos.append,
    )
    assert not (out == MASK).any()
    assert [(i.step, i.block) for i in infos] == [(s, b) for b in range(2) for s in range(4)]


def test_llada2_stops_at_eos_and_pads_with_eos():
    eos = MASK - 1
    infos: list[ForwardInfo] = []
    out = llada2_generate(
        Constant(eos),
        torch.zeros(1, 4, dtype=torch.long),
        gen_length=12,
        block_length=4,
        mask_id=MASK,
        eos_id=eos,
        on_forward=infos.append,
    )
    assert (out[0, 4:] == eos).all()
    assert len(infos) == 1  # decoding stopped after the first block


def test_llada2_caps_steps_per_block_at_the_answer_length_as_the_reference():
    """LLaDA2.0's generate takes `steps = min(steps, gen_length // minimal_topk)` (minimal_topk 1): a 2-token
    answer with 4 steps per block is decoded in 2 steps of at least 2 commits (block of 4), not 4 of 1."""
    from advisor.models.generate import generate, steps_per_block
    from advisor.models.load import load_model

    infos: list[ForwardInfo] = []
    out = llada2_generate(tiny_llada2(), torch.zeros(1, 4, dtype=torch.long), gen_length=2, block_length=4,
                          steps=4, threshold=1.01, mask_id=MASK, on_forward=infos.append)
    assert not (out == MASK).any()
    assert [(i.step, i.block) for i in infos] == [(0, 0), (1, 0)]
    loaded = load_model("tiny:llada2")
    seen: list[ForwardInfo] = []
    generate(loaded, torch.zeros(1, 4, dtype=torch.long), max_new_tokens=2, steps=4, block_length=4,
             threshold=1.01, on_forward=seen.append)
    assert len(seen) == steps_per_block(loaded, max_new_tokens=2, steps=4, block_length=4) == 2
