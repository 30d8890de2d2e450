"""Fidelity proxy: how far a runtime's (e.g. quantized experts') logits drift from full precision.

Cheap enough for every trial: one forward per prompt batch. For a diffusion LM the inputs are prompt +
answer canvas, with a seeded random part of the answer masked (as midway through denoising; fully masked
when no reference answer is known) and the masked positions scored; DiffusionGemma, which has no mask token,
gets a canvas partly replaced by random tokens (its denoising starts from those) and scores all of it - the
canvas its generate decodes (`answer_canvas`: its block length), which its decoder runs over alone. For an
autoregressive LM the inputs are prompt + reference answer and the answer positions' next-token logits are
scored.

Two numbers: mean KL(reference || runtime) over scored positions, and top-1 agreement (fraction of
positions whose arg-max token is unchanged). For large vocabularies (more than `keep` tokens, and more
reference log-probs than `FULL_VOCAB_BUDGET`) the reference keeps its top `keep` tokens plus one "rest" bucket
per position; the KL of that coarsened distribution is a lower bound
of the full KL (data-processing inequality) and costs kilobytes instead of gigabytes.

Memory: logits are never held for every prompt at once. The forwards take as many prompts as fit
`CHUNK_BYTES` of float logits (at least one), and the float upcast, log-softmax and comparison run over
blocks of scored positions of that size; what is kept is the reference (above) and one KL value and one
top-1 match per position. The peak is set by `CHUNK_BYTES` and one prompt's logits, not by the prompt count
(16 prompts x a 256-token canvas x a 262k vocabulary were ~2 GiB of bf16 logits plus a ~4 GiB float copy).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from advisor.eval.run import encode_prompt
from advisor.files import home_path
from advisor.units import EVAL_FIDELITY_PROMPTS

FULL_VOCAB_BUDGET = 64 * 1024 * 1024
"""Bytes of reference log-probs kept exactly; beyond this the top-`keep` + rest coarsening is used."""

CHUNK_BYTES = 128 * 1024 * 1024
"""Bytes of float32 logits handled at once (see the module doc): prompts per forward and scored positions per
upcast block are sized to it. The numbers do not depend on it (to float rounding)."""


@dataclass
class ReferenceLogits:
    """Full-precision log-probs at the scored positions, with the inputs needed to recompute them."""

    input_ids: torch.Tensor  # [B, L]
    positions: torch.Tensor  # [B, L] bool: scored positions
    attention_mask: torch.Tensor | None
    log_probs: torch.Tensor  # [N, V] (exact) or [N, keep] (coarse)
    token_ids: torch.Tensor | None  # [N, keep] for coarse references, else None
    top1: torch.Tensor  # [N] reference arg-max token
    autoregressive: bool

    @property
    def n_positions(self) -> int:
        return int(self.top1.numel())

    @property
    def n_prompts(self) -> int:
        """The prompts compared: as many as asked for, or fewer when the task has fewer that fit the canvas."""
        return int(self.input_ids.shape[0])


def build_inputs(
    loaded, prompts: list[str], answers: list[str | None] | None = None, *, canvas: int = 32, seed: int = 0
) -> dict[str, Any]:
    """Fixed inputs for `reference_logits`: prompt ids + answer canvas (see module doc), left-padded."""
    tok = loaded.tokenizer
    answers = answers or [None] * len(prompts)
    gen = torch.Generator().manual_seed(seed)
    pad = tok.eos_token_id if tok.eos_token_id is not None else (tok.pad_token_id or 0)
    rows, scored, keep = [], [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        p = encode_prompt(tok, prompt)
        a = list(tok(answer, add_special_tokens=False)["input_ids"])[:canvas] if answer else []
        if loaded.mask_token_id is None and loaded.is_diffusion:  # DiffusionGemma: no mask token
            rows.append(p + uniform_canvas(loaded, a + [pad] * (canvas - len(a)), gen))
            scored.append([True] * canvas)
        elif loaded.is_diffusion:
            a = a + [pad] * (canvas - len(a)) if answer else [loaded.mask_token_id] * canvas
            ratio = float(torch.rand(1, generator=gen)) * 0.8 + 0.2 if answer else 1.0
            masked = (torch.rand(canvas, generator=gen) < ratio).tolist()
            masked[int(torch.randint(canvas, (1,), generator=gen))] = True  # at least one scored position
            a = [loaded.mask_token_id if m else t for t, m in zip(a, masked, strict=True)]
            rows.append(p + a)
            scored.append([False] * len(p) + masked)
        else:
            if not a:
                raise ValueError("autoregressive fidelity needs reference answers")
            rows.append(p + a)
            # logits at position i predict token i+1: score the positions that predict the answer
            scored.append([False] * (len(p) - 1) + [True] * len(a) + [False])
        keep.append([True] * len(rows[-1]))
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    pos = torch.tensor([[False] * (width - len(s)) + s for s in scored], dtype=torch.bool)
    if loaded.mask_token_id is None and loaded.is_diffusion:
        pos = torch.ones(len(rows), canvas, dtype=torch.bool)  # the decoder's canvas, every position scored
    attn = torch.tensor([[0] * (width - len(k)) + [1] * len(k) for k in keep], dtype=torch.long)
    return {"input_ids": ids, "positions": pos, "attention_mask": None if loaded.is_diffusion else attn}


def uniform_canvas(loaded, tokens: list[int], gen: torch.Generator) -> list[int]:
    """DiffusionGemma's noised canvas: no mask token - its denoising starts from uniformly random tokens - so a
    seeded random share (20-100%) of the canvas is replaced by random ids, as midway through denoising."""
    vocab = int(loaded.model.config.get_text_config().vocab_size)
    ratio = float(torch.rand(1, generator=gen)) * 0.8 + 0.2
    noise = torch.randint(vocab, (len(tokens),), generator=gen).tolist()
    keep = (torch.rand(len(tokens), generator=gen) >= ratio).tolist()
    return [t if k else n for t, n, k in zip(tokens, noise, keep, strict=True)]


def _scored_logits(loaded, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   positions: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] at the scored positions, in the model's dtype. DiffusionGemma's encoder reads the prompt and
    its decoder the canvas (the last `positions.shape[1]` ids), whose logits are all it returns: `positions` covers
    the canvas."""
    device = loaded.device
    with torch.no_grad():
        if loaded.mask_token_id is None and loaded.is_diffusion:
            c = positions.shape[1]
            out = loaded.model(input_ids[:, :-c].to(device), decoder_input_ids=input_ids[:, -c:].to(device))
        else:
            kwargs = {} if attention_mask is None else {"attention_mask": attention_mask.to(device)}
            out = loaded.model(input_ids.to(device), **kwargs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        del out
        if bool(positions.all()):  # every position scored (DiffusionGemma's canvas): a view, no copy
            return logits.reshape(-1, logits.shape[-1])
        return logits[positions.to(device)]


def _scored_blocks(loaded, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   positions: torch.Tensor) -> Iterator[torch.Tensor]:
    """Float32 logits at the scored positions, in order (row-major, as `logits[positions]`), in blocks of at most
    `CHUNK_BYTES`: the first forward takes one prompt, the next ones as many as their logits fit in `CHUNK_BYTES`
    (at least one); each block is upcast on its own. The caller keeps only what it reduces a block to."""
    start, rows = 0, 1
    while start < input_ids.shape[0]:
        sel = slice(start, min(start + rows, input_ids.shape[0]))
        scored = _scored_logits(loaded, input_ids[sel], None if attention_mask is None else attention_mask[sel],
                                positions[sel])
        start = sel.stop
        vocab = int(scored.shape[-1])
        rows = max(1, CHUNK_BYTES // (int(positions.shape[1]) * vocab * 4))
        step = max(1, CHUNK_BYTES // (vocab * 4))
        for i in range(0, scored.shape[0], step):
            yield scored[i:i + step].float()
        del scored


def reference_logits(loaded, prompts_ids, *, keep: int = 256) -> ReferenceLogits:
    """Log-probs of the (full-precision) model at the scored positions of `prompts_ids`.

    `prompts_ids` is the dict from `build_inputs`, or a [B, L] LongTensor of prompt+canvas ids whose
    mask tokens (diffusion) or every position (autoregressive) are scored."""
    if isinstance(prompts_ids, dict):
        ids, pos, attn = prompts_ids["input_ids"], prompts_ids["positions"], prompts_ids.get("attention_mask")
    else:
        ids = prompts_ids
        pos = ids == loaded.mask_token_id if loaded.is_diffusion else torch.ones_like(ids, dtype=torch.bool)
        attn = None
    if not bool(pos.any()):
        raise ValueError("no scored positions: diffusion inputs need mask tokens in their canvas")
    n, at = int(pos.sum()), 0
    values = indices = top1 = None
    from advisor.models.view import through_seam

    with through_seam(loaded):  # the generator's forwards run inside it
        for block in _scored_blocks(loaded, ids, attn, pos):  # only what is kept leaves the block
            log_probs = F.log_softmax(block, dim=-1)
            del block
            rows, vocab = slice(at, at + log_probs.shape[0]), log_probs.shape[-1]
            if top1 is None:  # filled in place: the kept reference is never held twice
                # a vocabulary no larger than `keep` is kept whole: its top `keep` were all of it, with int64 ids beside
                # (3x the exact bytes, and a sort of every position, for the same numbers)
                exact = n * vocab * 4 <= FULL_VOCAB_BUDGET or vocab <= keep
                values = torch.empty(n, vocab if exact else min(keep, vocab), dtype=log_probs.dtype)
                indices = None if exact else torch.empty(n, values.shape[1], dtype=torch.long)
                top1 = torch.empty(n, dtype=torch.long)
            top1[rows] = log_probs.argmax(dim=-1).cpu()
            if indices is None:
                values[rows] = log_probs.cpu()
            else:
                top = log_probs.topk(values.shape[1], dim=-1)
                values[rows], indices[rows] = top.values.cpu(), top.indices.cpu()
            at = rows.stop
    return ReferenceLogits(ids, pos, attn, values, indices, top1, not loaded.is_diffusion)


def _position_scores(ref_log_probs: torch.Tensor, ref_token_ids: torch.Tensor | None, ref_top1: torch.Tensor,
                     log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: KL(reference || other) and whether the arg-max token agrees, given the other model's log-probs
    [n, V] at the same n positions as the reference rows."""
    other_top1 = log_probs.argmax(dim=-1)
    if ref_token_ids is None:
        p = ref_log_probs.exp()
        kl = (p * (ref_log_probs - log_probs)).sum(-1)
    else:
        # Coarsen both distributions to (kept tokens, rest) and compare those.
        q_kept = log_probs.gather(-1, ref_token_ids)
        p_kept = ref_log_probs
        p_rest = torch.log1p(-p_kept.exp().sum(-1).clamp(max=1 - 1e-7))
        q_rest = torch.log1p(-q_kept.exp().sum(-1).clamp(max=1 - 1e-7))
        kl = (p_kept.exp() * (p_kept - q_kept)).sum(-1) + p_rest.exp() * (p_rest - q_rest)
    return kl, other_top1 == ref_top1


def _summary(kl: torch.Tensor, agree: torch.Tensor) -> dict[str, float]:
    return {"fidelity_kl": float(kl.clamp(min=0).mean()), "fidelity_top1": float(agree.float().mean())}


def compare(ref: ReferenceLogits, log_probs: torch.Tensor) -> dict[str, float]:
    """KL(reference || other) and top-1 agreement, given the other model's log-probs [N, V]."""
    return _summary(*_position_scores(ref.log_probs, ref.token_ids, ref.top1, log_probs))


def fidelity_source(native_format: str, n_positions: int, n_prompts: int, device: str) -> str:
    """How a fidelity value was obtained: against the checkpoint's own precision, over how many positions and
    prompts, on which device - one label for what `tune` stores and what `eval` prints."""
    return f"measured:logits-vs-{native_format}({n_positions} positions,{n_prompts} prompts,{device})"


def fidelity(loaded, ref: ReferenceLogits, runtime=None) -> dict[str, float]:
    """Compare the model under `runtime` (attached for this one forward) with the reference."""
    from advisor.eval.run import attached

    kls, agrees, at = [], [], 0
    with attached(loaded, runtime):  # None: the model's own weights through the seam, as the reference
        for block in _scored_blocks(loaded, ref.input_ids, ref.attention_mask, ref.positions):
            log_probs = F.log_softmax(block, dim=-1)
            del block
            dev, rows = log_probs.device, slice(at, at + log_probs.shape[0])
            kl, agree = _position_scores(ref.log_probs[rows].to(dev),
                                         None if ref.token_ids is None else ref.token_ids[rows].to(dev),
                                         ref.top1[rows].to(dev), log_probs)
            kls.append(kl.cpu())
            agrees.append(agree.cpu())
            at = rows.stop
    out = _summary(torch.cat(kls), torch.cat(agrees))
    out["fidelity_positions"] = ref.n_positions
    return out


def answer_canvas(loaded, task) -> int:
    """The answer positions fidelity gives each prompt of `task`: for DiffusionGemma the canvas its generate
    decodes with the task's decoding (`advisor.models.generate.decoded_block_length`: the task's block length,
    else the model's canvas_length), whatever the new tokens - its decoder runs over one such canvas, never
    over the answer at large; for other families the answer's first min(max_new_tokens, 64) positions."""
    if loaded.family == "diffusion_gemma":
        from advisor.models.generate import decoded_block_length

        return decoded_block_length(loaded, max_new_tokens=task.max_new_tokens, **task.gen_kwargs)
    return min(task.max_new_tokens, 64)


def task_inputs(loaded, task, *, n: int = 16, seed: int = 0, canvas: int | None = None) -> dict[str, Any]:
    """The fixed inputs for `n` examples of an evaluation task (gold answers as the canvas: `answer_canvas`)."""
    from dataclasses import replace

    from advisor.eval.run import fit_to_positions, require_tokenizer
    from advisor.eval.tasks import select

    require_tokenizer(loaded)
    canvas = canvas or answer_canvas(loaded, task)
    examples = fit_to_positions(replace(task, examples=select(task.examples, n, seed)), loaded, canvas,
                                setting=None).examples
    prompts = [task.prompt(ex) for ex in examples]
    answers = [ex.get("answer") or ex.get("canonical_solution") for ex in examples]
    return build_inputs(loaded, prompts, answers, canvas=canvas, seed=seed)


def task_reference(loaded, task, *, n: int = EVAL_FIDELITY_PROMPTS, seed: int = 0, canvas: int | None = None) -> ReferenceLogits:
    """The reference for `n` fixed examples of an evaluation task (gold answers as the canvas)."""
    return reference_logits(loaded, task_inputs(loaded, task, n=n, seed=seed, canvas=canvas))


def reference_cache_dir() -> Path:
    """Where full-precision references of offloaded models are kept ($ADVISOR_CACHE_DIR, a leading '~' expanded
    as in every path option (`advisor.files.home_path`), else ~/.cache)."""
    root = os.environ.get("ADVISOR_CACHE_DIR") or str(Path.home() / ".cache" / "moe-advisor")
    return Path(home_path(root)) / "reference"


def cached_reference(loaded, inputs: dict[str, Any] | torch.Tensor, cache_dir: Path | None = None) -> ReferenceLogits:
    """`reference_logits`, computed once per model fingerprint and input set and kept on disk: for an
    offloaded model the full-precision forward reads every routed expert from the checkpoint, so it is
    the one expensive measurement a study would otherwise repeat in every run."""
    import hashlib

    h = hashlib.sha256(str(loaded.fingerprint).encode())
    parts = [inputs] if isinstance(inputs, torch.Tensor) else [inputs[k] for k in sorted(inputs) if inputs[k] is not None]
    for t in parts:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    path = (cache_dir or reference_cache_dir()) / f"{h.hexdigest()[:24]}.pt"
    if path.is_file():
        try:
            return ReferenceLogits(**torch.load(path, weights_only=True))
        except (OSError, RuntimeError, TypeError, EOFError):
            pass  # a damaged cache file is recomputed and rewritten
    ref = reference_logits(loaded, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(ref.__dict__, tmp)
    os.replace(tmp, path)
    return ref


def reference_for(loaded, inputs: dict[str, Any] | torch.Tensor) -> ReferenceLogits:
    """The full-precision reference a fidelity measurement compares with: kept on disk for an offloaded model
    (its full-precision forward streams every routed expert from the checkpoint), computed for a resident one."""
    return (cached_reference if getattr(loaded, "offloaded", False) else reference_logits)(loaded, inputs)
