"""Routing traces: which experts every forward of every MoE layer used and how many tokens each got,
recorded once and replayed many times.

Caching never changes the model's outputs, so every cache configuration (slots, policy, prefetch, miss
policy, precision bytes) can be evaluated by replaying one recorded trace through the simulator instead of
running the model again.

What every policy, Belady's MIN and the time model need per forward and MoE layer is the set of distinct
experts and how many tokens each got - not per-token records - so that is what is stored, CSR-style
(format version 2, `.npz` compressed): per record (forward x layer) `rec_forward`, `rec_layer` and
`rec_ptr` (offsets, one more than records); per look-up (distinct expert of a record, sorted) `experts`,
`tokens` (routed tokens over the whole sequence) and, for block-diffusion models, `block_tokens` (of those,
tokens in the block being denoised - what a sampler that caches the other positions computes); per forward
`fwd_index`, `fwd_step`, `fwd_block` and `fwd_len` (the positions per batch row it ran over, counted from the rows
its MoE layers routed: prompt + answer for LLaDA-MoE, the prefix up to the block's end for LLaDA2, the canvas for
a DiffusionGemma decoder forward and the prompt, then the canvas just committed, for its encoder forward, the
prompt, then 1, for an autoregressive one; absent from traces recorded before it, whose readers get None); and a JSON
`meta` (model, experts per layer, top-k, shapes, the decoding that ran - block length and steps, with the block
length asked beside -, prompt length, generated tokens, and `seq_len`: prompt + new tokens, the sequence the
LLaDA families decode in, None for DiffusionGemma and autoregressive decoding, whose forwards run over no such
sequence - traces recorded before 2026-12-05 say prompt + new tokens for DiffusionGemma too, which none of its
forwards ran over; in a merged trace, the first prompt's). That is 6 bytes per look-up with 16-bit columns, 12
at worst.
Version-1 files (per-token records) are refused with a line saying to re-record.
"""

from __future__ import annotations

import functools
import json
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advisor.errors import UserError
from advisor.files import atomic_path
from advisor.offload.policies import Ctx, hot_order
from advisor.parsing import loads_json
from advisor.quant.plan import MAX_NAMED, MAX_RANGE

FORMAT_VERSION = 2
Look = tuple[tuple[int, ...], Ctx, tuple[int, ...]]
"""One look-up of one layer: (sorted distinct experts, context, tokens routed to each)."""
Seq = list[Look]
_ARRAYS = ("rec_forward", "rec_layer", "rec_ptr", "experts", "tokens", "fwd_index", "fwd_step", "fwd_block")
_OPTIONAL = ("block_tokens", "fwd_len")  # block-diffusion traces only; traces from 2026-12-05 on


def _narrow(a: np.ndarray, unsigned: bool = False) -> np.ndarray:
    """The smallest of 16/32-bit integer types that holds `a` (keeps traces at a few bytes per look-up)."""
    small = np.uint16 if unsigned else np.int16
    info = np.iinfo(small)
    if a.size == 0 or (int(a.min()) >= info.min and int(a.max()) <= info.max):
        return a.astype(small)
    return a.astype(np.uint32 if unsigned else np.int32)


@dataclass
class RoutingTrace:
    """A recorded routing trace (see the module docstring for the arrays)."""

    rec_forward: np.ndarray
    rec_layer: np.ndarray
    rec_ptr: np.ndarray
    experts: np.ndarray
    tokens: np.ndarray
    fwd_index: np.ndarray
    fwd_step: np.ndarray
    fwd_block: np.ndarray
    block_tokens: np.ndarray | None = None
    fwd_len: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # -- shape facts -------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.meta.get("num_experts", [])) or (int(self.rec_layer.max()) + 1 if len(self.rec_layer) else 0)

    @property
    def num_experts(self) -> list[int]:
        ne = self.meta.get("num_experts")
        if ne:
            return [int(x) for x in ne]
        top = int(self.experts.max()) + 1 if self.experts.size else 1
        return [top] * self.n_layers

    @property
    def n_forwards(self) -> int:
        return len(self.fwd_index)

    @property
    def n_records(self) -> int:
        return len(self.rec_forward)

    @property
    def generated_tokens(self) -> int:
        return int(self.meta.get("generated_tokens", 0))

    @property
    def n_lookups(self) -> int:
        """Distinct experts over all records (token scope "all")."""
        return len(self.experts)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays in memory."""
        extra = sum(a.nbytes for a in (self.block_tokens, self.fwd_len) if a is not None)
        return sum(getattr(self, n).nbytes for n in _ARRAYS) + extra

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, create_dirs: bool = True, option: str = "") -> Path:
        """Write atomically (temp file + rename): a crash never leaves half a trace. Without `create_dirs`, a
        missing directory is a `UserError` (`advisor trace -o`, as every file option of the CLI), naming `option`."""
        path = Path(path)
        arrays = {n: getattr(self, n) for n in _ARRAYS}
        for name in _OPTIONAL:
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        with atomic_path(path, create_dirs=create_dirs, option=option) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(
                    f, **arrays, meta=np.array(json.dumps({**self.meta, "format_version": FORMAT_VERSION})),
                )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RoutingTrace:
        path = Path(path)
        if path.is_dir():  # it exists: "does not exist" sent the user looking for a missing file
            raise UserError(f"trace file '{path}' is a directory; give the .npz file `advisor trace -o` wrote")
        if not path.is_file():
            raise UserError(f"trace file '{path}' does not exist; record one with `advisor trace MODEL -o FILE`")
        if not zipfile.is_zipfile(path):  # numpy would try it as a pickle and advise loading it unsafely
            raise UserError(f"'{path}' is not a routing trace this tool wrote (not an .npz archive); record one "
                            "with `advisor trace MODEL -o FILE`")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "rec_start" in z.files:
                    raise UserError(f"'{path}' is a version-1 routing trace (per-token records), which this "
                                    "version no longer reads; re-record it with `advisor trace MODEL -o FILE`")
                arrays = {n: z[n] for n in _ARRAYS}
                optional = {n: z[n] if n in z.files else None for n in _OPTIONAL}
                meta = loads_json(str(z["meta"]))
        except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile) as e:
            raise UserError(
                f"'{path}' is not a routing trace this tool wrote ({type(e).__name__}: {e}); "
                "record one with `advisor trace MODEL -o FILE`"
            ) from e
        trace = cls(**arrays, **optional, meta=meta)
        trace.validate(str(path))
        return trace

    def validate(self, where: str = "trace") -> None:
        """Refuse, in one line, a file whose arrays or meta disagree (damaged, edited, or another model's meta
        beside these arrays): replaying it would count look-ups of experts or layers the model does not have."""
        def bad(what: str) -> UserError:
            return UserError(f"{where}: {what}; the file is damaged or not one `advisor trace` wrote - re-record it "
                             "with `advisor trace MODEL -o FILE`")

        m = self.meta
        if not isinstance(m, dict):
            raise bad("its meta is not a JSON object")
        version = m.get("format_version", FORMAT_VERSION)  # a trace recorded in memory has none yet
        if type(version) is int and version > FORMAT_VERSION:  # read as this format, its arrays mean other things
            raise UserError(f"{where}: a routing trace of format {version}, written by a newer moe-advisor; this "
                            f"version reads format {FORMAT_VERSION}: upgrade it, or re-record the trace with "
                            "`advisor trace MODEL -o FILE`")
        if version != FORMAT_VERSION or type(version) is not int:
            raise bad(f"meta 'format_version' is {version!r}, not {FORMAT_VERSION}")
        shapes = {k: m.get(k) for k in ("num_experts", "hidden", "intermediate")}
        for k, v in shapes.items():
            if not isinstance(v, list) or not v or not all(type(x) is int and x > 0 for x in v):
                raise bad(f"meta '{k}' is not a list of positive integers per MoE layer")
        if max(shapes["num_experts"]) > MAX_RANGE:  # replay keeps per-expert state: 10**12 ran until memory ran out
            raise bad(f"meta 'num_experts' has a layer of {max(shapes['num_experts'])} experts; no MoE model has "
                      f"more than {MAX_RANGE}")
        if sum(shapes["num_experts"]) > MAX_NAMED:  # so does every layer: 2**20 experts in each of 100 layers
            raise bad(f"meta 'num_experts' lists {sum(shapes['num_experts'])} experts in all; no MoE model has more "
                      f"than {MAX_NAMED}")
        if len({len(v) for v in shapes.values()}) != 1:
            raise bad("meta 'num_experts', 'hidden' and 'intermediate' name different numbers of MoE layers")
        for k in ("generated_tokens", "steps_per_block"):
            v = m.get(k)
            if v is not None and (type(v) is not int or v < 0):
                raise bad(f"meta '{k}' is not a non-negative integer")
        if not isinstance(m.get("dtype", ""), str):
            raise bad("meta 'dtype' is not a string")
        arrays = [a for a in (getattr(self, n) for n in _ARRAYS + _OPTIONAL) if a is not None]
        if any(a.ndim != 1 or a.dtype.kind not in "iu" for a in arrays):
            raise bad("its arrays are not 1-D integer arrays")
        r = len(self.rec_forward)
        if len(self.rec_layer) != r or len(self.rec_ptr) != r + 1:
            raise bad("record arrays have different lengths")
        n = len(self.experts)
        if len(self.tokens) != n or (self.block_tokens is not None and len(self.block_tokens) != n):
            raise bad("experts/tokens arrays have different lengths")
        if int(self.rec_ptr[0]) != 0 or int(self.rec_ptr[-1]) != n or (r and bool((np.diff(self.rec_ptr) < 0).any())):
            raise bad("record offsets do not match the look-ups (truncated?)")
        if not len(self.fwd_index) == len(self.fwd_step) == len(self.fwd_block) or (
                self.fwd_len is not None and len(self.fwd_len) != len(self.fwd_index)):
            raise bad("forward arrays have different lengths")
        ne = np.asarray(shapes["num_experts"])
        if r and (int(self.rec_layer.min()) < 0 or int(self.rec_layer.max()) >= len(ne)):
            raise bad(f"records name MoE layers outside the {len(ne)} its meta lists")
        if r and not np.isin(self.rec_forward, self.fwd_index).all():
            raise bad("records name forwards its forward arrays lack")
        if n and int(self.tokens.min()) < 1:
            raise bad("a look-up has no routed tokens (the recorder keeps only experts that got one)")
        if self.block_tokens is not None and n and (int(self.block_tokens.min()) < 0
                                                     or bool((self.block_tokens > self.tokens).any())):
            raise bad("a look-up's block tokens are negative or more than its routed tokens")
        if n:  # per record its largest expert id (no per-look-up copy: traces reach tens of millions of look-ups)
            full = np.diff(self.rec_ptr) > 0
            top = np.maximum.reduceat(self.experts, self.rec_ptr[:-1][full])
            if int(self.experts.min()) < 0 or bool((top >= ne[self.rec_layer[full].astype(np.int64)]).any()):
                raise bad("look-ups name experts beyond their layer's count in its meta (another model's trace?)")
        if n > 1:  # within a record: distinct experts in increasing order, as every look-up is replayed
            ok = self.experts[1:] > self.experts[:-1]  # a comparison, not a difference: no overflow, no int64 copy
            starts = self.rec_ptr[1:-1].astype(np.int64)
            ok[starts[(starts > 0) & (starts < n)] - 1] = True  # a record boundary may go down
            if not ok.all():
                raise bad("a record's experts are not distinct and in increasing order")

    # -- views for replay --------------------------------------------------------------------------
    def _scope(self, token_scope: str) -> np.ndarray:
        if token_scope == "all":
            return self.tokens
        if token_scope != "block":
            raise UserError(f"unknown token scope '{token_scope}'; use 'all' or 'block'")
        if self.block_tokens is None:
            raise UserError("token scope 'block' needs a block-diffusion trace (block_tokens); this trace has none")
        return self.block_tokens

    def access_sequences(self, token_scope: str = "all") -> list[Seq]:
        """Per layer, in forward order: (sorted distinct experts, Ctx, tokens per expert) - what the runtime
        looks up. Token scope "block" keeps only tokens of the block being denoised (what a sampler that
        caches the other positions would compute); experts left with no token drop out."""
        counts = self._scope(token_scope)
        ptr = self.rec_ptr
        if token_scope != "all":  # drop experts with no token in scope, recompute offsets
            keep = counts > 0
            kept_before = np.concatenate([[0], np.cumsum(keep)])
            ptr = kept_before[ptr]
            experts, counts = self.experts[keep], counts[keep]
        else:
            experts = self.experts
        ptr_l = ptr.tolist()
        fwd_pos = {int(f): i for i, f in enumerate(self.fwd_index.tolist())}
        ctxs = [Ctx(int(f), int(s), int(b)) for f, s, b in zip(self.fwd_index.tolist(), self.fwd_step.tolist(),
                                                                self.fwd_block.tolist(), strict=True)]
        seqs: list[Seq] = [[] for _ in range(self.n_layers)]
        order = np.lexsort((self.rec_forward, self.rec_layer)).tolist()  # stable within a layer
        layers, forwards = self.rec_layer.tolist(), self.rec_forward.tolist()
        for r in order:
            a, b = ptr_l[r], ptr_l[r + 1]
            seqs[layers[r]].append((tuple(experts[a:b].tolist()), ctxs[fwd_pos[forwards[r]]],
                                    tuple(counts[a:b].tolist())))
        return seqs

    def expert_counts(self) -> list[np.ndarray]:
        """Per layer, how many routed (token, k) slots chose each expert."""
        layer_of = np.repeat(self.rec_layer.astype(np.int64), np.diff(self.rec_ptr))
        out = []
        for layer, ne in enumerate(self.num_experts):
            m = layer_of == layer
            out.append(np.bincount(self.experts[m].astype(np.int64), weights=self.tokens[m], minlength=ne)
                       .astype(np.int64)[:ne])
        return out

    def hot_sets(self) -> dict[int, list[int]]:
        """Per layer, experts ordered by routed-token count, most used first (the static-hot profile)."""
        return {i: hot_order(c.tolist()) for i, c in enumerate(self.expert_counts())}

    def steps_per_block(self) -> int:
        """Denoising steps per block as the decoding was set up (`advisor.models.generate.steps_per_block`: what
        the live runtime's TIDE schedule is told; LLaDA2's threshold sampler may finish blocks in fewer), else, for
        traces recorded before it was stored, the denoising steps of the longest block (0 when the trace has no
        block structure)."""
        if self.meta.get("steps_per_block"):
            return int(self.meta["steps_per_block"])
        if not len(self.fwd_block) or int(self.fwd_step.max()) < 0:
            return 0
        return int(self.fwd_step.max()) + 1


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class TraceRecorder:
    """Routing observer + `on_forward` hook that accumulates a compact `RoutingTrace` in memory.

    Each routing call is reduced at once to its distinct experts and token counts (and, when the meta
    gives `prompt_len`, `block_length` and `is_diffusion`, the counts of the block being denoised), so
    memory grows with look-ups, not with tokens. Attach it as an observer (`attach_runtime(model,
    runtime, observers=[rec])`) and pass `rec.on_forward` to `generate(..., on_forward=...)`. Without
    `on_forward` calls, a new forward is inferred whenever a layer index does not increase.

    The block being denoised is where the decoding loop says it sits in each forward
    (`advisor.models.samplers.ForwardInfo.block_span`): positions of prompt + answer for LLaDA-MoE and LLaDA2,
    the whole canvas of a DiffusionGemma decoder forward and none of an encoder forward (the prompt, or the
    canvas just committed, going into the KV cache). A forward that does not say (a caller's own `on_forward`,
    or none) is placed by the family's `block_start` in a sequence of prompt + answer, as LLaDA's are; a
    DiffusionGemma forward cannot be, and a ValueError says to pass `on_forward`. Internal: every command
    records through `record_trace`, which always passes it.
    """

    def __init__(self, meta: dict[str, Any] | None = None):
        self.meta = dict(meta or {})
        self._ids: list[np.ndarray] = []
        self._tok: list[np.ndarray] = []
        self._blk: list[np.ndarray] = []
        self._recs: list[tuple[int, int, int]] = []  # forward, layer, look-ups
        self._fwds: list[tuple[int, int, int]] = []
        self._lens: list[int] = []  # per forward: positions per batch row its MoE layers routed (0 until one does)
        self._cur: tuple[int, int, int] | None = None
        self._last_layer = -1
        self._explicit = False
        m = self.meta
        self._blocky = bool(m.get("is_diffusion")) and m.get("prompt_len") is not None and bool(m.get("block_length"))
        self._span: tuple[int, int] | None = None  # the current forward's block, as its decoding said it
        if self._blocky:  # for forwards that do not say: the sampler's own rule (torch is loaded when recording)
            from advisor.models.samplers import block_start

            self._block_start = functools.partial(block_start, str(m.get("family")), int(m["prompt_len"]),
                                                  int(m["block_length"]))
        self._ne = [int(x) for x in m.get("num_experts") or []]

    def on_forward(self, info: Any) -> None:
        self._explicit = True
        self._start(int(info.index), int(getattr(info, "step", -1)), int(getattr(info, "block", -1)),
                    getattr(info, "block_span", None))

    def _start(self, index: int, step: int, block: int, span: tuple[int, int] | None = None) -> None:
        self._cur = (index, step, block)
        self._span = None if span is None else (int(span[0]), int(span[1]))
        self._fwds.append(self._cur)
        self._lens.append(0)
        self._last_layer = -1

    def __call__(self, layer: int, top_k_index: Any, top_k_weights: Any = None) -> None:
        if self._cur is None or (not self._explicit and layer <= self._last_layer):
            self._start(len(self._fwds), -1, -1)
        self._last_layer = layer
        idx = top_k_index.detach().to("cpu").numpy() if hasattr(top_k_index, "detach") else np.asarray(top_k_index)
        idx = idx.reshape(idx.shape[0], math.prod(idx.shape[1:])).astype(np.int64, copy=False)  # not -1: 0 rows
        if not self._lens[-1]:
            self._lens[-1] = idx.shape[0] // max(1, int(self.meta.get("batch") or 1))
        ne = self._ne[layer] if layer < len(self._ne) else int(idx.max(initial=-1)) + 1
        valid = (idx >= 0) & (idx < ne)
        counts = np.bincount(idx[valid], minlength=ne)
        ids = np.flatnonzero(counts)
        self._ids.append(ids)
        self._tok.append(counts[ids])
        if self._blocky:
            rows, seq = idx.shape[0], self._lens[-1]
            if self._span is not None:
                start, stop = self._span
            else:
                try:
                    start = self._block_start(max(0, self._cur[2]))  # type: ignore[index]
                except ValueError as e:  # a family whose forwards the rule cannot place (DiffusionGemma's)
                    raise ValueError(f"TraceRecorder: this forward did not say where its block sits, and {e}; pass "
                                     "rec.on_forward to generate(..., on_forward=...), as record_trace does, so each "
                                     "forward's ForwardInfo.block_span reaches the recorder") from e
                stop = start + int(self.meta["block_length"])
            pos = np.arange(rows) % max(seq, 1)
            in_block = ((pos >= start) & (pos < stop))[:, None] & valid
            self._blk.append(np.bincount(idx[in_block], minlength=ne)[ids])
        self._recs.append((self._cur[0], int(layer), len(ids)))  # type: ignore[index]

    def trace(self) -> RoutingTrace:
        lens = np.array([r[2] for r in self._recs], dtype=np.int64)
        fw = np.array(self._fwds, dtype=np.int64).reshape(-1, 3)
        return RoutingTrace(
            rec_forward=np.array([r[0] for r in self._recs], dtype=np.int32),
            rec_layer=np.array([r[1] for r in self._recs], dtype=np.int16),
            rec_ptr=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            experts=_narrow(_cat(self._ids)),
            tokens=_narrow(_cat(self._tok), unsigned=True),
            block_tokens=_narrow(_cat(self._blk), unsigned=True) if self._blocky else None,
            fwd_index=fw[:, 0].astype(np.int32),
            fwd_step=fw[:, 1].astype(np.int32),
            fwd_block=fw[:, 2].astype(np.int32),
            fwd_len=_narrow(np.array(self._lens, dtype=np.int64), unsigned=True),
            meta=dict(self.meta),
        )


def trace_meta(loaded: Any) -> dict[str, Any]:
    """What the simulator needs to know about the model (experts, top-k and expert shapes per layer), taken
    from the one model description, `advisor.models.load.model_meta`."""
    from advisor.models.load import model_meta

    meta = model_meta(loaded)
    layers = meta["layers"]
    return {
        "model": str(meta["name"]),
        "fingerprint": str(meta["fingerprint"]),
        "family": str(meta["family"]),
        "num_experts": [int(m["num_experts"]) for m in layers],
        "top_k": [m["top_k"] for m in layers],
        "hidden": [m["hidden_size"] for m in layers],
        "intermediate": [m["intermediate_size"] for m in layers],
        "dtype": meta["dtype"],
    }


def chain(*hooks: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """One on_forward callback calling each given hook in turn."""
    live = [h for h in hooks if h is not None]

    def on_forward(info: Any) -> None:
        for h in live:
            h(info)

    return on_forward


def record_trace(
    loaded: Any,
    input_ids: Any,
    *,
    runtime: Any = None,
    meta: dict[str, Any] | None = None,
    **gen_kw: Any,
) -> RoutingTrace:
    """Generate with `loaded` (resident experts, or `runtime`) and record its routing.

    `gen_kw` go to `advisor.models.generate.generate` (max_new_tokens, steps, block_length, ...).
    """
    from advisor.models.generate import (
        decoded_block_length,
        decoded_steps,
        generate,
        new_tokens,
        steps_per_block,
    )
    from advisor.models.view import attach_runtime, detach_runtime

    ids = input_ids
    diffusion = bool(getattr(loaded, "is_diffusion", False))
    info = {
        **trace_meta(loaded),
        "batch": int(ids.shape[0]),
        "prompt_len": int(ids.shape[1]),
        # what ran (LLaDA-MoE cuts a block to max_new_tokens), which the block scope counts: not what was asked
        "block_length": decoded_block_length(loaded, **gen_kw) or None,
        "block_length_asked": gen_kw.get("block_length"),  # None: the family's default
        "steps": decoded_steps(loaded, **gen_kw),  # what ran (LLaDA-MoE rounds to its blocks), not what was asked
        "is_diffusion": diffusion,
        "steps_per_block": steps_per_block(loaded, **gen_kw),  # as decoding was set up (LLaDA2 may finish sooner)
        **(meta or {}),
    }
    rec = TraceRecorder(info)
    attach_runtime(loaded.model, runtime, observers=[rec], layers=loaded.moe)
    try:
        out = generate(loaded, ids, on_forward=chain(rec.on_forward, getattr(runtime, "on_forward", None)),
                       **gen_kw)
    finally:
        detach_runtime(loaded.model)
    trace = rec.trace()
    trace.meta["generated_tokens"] = new_tokens(loaded, out)
    # prompt + new tokens: what the LLaDA families decode in; DiffusionGemma's forwards run over the prompt or a
    # canvas (the trace's fwd_len says each forward's), never over this
    trace.meta["seq_len"] = int(ids.shape[1] + out.shape[1]) if diffusion and loaded.family != "diffusion_gemma" else None
    return trace


def record_prompts(loaded: Any, prompts: Sequence[Any], **gen_kw: Any) -> RoutingTrace:
    """One trace of `prompts` (token ids [1, L] each) decoded one after another through the same experts, as a
    workload runs them; `gen_kw` as in `record_trace`."""
    return merge([record_trace(loaded, ids, **gen_kw) for ids in prompts])


def record_random_prompts(loaded: Any, prompts: int, *, seed: int = 0, prompt_len: int = 16,
                          **gen_kw: Any) -> RoutingTrace:
    """`record_prompts` of `prompts` random prompts (`prompt_len` token ids in [3, vocab - 3), no special id (`random_prompt`), drawn from a
    generator seeded with `seed`). The benchmarks' synthetic workloads."""
    import torch

    from advisor.models.generate import random_prompt

    g = torch.Generator().manual_seed(seed)
    return record_prompts(loaded, [random_prompt(loaded, prompt_len, g, margin=3) for _ in range(prompts)], **gen_kw)


def merge(traces: Sequence[RoutingTrace]) -> RoutingTrace:
    """Concatenate traces of the same model (forward indices renumbered to stay increasing)."""
    if not traces:
        raise UserError("nothing to merge: no traces")
    fwd_off = np.cumsum([0] + [(int(t.fwd_index.max()) + 1) if len(t.fwd_index) else 0 for t in traces])
    look_off = np.cumsum([0] + [t.n_lookups for t in traces])
    blocky = all(t.block_tokens is not None for t in traces)
    lens = all(t.fwd_len is not None for t in traces)
    meta = dict(traces[0].meta)
    meta["generated_tokens"] = sum(t.generated_tokens for t in traces)
    return RoutingTrace(
        rec_forward=np.concatenate([t.rec_forward.astype(np.int64) + f for t, f in zip(traces, fwd_off,
                                                                                       strict=False)]).astype(np.int32),
        rec_layer=np.concatenate([t.rec_layer for t in traces]),
        rec_ptr=np.concatenate([[0]] + [t.rec_ptr[1:] + o for t, o in zip(traces, look_off, strict=False)]),
        experts=_narrow(np.concatenate([t.experts.astype(np.int64) for t in traces])),
        tokens=_narrow(np.concatenate([t.tokens.astype(np.int64) for t in traces]), unsigned=True),
        block_tokens=_narrow(np.concatenate([t.block_tokens.astype(np.int64) for t in traces]),  # type: ignore[union-attr]
                             unsigned=True) if blocky else None,
        fwd_len=_narrow(np.concatenate([t.fwd_len.astype(np.int64) for t in traces]),  # type: ignore[union-attr]
                        unsigned=True) if lens else None,
        fwd_index=np.concatenate([t.fwd_index.astype(np.int64) + f for t, f in zip(traces, fwd_off,
                                                                                   strict=False)]).astype(np.int32),
        fwd_step=np.concatenate([t.fwd_step for t in traces]),
        fwd_block=np.concatenate([t.fwd_block for t in traces]),
        meta=meta,
    )
