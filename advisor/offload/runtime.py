"""The live expert-offload runtime: an `ExpertRuntime` that serves experts from a bounded per-layer slot cache.

Experts live packed in host memory (`ExpertStore`, pinned on CUDA). Each MoE layer owns a number of
device slots (preallocated byte buffers). Every forward, the layer's distinct experts go through the
layer's `CacheLayer.lookup` - the very code the trace simulator runs - and the runtime then does what
the policy decided: evicted slots are freed, admitted experts are copied into their slots, streamed
experts through a slot left free (else a temporary buffer). Experts compute directly from typed views of those
bytes.

Time: on CUDA every copy runs on a side stream from pinned memory, bracketed by CUDA events
("measured:cuda-events"); the compute stream waits only for the copies it needs, so prefetched copies
overlap compute. With ``device="cpu"`` the slot buffers form a separate CPU pool: the same code moves
real bytes, and the time is modelled from a hardware profile ("modelled:<profile>(...)").

Prefetch: ``lookahead`` pushes layer l's hidden state through layer l+1's router while layer l runs and
copies the predicted experts for l+1 (into slots the policy admits, the rest into a staging area);
``prev_step`` does the same at the start of each forward with each layer's set of the previous denoising step
(for diffusion LLMs, whose consecutive denoising steps route alike): the previous forward's, except that a
forward which is no denoising step (DiffusionGemma's encoder pass over the prompt or the canvas just committed,
`Ctx.off_step`) is no prediction of the next one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from advisor.errors import UserError
from advisor.models.experts import ExpertFn
from advisor.models.view import model_and_moe
from advisor.offload.cpu_experts import CpuExperts
from advisor.offload.miss import check_miss_policy
from advisor.offload.policies import Ctx, build_policies
from advisor.offload.simulate import layer_costs
from advisor.offload.slots import PREFETCH, resolve_slots
from advisor.offload.stats import CacheLayer, CacheStats
from advisor.offload.store import ExpertStore


class OffloadRuntime:
    """Experts in host memory, `slots_per_layer` device slots per MoE layer, `policy` deciding evictions.

    Attached to the model on construction (when given a model or LoadedModel and ``attach=True``), so
    `generate` runs unchanged; pass `on_forward` to `generate` for step/block context.
    """

    def __init__(
        self,
        loaded_or_moe_layers: Any,
        plan: Any,
        *,
        slots_per_layer: int | float | str | Sequence[int],
        policy: str,
        prefetch: str = "none",
        device: str | torch.device = "cpu",
        profile: Any = None,
        hot: Mapping[int, Sequence[int]] | None = None,
        policy_kw: Mapping[str, Any] | None = None,
        stage_limit: int | None = None,
        pin: bool | None = None,
        attach: bool = True,
        observers: Sequence[Any] = (),
        miss: str = "copy",
        costs: Any = None,
        overlap: bool | None = None,
    ):
        if prefetch not in PREFETCH:
            raise UserError(f"unknown prefetch '{prefetch}'; choose one of: {', '.join(PREFETCH)}")
        model, moe = model_and_moe(loaded_or_moe_layers)
        self.model, self.moe = model, moe
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but CUDA is not available here; use --device cpu")
        self.policy_name, self.prefetch_mode = policy, prefetch
        self.miss = check_miss_policy(miss)
        self.policy_kw = dict(policy_kw or {})
        # a prepared store (an offloaded model's, packed from its checkpoint) is shared across runtimes
        self.store = plan if isinstance(plan, ExpertStore) else ExpertStore(moe, plan, pin=self.cuda if pin is None else pin)
        self.plan = self.store.plan
        self.capacity = resolve_slots(slots_per_layer, [m.num_experts for m in moe])
        self.hot = hot
        policies = build_policies(policy, self.capacity, hot=hot, **self.policy_kw)
        self.costs = costs
        self.caches = [CacheLayer(p, self.store.expert_bytes(i), stage_limit, miss=miss,
                                  **layer_costs(costs, i, self.store.expert_bytes(i)))
                       for i, p in enumerate(policies)]
        self.acts = [m.experts.act for m in moe]
        self.cpu = CpuExperts(self.store, self.acts)
        # a layer's CPU experts compute while its device experts run (default on CUDA)
        self.overlap = self.cuda if overlap is None else bool(overlap)
        self._on_cpu: frozenset[int] = frozenset()
        self.overlap_ms = {"cpu": 0.0, "device": 0.0, "wall": 0.0}
        self.profile = profile
        # device slot pool: one preallocated byte buffer per slot
        self.slots = [
            [torch.empty(self.store.max_bytes(i), dtype=torch.uint8, device=self.device) for _ in range(c)]
            for i, c in enumerate(self.capacity)
        ]
        self.slot_of: list[dict[int, int]] = [{} for _ in moe]
        self.free: list[list[int]] = [list(range(c - 1, -1, -1)) for c in self.capacity]
        self.fns: list[dict[int, ExpertFn]] = [{} for _ in moe]
        self.staged: list[dict[int, torch.Tensor]] = [{} for _ in moe]
        self.last_ids: list[tuple[int, ...]] = [() for _ in moe]
        self.ctx = Ctx(0)
        self._fwd_offset = 0  # forward numbers keep increasing across generations, as in a merged trace
        self._explicit = False
        self._last_layer = -1
        self._hidden: dict[int, torch.Tensor] = {}
        self._hooks: list[Any] = []
        if self.cuda:
            self.copy_stream = torch.cuda.Stream(device=self.device)
            self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
            self._ready: list[torch.cuda.Event | None] = [None for _ in moe]
        if prefetch == "lookahead":
            self._install_hidden_hooks()
        self.session = None
        if attach and model is not None:
            from advisor.models.view import attach_runtime

            self.session = attach_runtime(model, self, observers, layers=moe)

    # -- context -----------------------------------------------------------------------------------
    def on_forward(self, info: Any) -> None:
        """Called before each model forward (ForwardInfo): sets step/block context, runs prev-step prefetch."""
        index = int(info.index) + self._fwd_offset
        if self._explicit and index <= self.ctx.forward:  # a new generation restarts at 0: carry on numbering
            self._fwd_offset += self.ctx.forward + 1 - index
            index = self.ctx.forward + 1
        self._explicit = True
        self.ctx = Ctx(index, int(getattr(info, "step", -1)), int(getattr(info, "block", -1)))
        self._last_layer = -1
        if self.prefetch_mode == "prev_step":
            for layer, ids in enumerate(self.last_ids):
                if ids:
                    self._prefetch(layer, ids)

    def _advance(self, layer: int) -> None:
        if not self._explicit and layer <= self._last_layer:
            self.ctx = Ctx(self.ctx.forward + 1)
        self._last_layer = layer

    # -- the ExpertRuntime interface ---------------------------------------------------------------
    wants_tokens = True  # the seam passes tokens per expert (the miss policy and the time model need them)

    def experts_for(self, layer: int, expert_ids: list[int], tokens: Sequence[int] | None = None
                    ) -> Mapping[int, ExpertFn]:
        n_exp = self.moe[layer].num_experts
        keep = [i for i, e in enumerate(expert_ids) if 0 <= e < n_exp]
        ids = tuple(expert_ids[i] for i in keep)
        tok = tuple(int(tokens[i]) for i in keep) if tokens is not None else None
        self._advance(layer)
        acc, from_stage, on_cpu = self.caches[layer].lookup(ids, self.ctx, tok)
        if not self.ctx.off_step:  # no denoising step (DiffusionGemma's encoder pass): prev_step predicts none
            self.last_ids[layer] = ids
        store_row, act = self.store.layers[layer], self.acts[layer]
        slot_of, free, fns, bufs = self.slot_of[layer], self.free[layer], self.fns[layer], self.slots[layer]
        staged = self.staged[layer]
        self.staged[layer] = {}
        for v in acc.evicted:
            free.append(slot_of.pop(v))
            del fns[v]
        cpu_set = set(on_cpu)
        h2d: list[tuple[torch.Tensor, torch.Tensor]] = []
        # an admitted expert computed on the host is copied for later forwards: this forward does not wait for it
        placing: list[tuple[torch.Tensor, torch.Tensor]] = []
        d2d: list[tuple[torch.Tensor, torch.Tensor]] = []
        out: dict[int, ExpertFn] = {e: fns[e] for e in acc.hits}
        for e in acc.admitted:
            s = free.pop()
            slot_of[e] = s
            packed = store_row[e]
            buf = bufs[s][: packed.nbytes]
            if e in staged:
                d2d.append((buf, staged[e]))
            else:
                (placing if e in cpu_set else h2d).append((buf, packed.host))
            fns[e] = out[e] = packed.view(buf).fn(act)
        # a streamed expert is copied into a slot left free by this look-up when there is one (it stays free: the
        # policy did not admit the expert), else into a temporary buffer: at most the experts of the layer that have
        # no slot then, as `counted_peak_bytes` counts them. tide admits nothing between its refreshes, so before
        # its slots first fill (DiffusionGemma's opening encoder pass) it streams more experts than that
        spare = list(free)
        for e in acc.streamed:
            if e in cpu_set:
                continue
            packed = store_row[e]
            buf = staged.get(e)
            if buf is None:
                buf = (bufs[spare.pop()][: packed.nbytes] if spare
                       else torch.empty(packed.nbytes, dtype=torch.uint8, device=self.device))
                h2d.append((buf, packed.host))
            out[e] = packed.view(buf).fn(act)
        for e in on_cpu:  # the miss policy computes these on the host (an admitted one is still copied)
            out[e] = self.cpu.fn(layer, e)
        self._on_cpu = frozenset(on_cpu)
        self._copy(layer, h2d, d2d, wait=True)
        self._copy(layer, placing, [], wait=False)
        if self.prefetch_mode == "lookahead" and layer + 1 < len(self.moe):
            predicted = self._predict(layer + 1, self._hidden.pop(layer, None))
            if predicted:
                self._prefetch(layer + 1, predicted)
        # same order as the resident runtime, so the weighted sum adds expert outputs in the same order
        return {e: out[e] for e in ids}

    # -- CPU experts beside device experts ---------------------------------------------------------
    def dequantized_for_outputs(self) -> Any:
        """This runtime for a run that uses its outputs alone (accuracy, fidelity: no slot traffic, no wall clock):
        its packed experts served dequantized once (`DequantizedCache`: the same numbers) where all of them in
        float32 fit `DEQUANTIZED_SHARE` of the host's available memory and what --host-memory leaves beside the
        store; else itself."""
        from advisor.models.load import host_available_bytes
        from advisor.quant import apply

        room = int(host_available_bytes() * apply.DEQUANTIZED_SHARE)
        if self.store.host_limit is not None:
            room = min(room, self.store.host_limit - self.store.nbytes)
        return apply.DequantizedCache(self, torch.float32) if apply.dequantized_bytes(self.moe) <= room else self

    def combine(self, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor,
                fns: Mapping[int, ExpertFn]) -> torch.Tensor:
        """The layer's weighted expert sum. With `overlap` and CPU experts in this look-up, the device experts'
        partial sum is queued first (the GPU runs it while the host goes on), the CPU experts' partial sum is
        computed here meanwhile, and the two are added. The CPU side runs on this thread: in a worker thread,
        beside this one launching the device experts, CPU experts took 1.6-1.9x as long on the H200 host and the
        forward was slower than with no overlap (benchmarks/results/2026-12-04_h200_miss_study_note.md). Times:
        wall clock (CPU experts), CUDA events (device experts; wall clock on a CPU-only host, where the "device"
        is the CPU slot pool and the two sides run one after the other) and the wall clock of the whole layer."""
        import time

        from advisor.models.experts import combine

        cpu_ids = self._on_cpu
        if not self.overlap or not cpu_ids:
            return combine(hidden, top_k_index, top_k_weights, fns)
        # waits for the work queued before this layer's experts (its input; the copies they need)
        h, idx, w = (t.to("cpu") for t in (hidden, top_k_index, top_k_weights))
        t0 = time.perf_counter()  # both sides start from here: that wait is no part of what overlap can hide
        dev_fns = {e: f for e, f in fns.items() if e not in cpu_ids}
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = combine(hidden, top_k_index, top_k_weights, dev_fns)
            end.record()
        else:
            out = combine(hidden, top_k_index, top_k_weights, dev_fns)
            device_ms = (time.perf_counter() - t0) * 1e3
        c0 = time.perf_counter()
        part = combine(h, idx, w, {e: f for e, f in fns.items() if e in cpu_ids})
        cpu_ms = (time.perf_counter() - c0) * 1e3
        out += part.to(out.device, out.dtype)
        if self.cuda:
            end.synchronize()
            device_ms = start.elapsed_time(end)
        self.overlap_ms["cpu"] += cpu_ms
        self.overlap_ms["device"] += device_ms
        self.overlap_ms["wall"] += (time.perf_counter() - t0) * 1e3
        return out

    def overlap_report(self) -> dict[str, Any]:
        """How much CPU expert time the device work hid: (cpu + device - wall) / cpu, measured."""
        m = self.overlap_ms
        hidden = max(0.0, m["cpu"] + m["device"] - m["wall"])
        src = ("measured:wall-clock(cpu experts)+cuda-events(device experts)+wall-clock(layer)" if self.cuda else
               "measured:wall-clock(cpu experts, cpu slot pool as the device, layer); device time on a GPU is "
               "modelled in replay")
        return {**m, "hidden_share": hidden / m["cpu"] if m["cpu"] else 0.0, "source": src}

    # -- copies --------------------------------------------------------------------------------------
    def _copy(self, layer: int, h2d: list, d2d: list, *, wait: bool) -> None:
        """Do the copies; on CUDA on the side stream, timed, with the compute stream waiting if `wait`."""
        if not h2d and not d2d:
            if wait and self.cuda and self._ready[layer] is not None:
                torch.cuda.current_stream(self.device).wait_event(self._ready[layer])
                self._ready[layer] = None
            return
        if not self.cuda:
            for dst, src in h2d + d2d:
                dst.copy_(src)
            return
        cs = self.copy_stream
        compute = torch.cuda.current_stream(self.device)
        cs.wait_stream(compute)  # a reused slot may still be read by queued compute
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(cs):
            start.record(cs)
            for dst, src in h2d:
                dst.copy_(src, non_blocking=True)
            end.record(cs)
            for dst, src in d2d:
                dst.copy_(src, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(cs)
        if h2d:
            self._events.append((start, end))
        if wait:
            compute.wait_event(ready)
            self._ready[layer] = None
        else:
            self._ready[layer] = ready

    def _prefetch(self, layer: int, ids: Sequence[int]) -> None:
        admitted, evicted, new_staged = self.caches[layer].prefetch(ids, self.ctx)
        if not admitted and not new_staged:
            return
        store_row, act = self.store.layers[layer], self.acts[layer]
        slot_of, free, fns, bufs = self.slot_of[layer], self.free[layer], self.fns[layer], self.slots[layer]
        for v in evicted:
            free.append(slot_of.pop(v))
            del fns[v]
        h2d = []
        for e in admitted:
            s = free.pop()
            slot_of[e] = s
            packed = store_row[e]
            buf = bufs[s][: packed.nbytes]
            h2d.append((buf, packed.host))
            fns[e] = packed.view(buf).fn(act)
        for e in new_staged:
            packed = store_row[e]
            buf = torch.empty(packed.nbytes, dtype=torch.uint8, device=self.device)
            self.staged[layer][e] = buf
            h2d.append((buf, packed.host))
        self._copy(layer, h2d, [], wait=False)

    # -- look-ahead prediction -------------------------------------------------------------------------
    def _install_hidden_hooks(self) -> None:
        for m in self.moe:
            if m.router is None:
                raise UserError(f"MoE layer {m.index} has no router module: look-ahead prefetch cannot predict")

        def capture(layer: int):
            def hook(module, args, kwargs):
                h = args[0] if args else kwargs.get("hidden_states")
                if h is not None:
                    self._hidden[layer] = h
            return hook

        for m in self.moe:
            for module in m.modules if hasattr(m, "modules") else (m.experts_module,):
                self._hooks.append(module.register_forward_pre_hook(capture(m.index), with_kwargs=True))

    @torch.no_grad()
    def _predict(self, layer: int, hidden: torch.Tensor | None) -> list[int]:
        """Experts layer `layer` will likely need: its router applied to the previous layer's hidden state.

        Ordered by how many tokens pick them (most first), so a partial prefetch copies the most useful.
        """
        if hidden is None:
            return []
        m = self.moe[layer]
        h = hidden.reshape(-1, hidden.shape[-1])
        out = m.router(h)
        idx = None
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() == 2:
                if not t.is_floating_point():
                    idx = t
                    break
                if t.shape[-1] == m.num_experts and idx is None:
                    idx = torch.topk(t.float(), m.top_k, dim=-1).indices
        if idx is None:
            return []
        counts = torch.bincount(idx.reshape(-1).clamp(0, m.num_experts - 1), minlength=m.num_experts)
        order = torch.argsort(counts, descending=True, stable=True)
        n_used = int((counts > 0).sum())
        return order[:n_used].tolist()

    # -- results -------------------------------------------------------------------------------------
    def stats(self) -> CacheStats:
        """Counters so far; transfer time from CUDA events (CUDA) or the hardware profile model (CPU)."""
        kw: dict[str, Any] = {"policy": self.policy_name, "prefetch": self.prefetch_mode,
                              "time_source": self.costs.source if self.costs is not None else ""}
        if self.cuda:
            torch.cuda.synchronize(self.device)
            ms = sum(s.elapsed_time(e) for s, e in self._events)
            return CacheStats.from_layers(self.caches, transfer_ms=ms, transfer_source="measured:cuda-events", **kw)
        return CacheStats.from_layers(self.caches, profile=self.profile, **kw)

    def reset_stats(self) -> None:
        """Zero the counters and the overlap clock (the cache keeps its contents; `reset_cache` empties it too)."""
        for c in self.caches:
            c.reset_counters()
        self.overlap_ms = dict.fromkeys(self.overlap_ms, 0.0)
        if self.cuda:
            self._events = []

    def reset_cache(self) -> None:
        """Empty every slot and rebuild the policies' state, then zero the counters."""
        policies = build_policies(self.policy_name, self.capacity, hot=self.hot, **self.policy_kw)
        for i, c in enumerate(self.caches):
            c.policy = policies[i]
            c.staged = {}
            self.slot_of[i].clear()
            self.fns[i].clear()
            self.staged[i].clear()
            self.free[i] = list(range(self.capacity[i] - 1, -1, -1))
            self.last_ids[i] = ()
        self.ctx = Ctx(0)
        self._fwd_offset, self._explicit, self._last_layer = 0, False, -1
        self.reset_stats()

    def close(self) -> None:
        """Detach from the model, remove hooks."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self.model is not None and self.session is not None:
            from advisor.models.view import detach_runtime

            detach_runtime(self.model)
            self.session = None
