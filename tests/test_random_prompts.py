"""The random prompts of a model without a tokenizer hold no id the model reads as no prompt token (its mask,
eos, pad or bos): a real vocabulary keeps such ids inside the drawn range (LLaDA-MoE's mask 156895 of 157184)."""

from __future__ import annotations

import dataclasses

import torch

from advisor.eval.run import workload_prompts
from advisor.models.load import load_model


def test_random_workload_prompts_never_hold_the_mask_id_and_are_otherwise_unchanged():
    loaded = load_model("tiny:llada_moe")
    plain = workload_prompts(loaded, None, 6, seed=0)
    drawn = torch.cat([p.reshape(-1) for p in plain])
    ids, counts = drawn.unique(return_counts=True)
    special = {loaded.mask_token_id, loaded.model.config.eos_token_id, loaded.model.config.pad_token_id}
    mask = next(int(i) for i, c in zip(ids, counts, strict=True) if c > 1 and int(i) + 1 not in special)
    as_mask = dataclasses.replace(loaded, mask_token_id=mask)  # a vocabulary whose mask id lies in the drawn range
    moved = workload_prompts(as_mask, None, 6, seed=0)
    assert [p.shape for p in moved] == [p.shape for p in plain]
    for before, after in zip(plain, moved, strict=True):
        assert mask not in after.tolist()[0]
        assert torch.equal(after[before != mask], before[before != mask])  # only the mask's draws move
        assert set(after[before == mask].tolist()) <= {mask + 1}
    assert sum(int((p == mask).sum()) for p in plain) > 1
