"""Routing traces: which experts every token of every forward used, recorded once and replayed many times.

Caching never changes the model's outputs, so every cache configuration (slots, policy, prefetch,
precision bytes) can be evaluated by replaying one recorded trace through the simulator instead of
running the model again.

File format (`.npz`, compressed): per routed row (one token of one forward of one MoE layer) its top-k
`experts` (int16/int32) and `weights` (float16); per record (forward x layer) `rec_forward`, `rec_layer`,
`rec_start`, `rec_len` (rows; the row offset within a record is the token index, batch-major); per forward
`fwd_index`, `fwd_step`, `fwd_block`; and a JSON `meta` (model, experts per layer, top-k, shapes, decoding
settings, prompt length, generated tokens).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advisor.errors import UserError
from advisor.files import atomic_path
from advisor.offload.policies import Ctx

FORMAT_VERSION = 1


@dataclass
class RoutingTrace:
    """A recorded routing trace (see module docstring for the arrays)."""

    experts: np.ndarray
    weights: np.ndarray
    rec_forward: np.ndarray
    rec_layer: np.ndarray
    rec_start: np.ndarray
    rec_len: np.ndarray
    fwd_index: np.ndarray
    fwd_step: np.ndarray
    fwd_block: np.ndarray
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
    def generated_tokens(self) -> int:
        return int(self.meta.get("generated_tokens", 0))

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename): a crash never leaves half a trace."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(
                    f,
                    experts=self.experts, weights=self.weights, rec_forward=self.rec_forward,
                    rec_layer=self.rec_layer, rec_start=self.rec_start, rec_len=self.rec_len,
                    fwd_index=self.fwd_index, fwd_step=self.fwd_step, fwd_block=self.fwd_block,
                    meta=np.array(json.dumps({**self.meta, "format_version": FORMAT_VERSION})),
                )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RoutingTrace:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"trace file '{path}' does not exist; record one with `advisor trace MODEL -o FILE`")
        names = ("experts", "weights", "rec_forward", "rec_layer", "rec_start", "rec_len",
                 "fwd_index", "fwd_step", "fwd_block")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {n: z[n] for n in names}
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise UserError(
                f"'{path}' is not a routing trace this tool wrote ({type(e).__name__}: {e}); "
                "record one with `advisor trace MODEL -o FILE`"
            ) from e
        trace = cls(**arrays, meta=meta)
        trace.validate(str(path))
        return trace

    def validate(self, where: str = "trace") -> None:
        r = len(self.rec_forward)
        if not (len(self.rec_layer) == len(self.rec_start) == len(self.rec_len) == r):
            raise UserError(f"{where}: record arrays have different lengths; re-record the trace")
        if self.experts.ndim != 2 or self.weights.shape != self.experts.shape:
            raise UserError(f"{where}: experts/weights arrays are malformed; re-record the trace")
        if r and int((self.rec_start + self.rec_len).max()) > len(self.experts):
            raise UserError(f"{where}: records point past the routed rows; the file is truncated or corrupt")

    # -- views for replay --------------------------------------------------------------------------
    def _token_mask(self, token_scope: str) -> np.ndarray | None:
        if token_scope == "all":
            return None
        if token_scope != "block":
            raise UserError(f"unknown token scope '{token_scope}'; use 'all' or 'block'")
        m = self.meta
        need = ("prompt_len", "block_length", "seq_len")
        if any(m.get(k) is None for k in need):
            raise UserError("token scope 'block' needs prompt_len, block_length and seq_len in the trace meta")
        rows = np.arange(len(self.experts))
        rec_of_row = np.repeat(np.arange(len(self.rec_start)), self.rec_len)
        offset = rows - np.repeat(self.rec_start, self.rec_len)
        pos = offset % int(m["seq_len"])
        fwd_pos = {int(f): i for i, f in enumerate(self.fwd_index)}
        block_of_rec = np.array([self.fwd_block[fwd_pos[int(f)]] for f in self.rec_forward], dtype=np.int64)
        start = int(m["prompt_len"]) + block_of_rec[rec_of_row] * int(m["block_length"])
        return (pos >= start) & (pos < start + int(m["block_length"]))

    def access_sequences(self, token_scope: str = "all") -> list[list[tuple[tuple[int, ...], Ctx]]]:
        """Per layer, in forward order: (sorted distinct experts used, Ctx) - what the runtime looks up.

        token_scope "block" keeps only tokens of the block being denoised (what a sampler that caches the
        other positions would compute).
        """
        n_layers = self.n_layers
        e_max = max(self.num_experts) if n_layers else 1
        n_rec = len(self.rec_start)
        rec_of_row = np.repeat(np.arange(n_rec), self.rec_len)
        exp = self.experts.astype(np.int64)
        rows = np.broadcast_to(rec_of_row[:, None], exp.shape)
        keep = (exp >= 0) & (exp < np.asarray(self.num_experts, dtype=np.int64)[self.rec_layer[rec_of_row]][:, None])
        mask = self._token_mask(token_scope)
        if mask is not None:
            keep &= mask[:, None]
        used = np.zeros((n_rec, e_max), dtype=bool)
        used[rows[keep], exp[keep]] = True
        fwd_pos = {int(f): i for i, f in enumerate(self.fwd_index)}
        ctxs = [Ctx(int(f), int(s), int(b)) for f, s, b in zip(self.fwd_index, self.fwd_step, self.fwd_block,
                                                                strict=True)]
        order = np.lexsort((self.rec_forward, self.rec_layer))
        seqs: list[list[tuple[tuple[int, ...], Ctx]]] = [[] for _ in range(n_layers)]
        nz_rows, nz_cols = np.nonzero(used[order])
        bounds = np.searchsorted(nz_rows, np.arange(n_rec + 1))
        cols = nz_cols.tolist()
        for i, r in enumerate(order.tolist()):
            ids = tuple(cols[bounds[i]:bounds[i + 1]])
            seqs[int(self.rec_layer[r])].append((ids, ctxs[fwd_pos[int(self.rec_forward[r])]]))
        return seqs

    def expert_counts(self) -> list[np.ndarray]:
        """Per layer, how many routed (token, k) slots chose each expert."""
        out = []
        rec_of_row = np.repeat(np.arange(len(self.rec_start)), self.rec_len)
        layer_of_row = self.rec_layer[rec_of_row]
        for layer, ne in enumerate(self.num_experts):
            e = self.experts[layer_of_row == layer].ravel().astype(np.int64)
            e = e[(e >= 0) & (e < ne)]
            out.append(np.bincount(e, minlength=ne))
        return out

    def hot_sets(self) -> dict[int, list[int]]:
        """Per layer, experts ordered by routed-token count, most used first (the static-hot profile)."""
        return {i: np.argsort(-c, kind="stable").tolist() for i, c in enumerate(self.expert_counts())}

    @property
    def n_lookups(self) -> int:
        return sum(len(ids) for seq in self.access_sequences() for ids, _ in seq)


class TraceRecorder:
    """Routing observer + `on_forward` hook that accumulates a `RoutingTrace` in memory.

    Attach it as an observer (`attach_runtime(model, runtime, observers=[rec])`) and pass `rec.on_forward`
    to `generate(..., on_forward=...)`. Without `on_forward` calls, a new forward is inferred whenever a
    layer index does not increase.
    """

    def __init__(self, meta: dict[str, Any] | None = None):
        self.meta = dict(meta or {})
        self._experts: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._recs: list[tuple[int, int, int]] = []  # forward, layer, rows
        self._fwds: list[tuple[int, int, int]] = []
        self._cur: tuple[int, int, int] | None = None
        self._last_layer = -1
        self._explicit = False

    def on_forward(self, info: Any) -> None:
        self._explicit = True
        self._start(int(info.index), int(getattr(info, "step", -1)), int(getattr(info, "block", -1)))

    def _start(self, index: int, step: int, block: int) -> None:
        self._cur = (index, step, block)
        self._fwds.append(self._cur)
        self._last_layer = -1

    def __call__(self, layer: int, top_k_index: Any, top_k_weights: Any) -> None:
        if self._cur is None or (not self._explicit and layer <= self._last_layer):
            self._start(len(self._fwds), -1, -1)
        self._last_layer = layer
        idx = top_k_index.detach().to("cpu").numpy()
        self._experts.append(idx.astype(np.int32))
        self._weights.append(top_k_weights.detach().to("cpu").float().numpy().astype(np.float16))
        self._recs.append((self._cur[0], int(layer), idx.shape[0]))  # type: ignore[index]

    def trace(self) -> RoutingTrace:
        k = max((e.shape[1] for e in self._experts), default=1)
        pad = [np.pad(e, ((0, 0), (0, k - e.shape[1])), constant_values=-1) for e in self._experts]
        padw = [np.pad(w, ((0, 0), (0, k - w.shape[1]))) for w in self._weights]
        experts = np.concatenate(pad) if pad else np.zeros((0, k), np.int32)
        weights = np.concatenate(padw) if padw else np.zeros((0, k), np.float16)
        small = experts.size == 0 or int(experts.max()) < 32767
        lens = np.array([r[2] for r in self._recs], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if len(lens) else lens
        fw = np.array(self._fwds, dtype=np.int64).reshape(-1, 3)
        return RoutingTrace(
            experts=experts.astype(np.int16 if small else np.int32),
            weights=weights,
            rec_forward=np.array([r[0] for r in self._recs], dtype=np.int64),
            rec_layer=np.array([r[1] for r in self._recs], dtype=np.int32),
            rec_start=starts,
            rec_len=lens.astype(np.int32),
            fwd_index=fw[:, 0].copy(),
            fwd_step=fw[:, 1].copy(),
            fwd_block=fw[:, 2].copy(),
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
    from advisor.models.generate import generate
    from advisor.models.view import attach_runtime, detach_runtime

    ids = input_ids
    info = {
        **trace_meta(loaded),
        "batch": int(ids.shape[0]),
        "prompt_len": int(ids.shape[1]),
        "block_length": gen_kw.get("block_length"),
        "steps": gen_kw.get("steps"),
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
    trace.meta["generated_tokens"] = int(out.numel())
    trace.meta["is_diffusion"] = bool(getattr(loaded, "is_diffusion", False))
    trace.meta["seq_len"] = int(ids.shape[1] + out.shape[1]) if trace.meta["is_diffusion"] else None
    trace.meta["block_length"] = trace.meta.get("block_length") or (loaded.gen_defaults or {}).get("block_length")
    return trace


def merge(traces: Sequence[RoutingTrace]) -> RoutingTrace:
    """Concatenate traces of the same model (forward indices renumbered to stay increasing)."""
    if not traces:
        raise UserError("nothing to merge: no traces")
    parts, offset_rows, offset_fwd = [], 0, 0
    for t in traces:
        parts.append((t, offset_rows, offset_fwd))
        offset_rows += len(t.experts)
        offset_fwd += (int(t.fwd_index.max()) + 1) if len(t.fwd_index) else 0
    k = max(t.experts.shape[1] for t in traces)

    def padded(a: np.ndarray, fill: float) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=fill)

    meta = dict(traces[0].meta)
    meta["generated_tokens"] = sum(t.generated_tokens for t in traces)
    return RoutingTrace(
        experts=np.concatenate([padded(t.experts, -1) for t in traces]),
        weights=np.concatenate([padded(t.weights, 0) for t in traces]),
        rec_forward=np.concatenate([t.rec_forward + f for t, _, f in parts]),
        rec_layer=np.concatenate([t.rec_layer for t in traces]),
        rec_start=np.concatenate([t.rec_start + r for t, r, _ in parts]),
        rec_len=np.concatenate([t.rec_len for t in traces]),
        fwd_index=np.concatenate([t.fwd_index + f for t, _, f in parts]),
        fwd_step=np.concatenate([t.fwd_step for t in traces]),
        fwd_block=np.concatenate([t.fwd_block for t in traces]),
        meta=meta,
    )
