"""The diffusion samplers upcast and softmax only the positions they can commit (the block being decoded), and
decode greedily exactly as the full-sequence algorithm did."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from advisor.models.generate import generate
from advisor.models.load import load_model
from advisor.models.samplers import block_causal_mask, transfer_schedule


def _logits(model, x, **kw):
    out = model(x, **kw)
    return out.logits if hasattr(out, "logits") else out[0]


def reference_llada(model, ids, *, steps, gen_length, block_length, mask_id, remasking="low_confidence"):
    """The previous LLaDA-MoE loop at temperature 0: argmax and float64 softmax over the whole [B, L, V] logits."""
    b, p = ids.shape
    x = torch.full((b, p + gen_length), mask_id, dtype=torch.long)
    x[:, :p] = ids
    per_block = steps // (gen_length // block_length)
    for start in range(p, p + gen_length, block_length):
        end = start + block_length
        schedule = transfer_schedule((x[:, start:end] == mask_id).sum(dim=1), per_block)
        for step in range(per_block):
            masked = x == mask_id
            logits = _logits(model, x)
            x0 = logits.argmax(dim=-1)
            if remasking == "low_confidence":
                conf = torch.gather(F.softmax(logits.to(torch.float64), dim=-1), -1, x0[..., None]).squeeze(-1)
            else:
                conf = torch.rand(x0.shape, dtype=torch.float64)
            in_block = torch.zeros_like(masked)
            in_block[:, start:end] = True
            conf = torch.where(masked & in_block, conf, -torch.inf)
            commit = torch.zeros_like(masked)
            for row in range(b):
                if int(schedule[row, step]):
                    commit[row, torch.topk(conf[row], int(schedule[row, step])).indices] = True
            x = torch.where(commit, x0, x)
    return x[:, p:]


def reference_llada2(model, ids, *, gen_length, block_length, steps, threshold, mask_id, eos_id):
    """The previous LLaDA2 loop at temperature 0: the model's logits over the whole cut canvas, then the block's."""
    steps = min(steps, gen_length)
    b, p = ids.shape
    total = p + gen_length
    canvas = -(-total // block_length) * block_length
    x = torch.full((b, canvas), mask_id, dtype=torch.long)
    x[:, :p] = ids
    mask = block_causal_mask(canvas, block_length)
    positions = torch.arange(canvas)[None].expand(b, -1)
    minimum = transfer_schedule(torch.tensor([block_length]), steps)[0]
    for start in range(p // block_length * block_length, canvas, block_length):
        end = start + block_length
        for step in range(steps):
            active = x[:, start:end] == mask_id
            active[:, : max(0, p - start)] = False
            if not active.any():
                break
            logits = _logits(model, x[:, :end], attention_mask=mask[:, :, :end, :end],
                             position_ids=positions[:, :end]).float()[:, start:end]
            probs = F.softmax(logits, dim=-1)
            x0 = probs.argmax(dim=-1)
            conf = torch.where(active, torch.gather(probs, -1, x0[..., None]).squeeze(-1), -torch.inf)
            commit = active & (conf > threshold)
            for row in range(b):
                n, need = int(active[row].sum()), int(minimum[step])
                if n and int(commit[row].sum()) < min(need, n):
                    commit[row] = False
                    commit[row, torch.topk(conf[row], min(need, n)).indices] = True
            x[:, start:end] = torch.where(commit, x0, x[:, start:end])
        if eos_id is not None and (x[:, p:end] == eos_id).any(dim=1).all():
            x[:, end:] = eos_id
            break
    return x[:, p:total]


def reference_greedy(model, ids, *, max_new_tokens):
    """Autoregressive greedy decoding from the full sequence's logits (no cache, no logits_to_keep)."""
    x = ids
    for _ in range(max_new_tokens):
        x = torch.cat([x, _logits(model, x)[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return x[:, ids.shape[1]:]


def _ids(batch=3, length=7, seed=1):
    return torch.randint(3, 90, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_llada_moe_greedy_generate_is_the_full_sequence_algorithms(remasking):
    loaded = load_model("tiny:llada_moe")
    ids = _ids()
    got = generate(loaded, ids, max_new_tokens=8, steps=8, block_length=4, remasking=remasking, seed=3)
    torch.manual_seed(3)  # generate seeds its own generator the same way
    want = reference_llada(loaded.model, ids, steps=8, gen_length=8, block_length=4,
                           mask_id=loaded.mask_token_id, remasking=remasking)
    assert torch.equal(got, want)


def test_llada2_greedy_generate_is_the_full_canvas_algorithms():
    loaded = load_model("tiny:llada2")
    ids = _ids(length=6)
    for threshold in (0.95, 0.02):  # one commit per step, and several at once
        got = generate(loaded, ids, max_new_tokens=9, steps=4, block_length=4, threshold=threshold)
        eos = loaded.model.config.eos_token_id
        want = reference_llada2(loaded.model, ids, gen_length=9, block_length=4, steps=4, threshold=threshold,
                                mask_id=loaded.mask_token_id, eos_id=eos if isinstance(eos, int) else None)
        assert torch.equal(got[:, : want.shape[1]], want)


@pytest.mark.parametrize("family", ["qwen3_moe", "olmoe", "mixtral", "deepseek_v3"])
def test_autoregressive_greedy_generate_is_the_full_sequence_argmax(family):
    loaded = load_model(f"tiny:{family}")
    ids = _ids(batch=2)
    got = generate(loaded, ids, max_new_tokens=4)
    want = reference_greedy(loaded.model, ids, max_new_tokens=4)
    n = min(got.shape[1], want.shape[1])
    assert torch.equal(got[:, :n], want[:, :n])


class Largest(TorchDispatchMode):
    """The bytes of the largest tensor of each dtype that an op makes while the mode is on (views - of the weights,
    say - are no new tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest: dict[torch.dtype, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.largest[t.dtype] = max(self.largest.get(t.dtype, 0), t.untyped_storage().nbytes())
        return out


VOCAB = 32768


def _widened(family: str):
    """The tiny model of `family` with a 32k vocabulary (its logits dwarf every other tensor)."""
    from advisor.models.tiny import _model_class, randomize_, tiny_config

    config = tiny_config(family)
    config.vocab_size = VOCAB
    loaded = load_model(f"tiny:{family}")
    return dataclasses.replace(loaded, model=randomize_(_model_class(family)(config)).eval())


def test_llada_moe_computes_and_upcasts_only_the_block():
    """Prompt 24 + answer 8, block 4, batch 2: the logits were [B, 32, V] per forward and their float64 softmax as
    big; both are [B, 4, V] now (the previous algorithm is measured alike, so the counter is known to see them)."""
    loaded = _widened("llada_moe")
    ids = _ids(batch=2, length=24)
    kw = dict(steps=4, block_length=4)
    with Largest() as new:
        got = generate(loaded, ids, max_new_tokens=8, **kw)
    with Largest() as old, torch.no_grad():
        want = reference_llada(loaded.model, ids, gen_length=8, mask_id=loaded.mask_token_id, **kw)
    assert torch.equal(got, want)
    block, sequence = 2 * 4 * VOCAB, 2 * 32 * VOCAB
    assert (old.largest[torch.float64], old.largest[torch.float32]) == (sequence * 8, sequence * 4)
    assert (new.largest[torch.float64], new.largest[torch.float32]) == (block * 8, block * 4)


def test_llada2_computes_and_upcasts_only_the_block():
    """Prompt 13 + answer 8 at block 4: the last forward's logits were [B, 24, V] (the canvas cut after the
    block); they are the block's [B, 4, V] now."""
    loaded = _widened("llada2")
    ids = _ids(batch=2, length=13)
    kw = dict(gen_length=8, block_length=4, steps=4, threshold=0.95)
    with Largest() as new:
        got = generate(loaded, ids, max_new_tokens=8, steps=4, block_length=4, threshold=0.95)
    with Largest() as old, torch.no_grad():
        want = reference_llada2(loaded.model, ids, mask_id=loaded.mask_token_id, eos_id=None, **kw)
    assert torch.equal(got, want)
    assert old.largest[torch.float32] == 2 * 24 * VOCAB * 4
    assert new.largest[torch.float32] == 2 * 4 * VOCAB * 4


@pytest.mark.parametrize("family", ["llada_moe", "llada2"])
def test_no_step_holds_its_logits_through_the_next_forward(family):
    """LLaDA2's loop kept a step's logits and probabilities ([B, block, V] float32 each) alive through the next
    step's forward, where LLaDA-MoE's frees them (at LLaDA2's 157k vocabulary and block 32, 40 MB per batch row
    more at the peak, which one decoding step alone - the tune activation probe's - does not hold). The bytes held
    as each forward starts (prompt 13 + answer 8, block 4, 8 steps) are now below one such tensor."""
    from tests.memory_helpers import HeldBytes

    loaded = _widened(family)
    held = []
    with HeldBytes() as mode:
        generate(loaded, _ids(batch=2, length=13), max_new_tokens=8, steps=8, block_length=4,
                 on_forward=lambda info: held.append(mode.now))
    logits = 2 * 4 * VOCAB * 4
    assert len(held) > 4 and max(held) < logits, (held, logits)


@pytest.mark.parametrize("family", ["llada_moe", "llada2"])
def test_widest_step_holds_the_peak_of_the_whole_decoding(family):
    """The tune activation probe runs one decoding step (`widest_step`: its forward and the sampler's float64 work
    on the block's logits) in place of a whole decoding; the bytes it holds at its peak are the whole decoding's
    (prompt 13 + answer 13 at block 4: LLaDA2's widest step, its last block's, runs after a prompt of mask tokens
    that fills the canvas before it)."""
    from advisor.models.generate import widest_step
    from tests.memory_helpers import HeldBytes

    loaded = _widened(family)
    ids = _ids(batch=1, length=13)
    kw = dict(max_new_tokens=13, steps=8, block_length=4)
    with HeldBytes() as whole:
        generate(loaded, ids, **kw)
    with HeldBytes() as step:
        what = widest_step(loaded, ids, **kw)
    assert what == ("first step over 29 positions" if family == "llada_moe" else
                    "last block's first step over 28 positions"), what
    assert abs(step.peak - whole.peak) < 0.01 * whole.peak and whole.peak > 4 * VOCAB * 8, (step.peak, whole.peak)
