"""Reference decoding loops for the LLaDA family of masked-diffusion LLMs.

* `llada_generate` - LLaDA / LLaDA-MoE semi-autoregressive low-confidence remasking: the answer is
  split into blocks decoded left to right; each block gets ``steps // num_blocks`` denoising steps
  and each step commits the number of tokens given by a linear schedule, choosing the masked
  positions *of the current block* the model is most confident about. Attention is bidirectional
  over the whole canvas.
* `llada2_generate` - LLaDA2.0 block-causal threshold decoding: blocks are aligned to absolute
  positions, attention is causal across blocks and bidirectional within one, the canvas is cut
  after the current block, and each step commits every masked position whose confidence passes
  ``threshold`` (at least the schedule's minimum, 1 when ``steps == block_length``).

Both call ``on_forward(ForwardInfo(index, step, block))`` right before every model forward so that
routing recorders and offload runtimes know where in the decoding they are.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advisor.errors import UserError


@dataclass(frozen=True)
class ForwardInfo:
    """Context of one model forward during decoding: running forward count, denoising step, block, and where
    that block sits in the forward.

    `step` numbers the denoising steps of block `block` from 0; a forward of the block that is none of its
    denoising steps says -1 (DiffusionGemma's encoder forward that opens each canvas, which denoises nothing:
    its `block_span` is empty). Autoregressive decoding reports each forward as step 0 of a block of its own.

    `block_span` is (start, stop): the positions, in each batch row of the sequence this forward runs over, of
    the tokens of the block being denoised - what the routing recorder counts as token scope "block" (what a
    sampler that caches the other positions computes). The decoding loop that runs the forward says it, as only
    it knows what sequence the forward sees: LLaDA-MoE's and LLaDA2's forwards run over prompt + answer, the
    block at `block_start`; DiffusionGemma's decoder forwards run over the canvas alone, which is the whole block
    (0, canvas length), and its encoder forwards over the prompt (then each committed canvas) into the KV cache,
    none of which is the block being denoised: (0, 0). None: not said (autoregressive decoding, which has no
    block scope, or a caller's own forwards: the recorder then places the block by `block_start`).
    """

    index: int
    step: int
    block: int
    block_span: tuple[int, int] | None = None


OnForward = Callable[[ForwardInfo], None]


def block_start(family: str, prompt_len: int, block_length: int, block: int) -> int:
    """First position of decoded block `block` (numbered from 0, as `ForwardInfo.block`) in a forward over prompt +
    answer: LLaDA-MoE's blocks follow the prompt; LLaDA2's are aligned to multiples of `block_length`, from the one
    that holds the prompt's end. DiffusionGemma's forwards hold no such sequence (its encoder sees the prompt, its
    decoder the canvas): its decoding says each forward's `ForwardInfo.block_span`, and asking here is an error."""
    if family == "diffusion_gemma":
        raise ValueError("DiffusionGemma's forwards do not run over prompt + answer: take the block's place from "
                         "ForwardInfo.block_span")
    if family == "llada2":
        return (prompt_len // block_length + block) * block_length
    return prompt_len + block * block_length


def llada2_canvas(total: int, block_length: int) -> int:
    """The length of LLaDA2's canvas for prompt + answer of `total` positions: whole blocks aligned to absolute
    positions (`block_start`); the last block's forward runs over all of it, the widest of its decoding."""
    return -(-total // block_length) * block_length


def transfer_schedule(masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Linear schedule: how many of `masked` [B] tokens to commit at each of `steps` steps -> [B, steps].

    Equal shares, the remainder going to the earliest steps (LLaDA's `get_num_transfer_tokens`).
    """
    base = masked // steps
    remainder = masked % steps
    sched = base[:, None].expand(-1, steps).clone()
    sched += (torch.arange(steps, device=masked.device)[None] < remainder[:, None]).long()
    return sched


def _gumbel_argmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Greedy at temperature 0; otherwise Gumbel-max sampling in float64 (as the LLaDA reference)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.to(torch.float64)
    noise = torch.rand_like(logits)
    gumbel = (-torch.log(noise)) ** temperature
    return (logits.exp() / gumbel).argmax(dim=-1)


def _forward(model, x: torch.Tensor, start: int, end: int, **kw) -> torch.Tensor:
    """The logits of positions start:end of `x`'s forward, [B, end - start, V]: a model whose forward takes
    `logits_to_keep` (as transformers' do) computes only those (its LM head over the rest is never needed); another
    model's full logits are sliced."""
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kw["logits_to_keep"] = slice(start, end) if end < x.shape[1] else end - start
    out = model(x, **kw)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits[:, start:end] if logits.shape[1] == x.shape[1] else logits


@torch.no_grad()
def llada_generate(
    model,
    input_ids: torch.LongTensor,
    *,
    steps: int,
    gen_length: int,
    block_length: int,
    mask_id: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    on_forward: OnForward | None = None,
) -> torch.LongTensor:
    """LLaDA low-confidence remasking. Returns prompt + answer, [B, L + gen_length]."""
    if gen_length <= 0 or block_length <= 0 or steps <= 0:
        raise UserError("steps, gen_length and block_length must be positive")
    if gen_length % block_length:
        raise UserError(
            f"gen_length {gen_length} is not a multiple of block_length {block_length}; pick a divisor"
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise UserError(
            f"steps {steps} is not a multiple of the number of blocks {num_blocks}; "
            f"use a multiple of {num_blocks}"
        )
    if remasking not in ("low_confidence", "random"):
        raise UserError(f"unknown remasking {remasking!r}; use 'low_confidence' or 'random'")
    steps_per_block = steps // num_blocks

    b, prompt_len = input_ids.shape
    x = torch.full((b, prompt_len + gen_length), mask_id, dtype=torch.long, device=input_ids.device)
    x[:, :prompt_len] = input_ids
    index = 0
    for block in range(num_blocks):
        start = block_start("llada_moe", prompt_len, block_length, block)
        end = start + block_length
        schedule = transfer_schedule((x[:, start:end] == mask_id).sum(dim=1), steps_per_block)
        for step in range(steps_per_block):
            masked = x == mask_id
            if on_forward is not None:
                on_forward(ForwardInfo(index=index, step=step, block=block, block_span=(start, end)))
            index += 1
            # Only the block's masked positions can be committed: argmax, float64 softmax and Gumbel noise over
            # the block's [B, block_length, V] slice, not the whole [B, L, V] sequence (4.6 GiB of float64 at
            # LLaDA-MoE's 157k vocabulary, 450 positions, batch 8). At temperature > 0 the noise is drawn for the
            # block only, so a seed samples differently than before (from the same distribution).
            logits = _forward(model, x, start, end)
            x0 = x.clone()
            x0[:, start:end] = _gumbel_argmax(logits, temperature)
            if remasking == "low_confidence":
                probs = F.softmax(logits.to(torch.float64), dim=-1)
                block_conf = torch.gather(probs, -1, x0[:, start:end, None]).squeeze(-1)
                del probs
            else:  # drawn for the whole sequence, as before: at temperature 0 the same seed draws the same order
                block_conf = torch.rand(x0.shape, device=x0.device, dtype=torch.float64)[:, start:end]
            del logits
            # the top-k runs over the same [B, L] rows as ever (-inf outside the block's masked positions)
            conf = torch.full(x0.shape, -torch.inf, device=x0.device, dtype=torch.float64)
            conf[:, start:end] = torch.where(masked[:, start:end], block_conf, -torch.inf)
            commit = torch.zeros_like(masked)
            for row in range(b):
                k = int(schedule[row, step])
                if k > 0:
                    commit[row, torch.topk(conf[row], k).indices] = True
            x = torch.where(commit, x0, x)
    return x


def block_causal_mask(length: int, block_length: int, device=None) -> torch.Tensor:
    """[1, 1, L, L] bool mask: position i may attend to j iff block(j) <= block(i) (blocks from 0)."""
    blocks = torch.arange(length, device=device) // block_length
    return (blocks[None, :] <= blocks[:, None])[None, None]


@torch.no_grad()
def llada2_generate(
    model,
    input_ids: torch.LongTensor,
    *,
    gen_length: int,
    block_length: int = 32,
    steps: int = 32,
    threshold: float = 0.95,
    mask_id: int,
    eos_id: int | None = None,
    temperature: float = 0.0,
    on_forward: OnForward | None = None,
) -> torch.LongTensor:
    """LLaDA2 block-causal threshold decoding. Returns prompt + answer, [B, L + gen_length].

    `steps` is per block, at most `gen_length` (as the reference caps it). When `eos_id` is set, decoding stops after the first block in which every
    row has produced eos; answer positions never decoded are then filled with `eos_id` (the reference
    returns the text up to eos - a fixed-shape tensor needs a filler, and eos is what it means).
    """
    if gen_length <= 0 or block_length <= 0 or steps <= 0:
        raise UserError("steps, gen_length and block_length must be positive")
    steps = min(steps, gen_length)  # the reference's cap (`gen_length // minimal_topk`, minimal_topk 1)
    b, prompt_len = input_ids.shape
    device = input_ids.device
    total = prompt_len + gen_length
    canvas = llada2_canvas(total, block_length)
    num_blocks = canvas // block_length
    x = torch.full((b, canvas), mask_id, dtype=torch.long, device=device)
    x[:, :prompt_len] = input_ids
    mask = block_causal_mask(canvas, block_length, device)
    positions = torch.arange(canvas, device=device)[None].expand(b, -1)
    # Minimum commits per step: LLaDA2's schedule over the block (1 per step when steps == block_length).
    minimum = transfer_schedule(torch.tensor([block_length], device=device), steps)[0]

    index = 0
    first = prompt_len // block_length
    for block in range(first, num_blocks):
        start = block_start("llada2", prompt_len, block_length, block - first)
        end = start + block_length
        for step in range(steps):
            active = x[:, start:end] == mask_id
            active[:, : max(0, prompt_len - start)] = False  # prompt tokens are never rewritten
            if not active.any():
                break
            if on_forward is not None:
                on_forward(ForwardInfo(index=index, step=step, block=block - first, block_span=(start, end)))
            index += 1
            logits = _forward(
                model, x[:, :end], start, end, attention_mask=mask[:, :, :end, :end], position_ids=positions[:, :end]
            ).float()
            if temperature > 0:
                probs = F.softmax(logits / temperature, dim=-1)
                x0 = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).view(b, -1)
            else:
                probs = F.softmax(logits, dim=-1)
                x0 = probs.argmax(dim=-1)
            conf = torch.gather(probs, -1, x0[..., None]).squeeze(-1)
            conf = torch.where(active, conf, -torch.inf)
            commit = active & (conf > threshold)
            need = int(minimum[step])
            for row in range(b):
                n_active = int(active[row].sum())
                if n_active and int(commit[row].sum()) < min(need, n_active):
                    commit[row] = False
                    commit[row, torch.topk(conf[row], min(need, n_active)).indices] = True
            x[:, start:end] = torch.where(commit, x0, x[:, start:end])
            del logits, probs  # [B, block_length, V] each: not held through the next forward (as llada_generate)
        if eos_id is not None and (x[:, prompt_len:end] == eos_id).any(dim=1).all():
            x[:, end:] = eos_id
            break
    return x[:, :total]
