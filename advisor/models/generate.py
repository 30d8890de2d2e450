"""One generation entry point that decodes each family the way it was published.

* LLaDA-MoE: low-confidence remasking (`samplers.llada_generate`);
* LLaDA2: block-causal threshold decoding (`samplers.llada2_generate`);
* DiffusionGemma: transformers' native block-diffusion `generate` (canvas = block);
* autoregressive MoEs (Qwen3-MoE, OLMoE, Mixtral, DeepSeek-V3, ...): greedy `generate`.

`on_forward(ForwardInfo(index, step, block))` is called before every model forward, so routing
recorders and offload runtimes know where in the decoding each expert request comes from. For
native models this uses forward pre-hooks (the official nn.Module seam), removed afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from advisor.errors import UserError
from advisor.models.load import LoadedModel
from advisor.models.samplers import ForwardInfo, llada2_canvas, llada2_generate, llada_generate

OnForward = Callable[[ForwardInfo], None]

__all__ = ["ForwardInfo", "OnForward", "decoded_block_length", "decoded_length", "generate", "generate_text", "new_tokens",
           "random_prompt", "steps_per_block", "StepWindow", "widest_step", "WHOLE_BLOCKS"]


def generate(
    loaded: LoadedModel,
    input_ids: torch.LongTensor,
    *,
    max_new_tokens: int,
    steps: int | None = None,
    block_length: int | None = None,
    on_forward: OnForward | None = None,
    seed: int = 0,
    **options: Any,
) -> torch.LongTensor:
    """Generate `max_new_tokens` after `input_ids` [B, L]; returns only the new tokens [B, max_new_tokens].

    `steps`/`block_length` default to the family's published decoding (`loaded.gen_defaults`); `options`
    override other family knobs (temperature, remasking, threshold). Sampling randomness is drawn from
    a generator seeded with `seed`, so runs repeat exactly, without disturbing the global RNG.
    """
    if max_new_tokens <= 0:
        raise UserError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if input_ids.dim() != 2:
        raise UserError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    input_ids = input_ids.to(loaded.device)
    decode = {
        "llada_moe": _llada_moe,
        "llada2": _llada2,
        "diffusion_gemma": _diffusion_gemma,
    }.get(loaded.family, _autoregressive)
    devices = [loaded.device] if loaded.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = decode(loaded, input_ids, max_new_tokens, steps, block_length, on_forward, options)
    return _fit(out, max_new_tokens, _filler(loaded))


class _Stop(Exception):
    """Ends `widest_step`'s decoding before its next forward."""


class StepWindow(Protocol):
    """What `widest_step` tells a meter: the step it measures begins (before its forward) / has ended."""

    def open(self) -> None: ...

    def close(self) -> None: ...


def widest_step(loaded: LoadedModel, input_ids: torch.LongTensor, *, max_new_tokens: int, steps: int | None = None,
                block_length: int | None = None, window: StepWindow | None = None, **options: Any) -> str:
    """Run, through `generate` itself, the decoding steps of `generate` with these arguments that hold the most -
    each one's forward, as decoding runs it, and the sampler's work on its logits - without decoding everything;
    `window` is opened as each such step begins and closed when it has ended (what runs before it only builds the
    state it runs in: what an activation probe leaves out). Returns what ran, in words.

    * LLaDA-MoE: every forward runs over prompt + its whole blocks: its first step.
    * LLaDA2: forwards run over the canvas cut after the block being decoded, so its last block's are the widest:
      that block is decoded as the first one after a prompt that fills the canvas before it (mask tokens where
      decoding would have committed tokens: the same shapes).
    * Autoregressive (transformers' greedy generate, with a KV cache): the prefill over the prompt (logits of its
      last position only), and the last one-token decode step, which runs with the largest cache: that cache is
      built by a prefill of the prompt and filler in place of all but the last generated token (eos does not end
      that run), and only the decode step after it is measured.
    * DiffusionGemma (transformers' block-diffusion generate): the encoder prefill over the prompt, and the denoising
      steps of the last canvas (decoder over the canvas, cross-attending to the largest cache, with the previous
      step's self-conditioning logits): that cache is built by an encoder prefill of the prompt and filler in place
      of the earlier canvases, and only the last canvas's steps are measured."""
    window = window or _NoWindow()
    if loaded.family == "llada_moe":
        block, num_blocks, _ = _llada_moe_blocks(loaded, max_new_tokens, steps, block_length, options)
        _measured(loaded, input_ids, window, 0, 1, max_new_tokens=max_new_tokens, steps=steps,
                  block_length=block_length, **options)
        return f"first step over {input_ids.shape[1] + num_blocks * block} positions"
    if loaded.family == "llada2":
        block = decoded_block_length(loaded, max_new_tokens=max_new_tokens, block_length=block_length)
        width = llada2_canvas(input_ids.shape[1] + max_new_tokens, block)
        before = width - block - input_ids.shape[1]  # positions of earlier blocks past the prompt
        if before > 0:
            input_ids, max_new_tokens = _filled(input_ids, before, _mask_id(loaded)), block
        _measured(loaded, input_ids, window, 0, 1, max_new_tokens=max_new_tokens, steps=steps,
                  block_length=block_length, **options)
        return f"last block's first step over {width} positions"
    prompt = input_ids.shape[1]
    kw = dict(steps=steps, block_length=block_length, **options)
    if loaded.family == "diffusion_gemma":
        canvas = decoded_block_length(loaded, max_new_tokens=max_new_tokens, block_length=block_length)
        earlier = (-(-max_new_tokens // canvas) - 1) * canvas  # the canvases decoded before the last
        _measured(loaded, input_ids, window, 0, 1, max_new_tokens=max_new_tokens, **kw)
        _measured(loaded, _filled(input_ids, earlier, int(input_ids[0, -1])), window, 1, None,
                  max_new_tokens=canvas, **kw)
        return (f"encoder prefill over {prompt} positions; last canvas's denoising steps over {canvas} positions "
                f"after {prompt + earlier} encoded")
    _measured(loaded, input_ids, window, 0, 1, max_new_tokens=max_new_tokens, **kw)
    if max_new_tokens < 2:
        return f"prefill over {prompt} positions"
    _measured(loaded, _filled(input_ids, max_new_tokens - 2, int(input_ids[0, -1])), window, 1, None,
              max_new_tokens=2, **{**kw, "eos_token_id": None})
    return f"prefill over {prompt} positions; last decode step after {prompt + max_new_tokens - 1} cached"


class _NoWindow:
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass


def _filled(input_ids: torch.LongTensor, n: int, token: int) -> torch.LongTensor:
    """`input_ids` followed by `n` copies of `token` (decoded positions' stand-ins: the same shapes)."""
    return torch.cat([input_ids, input_ids.new_full((input_ids.shape[0], n), token)], dim=1) if n > 0 else input_ids


def _measured(loaded: LoadedModel, input_ids: torch.LongTensor, window: StepWindow, first: int, stop: int | None,
              **kw: Any) -> None:
    """`generate`, with `window` open from forward `first` until forward `stop` (None: the end of the decoding),
    where it stops."""
    opened = False

    def on_forward(info: ForwardInfo) -> None:
        nonlocal opened
        if stop is not None and info.index >= stop:
            raise _Stop
        if info.index == first:
            window.open()
            opened = True

    try:
        generate(loaded, input_ids, on_forward=on_forward, **kw)
    except _Stop:
        pass
    finally:
        if opened:
            window.close()


def _fit(tokens: torch.Tensor, length: int, filler: int) -> torch.LongTensor:
    """Exactly `length` columns: cut extra canvas, pad sequences that stopped at eos with `filler`."""
    if tokens.shape[1] >= length:
        return tokens[:, :length]
    pad = torch.full((tokens.shape[0], length - tokens.shape[1]), filler, dtype=tokens.dtype, device=tokens.device)
    return torch.cat([tokens, pad], dim=1)


def new_tokens(loaded: LoadedModel, out: torch.Tensor) -> int:
    """Tokens a generation really produced (the denominator of every per-token number): LLaDA-MoE decodes its whole
    canvas, so every position; an autoregressive model stops at eos, and so do LLaDA2 and DiffusionGemma (after the
    block or canvas holding it; LLaDA2's reference returns the answer up to its first eos, DiffusionGemma's
    generate pads after it), so each row up to and including its first eos (what follows is filler, never
    decoded)."""
    eos = _llada2_eos(loaded) if loaded.family == "llada2" else _eos_ids(loaded)
    if loaded.family == "llada_moe" or not eos or out.numel() == 0:
        return int(out.numel())
    is_eos = torch.isin(out, torch.tensor(eos, dtype=out.dtype, device=out.device))
    ends = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, out.shape[1])
    return int(ends.sum())


def _eos_ids(loaded: LoadedModel) -> list[int]:
    for owner in (getattr(loaded.model, "generation_config", None), getattr(loaded.model, "config", None)):
        value = getattr(owner, "eos_token_id", None)
        if value is not None:
            return [int(v) for v in (value if isinstance(value, list) else [value])]
    return []


def _llada2_eos(loaded: LoadedModel) -> list[int]:
    """The eos LLaDA2's sampler stops at: its config's `eos_token_id` when one id, else none (it never stops)."""
    eos = getattr(loaded.model.config, "eos_token_id", None)
    return [eos] if isinstance(eos, int) else []


def random_prompt(loaded: LoadedModel, length: int, generator: torch.Generator, *, margin: int = 2) -> torch.LongTensor:
    """Seeded random token ids [1, length] in [3, vocab - margin) of the text model's vocabulary: the prompts of a
    model without a tokenizer. An id the model reads as no prompt token - its mask, eos, pad or bos - becomes the
    next id that is none of them: a real vocabulary keeps such ids inside that range (LLaDA-MoE's mask 156895 of
    157184), where a drawn mask id would be decoded as a position to fill and an eos as an end."""
    config = loaded.model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config  # (multimodal wrappers)
    high = max(4, int(getattr(config, "vocab_size", None) or 256) - margin)
    ids = torch.randint(3, high, (1, length), generator=generator)
    special = {int(v) for v in (*_eos_ids(loaded), loaded.mask_token_id, getattr(config, "pad_token_id", None),
                                getattr(config, "bos_token_id", None)) if isinstance(v, int)}
    for value in sorted(special):
        if (ids == value).any():
            ids[ids == value] = next(v for v in itertools.chain(range(value + 1, high), range(3, value))
                                     if v not in special)
    return ids


def _filler(loaded: LoadedModel) -> int:
    config = getattr(loaded.model, "config", None)
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(config, attr, None)
        if value is None and hasattr(config, "get_text_config"):
            value = getattr(config.get_text_config(), attr, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def steps_per_block(loaded: LoadedModel, *, max_new_tokens: int, steps: int | None = None,
                    block_length: int | None = None, **options: Any) -> int:
    """Denoising steps per block that `generate` runs with these arguments (the forwards of a block that
    `ForwardInfo.step` numbers 0, 1, ...): what TIDE's refresh schedule needs before decoding (and what a recorded
    trace shows after it). LLaDA2's threshold sampler, and DiffusionGemma's stopping criteria, may finish a block
    in fewer (this is their most); DiffusionGemma's encoder pass that opens each canvas is no denoising step (step
    -1) and not counted; autoregressive decoding has no denoising steps: 1 (each forward its own block)."""
    if loaded.family == "llada_moe":
        _, num_blocks, steps = _llada_moe_blocks(loaded, max_new_tokens, steps, block_length, options)
        return steps // num_blocks
    if loaded.family == "llada2":  # capped at the answer's length, as `llada2_generate` caps it
        return min(int(steps or loaded.gen_defaults["steps"]), max_new_tokens)
    if loaded.family == "diffusion_gemma":  # one decoder pass per step (beside the encoder pass that opens a canvas)
        return int(steps or loaded.gen_defaults["steps"])
    return 1


def decoded_steps(loaded: LoadedModel, *, max_new_tokens: int, steps: int | None = None,
                  block_length: int | None = None, **options: Any) -> int | None:
    """The `steps` that `generate` runs with these arguments, in the sense the family gives the argument:
    LLaDA-MoE's total over its blocks (rounded up to a multiple of them: `decoding_note`), LLaDA2's most per block
    (capped at the answer's length), the diffusion family's denoising steps; None for autoregressive decoding,
    which takes no steps."""
    if loaded.family == "llada_moe":
        return _llada_moe_blocks(loaded, max_new_tokens, steps, block_length, options)[2]
    if loaded.family == "llada2":
        return steps_per_block(loaded, max_new_tokens=max_new_tokens, steps=steps)
    if loaded.family == "diffusion_gemma":
        return int(steps or loaded.gen_defaults["steps"])
    return None


def decoded_block_length(loaded: LoadedModel, *, max_new_tokens: int, steps: int | None = None,
                         block_length: int | None = None, **options: Any) -> int:
    """The block length `generate` decodes with these arguments (LLaDA-MoE's is cut to `max_new_tokens`; a
    family's default when none is given): what another runtime needs to decode alike. 0 for autoregressive."""
    if loaded.family == "llada_moe":
        return _llada_moe_blocks(loaded, max_new_tokens, steps, block_length, options)[0]
    if loaded.family in ("llada2", "diffusion_gemma"):
        return int(block_length or loaded.gen_defaults["block_length"])
    return 0


def decoded_length(loaded: LoadedModel, prompt: int, max_new_tokens: int, *, block_length: int | None = None,
                   **options: Any) -> int:
    """The positions `generate` puts through the model for a `prompt`-token prompt and `max_new_tokens` with these
    arguments, as each family's sampler runs (what a model's positions must hold): LLaDA-MoE's prompt + its whole
    blocks (`_llada_moe_blocks`); LLaDA2's canvas, whole blocks aligned to absolute positions (`llada2_canvas`);
    DiffusionGemma's prompt + whole canvases (its decoder's positions follow the encoded prompt and canvases);
    autoregressive decoding's prompt + the new tokens but the last, which is never fed back (a prompt of at least
    one token: what new tokens alone take, with `prompt` 0, is what they take beside a one-token prompt)."""
    if max_new_tokens <= 0:
        return prompt
    if loaded.family == "llada_moe":
        block, num_blocks, _ = _llada_moe_blocks(loaded, max_new_tokens, None, block_length, options)
        return prompt + num_blocks * block
    if loaded.family == "llada2":
        return llada2_canvas(prompt + max_new_tokens, decoded_block_length(loaded, max_new_tokens=max_new_tokens,
                                                                          block_length=block_length))
    if loaded.family == "diffusion_gemma":
        canvas = decoded_block_length(loaded, max_new_tokens=max_new_tokens, block_length=block_length)
        return prompt + -(-max_new_tokens // canvas) * canvas
    return max(prompt, 1) + max_new_tokens - 1


WHOLE_BLOCKS = {"llada_moe": "in whole blocks", "llada2": "in whole blocks at multiples of the block length",
                "diffusion_gemma": "in whole canvases"}
"""How a family's sampler rounds the new tokens up (`decoded_length`), as a positions note says it."""


def decoding_note(loaded: LoadedModel, *, max_new_tokens: int, steps: int | None = None,
                  block_length: int | None = None, steps_option: str | None = None, **options: Any) -> str:
    """What `generate` decodes with these arguments where it is not what they ask: LLaDA-MoE decodes whole blocks,
    each with the same number of steps, so it decodes past `max_new_tokens` when the block length does not divide
    it (the extra tokens are cut), rounds the steps up to a multiple of the blocks, and runs a forward at every step
    even past a block's last masked token (LLaDA's `get_num_transfer_tokens` gives those steps 0 tokens; kept, as
    it is what users deploy, and said with the --steps that skips them); DiffusionGemma's generate decodes whole
    canvases (as many as `max_new_tokens` needs), so it too decodes past a `max_new_tokens` that the canvas length
    does not divide. Said as eval, trace and tune print it ("NAME decodes as FAMILY: ..."). "" when it decodes them
    as asked (and for every other family). `steps_option`: the command's own option of the steps ("--steps",
    `advisor trace`), named in the idle steps' remedy; None where it has none (eval, tune: `advisor trace --steps`
    is named, not an option the command refuses)."""
    if loaded.family == "diffusion_gemma":
        canvas = decoded_block_length(loaded, max_new_tokens=max_new_tokens, block_length=block_length)
        canvases = -(-max_new_tokens // canvas)
        if canvases * canvas == max_new_tokens:
            return ""
        return (f"{loaded.name} decodes as {loaded.family}: {max_new_tokens} new tokens at canvas (block) length "
                f"{canvas} decode {canvases} whole canvases ({canvases * canvas} tokens, cut to {max_new_tokens})")
    if loaded.family != "llada_moe":
        return ""
    defaults = {**loaded.gen_defaults, **options}
    block, num_blocks, run = _llada_moe_blocks(loaded, max_new_tokens, steps, block_length, options)
    asked = steps or defaults.get("steps") or num_blocks * block
    said = []
    if num_blocks * block != max_new_tokens:
        said.append(f"{max_new_tokens} new tokens at block length {block} decode {num_blocks} whole blocks "
                    f"({num_blocks * block} tokens, cut to {max_new_tokens})")
    if run != asked:
        given = "" if steps or not defaults.get("steps") else " (its default)"  # no --steps: whose 16 it is
        said.append(f"{run} denoising steps, not {asked}{given}: every block takes the same number ({run // num_blocks}), "
                    f"so the steps are rounded up to a multiple of the {num_blocks} blocks")
    if (idle := num_blocks * max(0, run // num_blocks - block)):
        said.append(f"{idle} of the {run} steps unmask nothing: a block of {block} tokens is done after {block} of "
                    f"its {run // num_blocks} steps, and LLaDA's sampler still runs a forward at each; "
                    + (f"{steps_option} {num_blocks * block} decodes one token per step without them" if steps_option
                       else f"{num_blocks * block} steps decode one token per step without them (`advisor trace "
                            f"--steps {num_blocks * block}`; this command takes no --steps)"))
    return f"{loaded.name} decodes as {loaded.family}: {'; '.join(said)}" if said else ""


def _llada_moe_blocks(loaded, max_new_tokens, steps, block_length, options) -> tuple[int, int, int]:
    """LLaDA-MoE's block length, number of blocks and total steps (a multiple of the blocks)."""
    defaults = {**loaded.gen_defaults, **options}
    block = min(block_length or defaults.get("block_length") or 32, max_new_tokens)
    # The reference needs gen_length % block_length == 0: decode whole blocks, then cut to max_new_tokens.
    num_blocks = -(-max_new_tokens // block)
    steps = steps or defaults.get("steps") or num_blocks * block  # published default: one token per step
    return block, num_blocks, -(-steps // num_blocks) * num_blocks


def _llada_moe(loaded, input_ids, max_new_tokens, steps, block_length, on_forward, options):
    defaults = {**loaded.gen_defaults, **options}
    block, num_blocks, steps = _llada_moe_blocks(loaded, max_new_tokens, steps, block_length, options)
    gen_length = num_blocks * block
    out = llada_generate(
        loaded.model, input_ids, steps=steps, gen_length=gen_length, block_length=block,
        mask_id=_mask_id(loaded), temperature=defaults.get("temperature", 0.0),
        remasking=defaults.get("remasking", "low_confidence"), on_forward=on_forward,
    )
    return out[:, input_ids.shape[1]:]


def _llada2(loaded, input_ids, max_new_tokens, steps, block_length, on_forward, options):
    defaults = {**loaded.gen_defaults, **options}
    eos = _llada2_eos(loaded)
    out = llada2_generate(
        loaded.model, input_ids, gen_length=max_new_tokens, block_length=block_length or defaults["block_length"],
        steps=steps or defaults["steps"], threshold=defaults.get("threshold", 0.95), mask_id=_mask_id(loaded),
        eos_id=eos[0] if eos else None, temperature=defaults.get("temperature", 0.0),
        on_forward=on_forward,
    )
    return out[:, input_ids.shape[1]:]


def _mask_id(loaded: LoadedModel) -> int:
    if loaded.mask_token_id is None:
        raise UserError(f"{loaded.name}: no mask token id known; set mask_token_id in its config.json")
    return loaded.mask_token_id


@contextmanager
def _pre_hooks(hooks: list[tuple[torch.nn.Module, Callable]]) -> Iterator[None]:
    handles = [module.register_forward_pre_hook(fn) for module, fn in hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _diffusion_gemma(loaded, input_ids, max_new_tokens, steps, block_length, on_forward, options):
    """Native generate; the encoder pass that opens each canvas starts a block, each decoder pass is a denoising step.

    Each forward's `ForwardInfo.block_span` (where the block being denoised sits in what it runs over): a decoder
    pass runs over the canvas alone, which is the block, so all of it, (0, canvas); an encoder pass runs over the
    prompt (then over the canvas just committed) into the KV cache, none of it the block being denoised, (0, 0).
    Its `ForwardInfo.step`: the decoder passes are the block's denoising steps 0, 1, ...; the encoder pass is none
    of them, -1 (what TIDE's interval refresh counts, as `steps_per_block` counts only the decoder passes)."""
    model = loaded.model
    canvas = int(block_length or loaded.gen_defaults["block_length"])
    state = {"index": 0, "block": -1, "step": -1}

    def encoder_pass(_module, _args):
        state["block"] += 1
        state["step"] = -1
        _emit(state, on_forward, (0, 0))

    def decoder_pass(_module, _args):
        state["step"] += 1
        _emit(state, on_forward, (0, canvas))

    # generate() calls the encoder module directly, and the decoder through `model.model` without input_ids
    hooks = [(model.model.encoder, encoder_pass), (model.model.decoder, decoder_pass)] if on_forward else []
    previous = model.config.canvas_length
    model.config.canvas_length = canvas  # generate() reads the block length from the config
    try:
        with _pre_hooks(hooks):
            out = model.generate(
                input_ids, max_new_tokens=max_new_tokens, max_denoising_steps=steps or loaded.gen_defaults["steps"],
                return_dict_in_generate=True, **options,
            )
    finally:
        model.config.canvas_length = previous
    return out.sequences[:, input_ids.shape[1]:]


def _autoregressive(loaded, input_ids, max_new_tokens, steps, block_length, on_forward, options):
    """Greedy decoding; each forward produces one token, reported as a block of its own."""
    model = loaded.model
    state = {"index": 0}

    def one_forward(_module, _args):
        on_forward(ForwardInfo(index=state["index"], step=0, block=state["index"]))
        state["index"] += 1

    hooks = [(model, one_forward)] if on_forward else []
    kwargs = {"do_sample": False, **{k: v for k, v in loaded.gen_defaults.items() if k != "do_sample"}, **options}
    mask = kwargs.pop("attention_mask", None)  # left-padded batches mask their padding
    with _pre_hooks(hooks):
        out = model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids) if mask is None else mask.to(input_ids.device),
            max_new_tokens=max_new_tokens,
            pad_token_id=_filler(loaded), **kwargs,
        )
    return out[:, input_ids.shape[1]:]


def _emit(state: dict, on_forward: OnForward | None, block_span: tuple[int, int]) -> None:
    if on_forward is not None:
        on_forward(ForwardInfo(index=state["index"], step=state["step"], block=state["block"], block_span=block_span))
    state["index"] += 1


def generate_text(loaded: LoadedModel, prompts: list[str], **kw: Any) -> list[str]:
    """Decode each prompt (one at a time: no padding tricks that would change a dLLM's canvas) to text."""
    tok = loaded.tokenizer
    if tok is None:
        raise UserError(f"{loaded.name} has no tokenizer; generate from token ids with `generate` instead")
    kw.setdefault("max_new_tokens", 64)
    eos = tok.eos_token_id
    texts = []
    for prompt in prompts:
        ids = torch.tensor([tok(prompt, add_special_tokens=True)["input_ids"]], dtype=torch.long)
        new = generate(loaded, ids, **kw)[0].tolist()
        if eos is not None and eos in new:
            new = new[: new.index(eos)]
        texts.append(tok.decode(new, skip_special_tokens=True))
    return texts
