"""`Backend` on a real model: quantize per plan, measure fidelity and accuracy, record and replay routing.

Workload: the task's first `trace_prompts` prompts, one at a time (batch 1, the offloading scenario), with
the family's published decoding and the task's generation length. The same prompts give the calibration
routing (full precision) that places hot experts, sizes per-layer budgets and profiles static-hot.
Models without a tokenizer (`tiny:*`) get seeded random prompt ids, so the pipeline runs on them too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from advisor.hardware.measure import device_text
from advisor.offload.policies import DEFAULT_TAU
from advisor.quant.plan import PrecisionPlan
from advisor.tune.backend import Measured, TraceRun, TrialOutOfMemory
from advisor.tune.config import ModelShape, TrialConfig
from advisor.tune.space import EvaluationSettings
from advisor.units import BUDGET_DIGITS, count, dtype_format, format_bytes


def model_shape(loaded: Any) -> ModelShape:
    """Counted sizes: routed experts per layer, and every other weight as resident bytes."""
    moe = loaded.moe
    total = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    experts = sum(m.num_experts * m.expert_nbytes for m in moe)
    return ModelShape(
        num_experts=tuple(int(m.num_experts) for m in moe),
        top_k=tuple(int(m.top_k) for m in moe),
        hidden=tuple(int(m.hidden_size) for m in moe),
        intermediate=tuple(int(m.intermediate_size) for m in moe),
        native_format=dtype_format(moe[0].dtype) or "bf16",
        resident_bytes=int(total - experts),
    )


class ModelBackend:
    """Measures trials on `loaded` with `task` (see the module docstring for the workload).

    An offloaded model (`loaded.offloaded`) never has its experts on the device: every stage - the
    full-precision reference (cached on disk), a plan's fidelity and accuracy, trace recording and live
    trials - computes experts through the offload runtime from a host store packed from the checkpoint.
    Stores are kept per plan while they fit `host_memory` (default: the RAM available at start), otherwise
    re-packed from the checkpoint when a plan comes back."""

    def __init__(self, loaded: Any, task: Any, settings: EvaluationSettings, *, profile: Any = None,
                 accuracy_fn: Callable[[Any, Any], Measured] | None = None, host_memory: int | None = None,
                 refuse_past: bool = False):
        """`refuse_past` (tune): new tokens that alone exceed the model's positions are refused
        (`refuse_new_tokens_past_positions`) before an offloaded model's activation probe decodes them."""
        # lazy like every torch import here: importing stays cheap
        from advisor.models.load import HOST_RAM_SOURCE, host_available_bytes, model_meta
        from advisor.offload.store import HOST_LIMIT_OPTION

        self.loaded, self.task, self.settings = loaded, task, settings
        self.profile = profile
        self.model_name = str(loaded.name)
        self.model_fingerprint = str(loaded.fingerprint)
        self.task_name = str(getattr(task, "name", task))  # a Task (None: a backend built for its shape only)
        self.task_data = getattr(task, "data", None)
        self.task_data_sha256 = getattr(task, "data_sha256", None)
        self.device = device_text(loaded.device)
        self.offloaded = bool(getattr(loaded, "offloaded", False))
        self.host_memory = int(host_memory) if host_memory else host_available_bytes()
        self.host_memory_source = HOST_LIMIT_OPTION if host_memory else HOST_RAM_SOURCE
        self.model_meta = model_meta(loaded)
        self._accuracy_fn = accuracy_fn
        self._prompts: list[Any] | None = None
        self._reference = None
        self._calibration = None
        self._runtimes: dict[str, Any] = {}
        self._stores: dict[str, Any] = {}
        self.shape = model_shape(loaded)
        self.activation_source = ""
        if refuse_past:
            self.refuse_new_tokens_past_positions()
        if self.offloaded:
            act, self.activation_source = self._probe_activation()
            self.shape = replace(self.shape, activation_bytes=act, staging=True)

    # ------------------------------------------------------------------ workload
    @property
    def max_new_tokens(self) -> int:
        return int(self.settings.max_new_tokens or getattr(self.task, "max_new_tokens", 32))

    @property
    def gen_kwargs(self) -> dict[str, Any]:
        """The task's decoding (steps, block length): the workload accuracy is measured with."""
        return dict(getattr(self.task, "gen_kwargs", {}) or {})

    @property
    def decoding(self) -> dict[str, Any]:
        """How the study decodes, stored with each trial's configuration so that an export decodes alike:
        `generate` the keywords every generation here gets (`advisor.models.generate.generate`), and the
        denoising steps each block gets (`advisor.models.generate.steps_per_block`), which TIDE's schedule needs, and the
        block length decoded (the family's default, cut to the generation length), which other runtimes need, and the
        mark that those steps count denoising steps only (`advisor.results.config_view.STEPS_COUNTED`)."""
        from advisor.models.generate import decoded_block_length, steps_per_block
        from advisor.results.config_view import STEPS_COUNTED

        gen = {"max_new_tokens": self.max_new_tokens, "seed": self.settings.seed, **self.gen_kwargs}
        return {"generate": gen, "steps_per_block": steps_per_block(self.loaded, **gen),
                "block_length": decoded_block_length(self.loaded, **gen),
                STEPS_COUNTED[0]: STEPS_COUNTED[1]}  # (a DiffusionGemma study stored before it counted one more)

    @property
    def decoding_note(self) -> str:
        """What the study's decoding runs where it is not what the task and space ask (LLaDA-MoE's whole blocks of
        equal steps: `advisor.models.generate.decoding_note`, as eval and trace say it), "" where it is as asked."""
        from advisor.models.generate import decoding_note

        return decoding_note(self.loaded, **self.decoding["generate"])

    def prompts(self, n: int) -> list[Any]:
        """Token ids [1, L] of n prompts of the workload (`advisor.eval.run.workload_prompts`)."""
        if self._prompts is None or len(self._prompts) < n:
            from advisor.eval.run import workload_prompts

            self._prompts = workload_prompts(self.loaded, self.task, n, self.settings.seed, self.max_new_tokens,
                                             decoding=self.gen_kwargs)
        return self._prompts[:n]

    def refuse_new_tokens_past_positions(self) -> None:
        """`UserError` where the new tokens alone exceed the model's positions, naming the most that fit every prompt
        the study decodes them beside - its accuracy's (`limit`), its traces' (`trace_prompts`) and its fidelity
        proxy's (`fidelity_prompts`: another count picks other examples) - and a prompt of them far past the positions,
        as `advisor.eval.run.refuse_past_positions` names them (as eval checks its fidelity prompts, of its examples,
        with the new tokens): said before a study is created, not by a failed trial."""
        from advisor.eval.run import refuse_past_positions
        from advisor.eval.tasks import select

        task, n, seed, settings = self.task, self.settings.trace_prompts, self.settings.seed, self.settings
        examples = getattr(task, "examples", None)
        if examples:  # (select picks by position: the same examples as the accuracy's, traces' and fidelity's own)
            index = list(range(len(examples)))
            chosen = sorted({i for k in (settings.limit, n, settings.fidelity_prompts) for i in select(index, k, seed)})
            task, n = replace(task, examples=[examples[i] for i in chosen]), len(chosen)
        refuse_past_positions(self.loaded, task, n, seed, self.max_new_tokens, self.gen_kwargs)

    def _fidelity_inputs(self) -> Any:
        """Fidelity reference inputs: the task's gold answers as a partly masked canvas (eval helper's
        `task_reference`), or random prompts + a masked canvas for tokenizer-less models (8 positions; DiffusionGemma
        a noised canvas of the length it decodes)."""
        import torch

        from advisor.eval.fidelity import reference_for, task_inputs, uniform_canvas

        n = self.settings.fidelity_prompts
        if self.loaded.tokenizer is not None and getattr(self.task, "examples", None):
            return reference_for(self.loaded, task_inputs(self.loaded, self.task, n=n, seed=self.settings.seed))
        ids = [p[0] for p in self.prompts(n)]
        width = max(len(p) for p in ids)
        mask = self.loaded.mask_token_id
        # DiffusionGemma's decoder runs over the canvas its generate decodes, whatever the new tokens
        canvas = self.decoding["block_length"] if mask is None and self.loaded.is_diffusion else 8
        rows = []
        gen = torch.Generator().manual_seed(self.settings.seed)
        for p in ids:
            p = torch.cat([p.new_full((width - len(p),), int(p[0])), p])
            if mask is None and self.loaded.is_diffusion:  # DiffusionGemma: a noised canvas, no mask token
                tail = p.new_tensor(uniform_canvas(self.loaded, [0] * canvas, gen))
            else:
                tail = p.new_full((canvas,), mask) if mask is not None else p.new_zeros(0)
            rows.append(torch.cat([p, tail]))
        if mask is None and self.loaded.is_diffusion:
            positions = torch.ones(len(rows), canvas, dtype=torch.bool)
            return reference_for(self.loaded, {"input_ids": torch.stack(rows), "positions": positions,
                                               "attention_mask": None})
        return reference_for(self.loaded, torch.stack(rows))

    def store_note(self) -> str:
        """How plans' host stores are built and kept (for the run header)."""
        if not self.offloaded:
            return f"experts resident on {self.device}; host stores quantized from them"
        return (f"host store packed per plan from the checkpoint; stores kept while they total "
                f"<= {format_bytes(self.host_memory)} ({self.host_memory_source}), otherwise re-packed; activation "
                f"allowance {format_bytes(self.shape.activation_bytes, BUDGET_DIGITS)} ({self.activation_source})")

    @property
    def pin_stores(self) -> bool:
        """Whether host stores are pinned: on a CUDA device (copies asynchronous, at the pinned rate)."""
        from advisor.offload.store import pins_stores

        return pins_stores(self.loaded.device)

    def store_for(self, plan: PrecisionPlan) -> Any:
        """The packed host store of `plan`: kept from an earlier trial, or packed now (oldest kept stores are
        released first when keeping them all would pass the host-memory budget, each counted as what it holds:
        `ExpertStore.held_bytes`, and the new one as `advisor.offload.store.held_for` counts it)."""
        import gc

        from advisor.offload.store import HOST_LIMIT_OPTION, ExpertStore, held_for, packed_sizes

        fp = plan.fingerprint
        if fp in self._stores:
            self._stores[fp] = self._stores.pop(fp)  # most recently used last
            return self._stores[fp]
        shape = self.shape
        need = held_for(packed_sizes(plan, shape.num_experts, shape.hidden, shape.intermediate), pin=self.pin_stores)
        dropped = False
        while self._stores and sum(st.held_bytes for st in self._stores.values()) + need > self.host_memory:
            self._stores.pop(next(iter(self._stores)))
            self._runtimes.clear()
            dropped = True
        if dropped:  # what the dropped stores held goes before the new one is packed (nothing to free otherwise:
            gc.collect()  # a full collection took 0.2-0.3 s per new plan in a tune process, benchmarks/live_speed.py)
        # the limit is --host-memory's or the RAM available at start: refused, the store names which
        given = self.host_memory_source == HOST_LIMIT_OPTION
        store = ExpertStore(self.loaded.moe, plan, pin=self.pin_stores, host_limit=self.host_memory,
                            host_limit_source=HOST_LIMIT_OPTION if given else "the RAM available when the run started")
        self._stores[fp] = store
        return store

    def _runtime(self, plan: PrecisionPlan) -> Any:
        """The runtime of a plan (`plan_runtime`; not attached: callers attach it around one run)."""
        fp = plan.fingerprint
        if fp not in self._runtimes:
            from advisor.offload.planned import plan_runtime

            self._runtimes.clear()  # keep one plan's quantized copy in memory at a time
            store = self.store_for(plan) if self.offloaded else None
            self._runtimes[fp] = plan_runtime(self.loaded, plan, store=store, profile=self.profile)
        return self._runtimes[fp]

    @contextmanager
    def _oom_guard(self) -> Iterator[None]:
        """A device out-of-memory inside a stage becomes `TrialOutOfMemory` once the plan's runtime (slots,
        staging) is dropped and cached device memory is handed back."""
        import torch

        oom = None
        try:
            yield
        except torch.OutOfMemoryError as e:  # raised below, once the frames holding device tensors are gone
            oom = TrialOutOfMemory(asked_bytes(str(e)), str(e).splitlines()[0][:200])
        if oom is not None:
            self._runtimes.clear()
            _release(self.loaded, None, collect=True)
            raise oom

    def _probe_activation(self) -> tuple[int, str]:
        """Activation allowance of the workload's widest decoding steps (batch 1, the longest traced prompt), run
        once with experts that cost nothing, as the family decodes (`advisor.models.generate.widest_step`: each
        step's forward - LLaDA-MoE's and LLaDA2's block logits only, an autoregressive model's prefill and its last
        one-token step with the whole KV cache, DiffusionGemma's encoder prefill and its last canvas's denoising
        steps - and the sampler's work on its logits): the peak held above the weights, measured by the CUDA
        allocator on a GPU and, elsewhere, by the bytes of the tensors the steps hold (`advisor.models.memory`)."""
        import torch

        from advisor.eval.run import attached
        from advisor.models.generate import widest_step
        from advisor.models.memory import peak_meter

        ids = max(self.prompts(self.settings.trace_prompts), key=lambda t: t.shape[-1]).to(self.loaded.device)
        meter = peak_meter(self.loaded.device)
        with attached(self.loaded, _ZeroExperts()), torch.no_grad(), meter:
            what = widest_step(self.loaded, ids, window=meter, **self.decoding["generate"])
        return int(meter.peak), f"measured:{meter.name}(probe decoding step: {what})"

    def _record(self, runtime: Any) -> tuple[Any, int, float]:
        from advisor.offload.trace import record_prompts
        from advisor.quant.apply import fast_runtime

        if runtime is not None:
            runtime = fast_runtime(self.loaded, runtime)  # same outputs (hence routing), dequantized once
        t0 = time.perf_counter()
        trace = record_prompts(self.loaded, self.prompts(self.settings.trace_prompts), runtime=runtime,
                               **self.decoding["generate"])
        sync_device(self.loaded.device)
        return trace, trace.generated_tokens, time.perf_counter() - t0

    # ------------------------------------------------------------------ Backend interface
    def calibration_counts(self) -> dict[int, list[int]]:
        if self._calibration is None:
            trace, _, _ = self._record(None)
            self._calibration = {i: [int(x) for x in c] for i, c in enumerate(trace.expert_counts())}
        return self._calibration

    def fidelity(self, plan: PrecisionPlan) -> Measured:
        from advisor.eval.fidelity import fidelity, fidelity_source

        t0 = time.perf_counter()
        with self._oom_guard():
            if self._reference is None:
                self._reference = self._fidelity_inputs()
            values = fidelity(self.loaded, self._reference, self._runtime(plan))
        src = fidelity_source(self.shape.native_format, self._reference.n_positions, self._reference.n_prompts,
                              self.device)
        return Measured({k: float(values[k]) for k in ("fidelity_kl", "fidelity_top1")},
                        {"fidelity_kl": src, "fidelity_top1": src}, time.perf_counter() - t0)

    def accuracy(self, plan: PrecisionPlan) -> Measured:
        if self._accuracy_fn is not None:
            return self._accuracy_fn(self, plan)
        from advisor.eval.run import accuracy_source, evaluate

        with self._oom_guard():
            res = evaluate(self.loaded, self.task, limit=self.settings.limit, seed=self.settings.seed,
                           runtime=self._runtime(plan))
        src = accuracy_source(res.source, self.task_name, res.n, self.device)
        return Measured(
            {"accuracy": float(res.accuracy), "accuracy_n": float(res.n), "accuracy_correct": float(res.correct),
             "accuracy_ci_low": float(res.ci_low), "accuracy_ci_high": float(res.ci_high)},
            {"accuracy": src}, float(res.seconds + res.scoring_seconds),
        )

    def trace(self, plan: PrecisionPlan) -> TraceRun:
        with self._oom_guard():
            trace, tokens, seconds = self._record(self._runtime(plan))
        run = TraceRun(trace, tokens, seconds, self.device, plan.fingerprint,
                       "offload-runtime:top-k-lru-slots" if self.offloaded else "experts-resident")
        run.trace.meta["plan_fingerprint"] = plan.fingerprint
        return run

    def replay(self, run: TraceRun, config: TrialConfig) -> Measured:
        from advisor.offload.simulate import simulate

        seqs = getattr(run, "_sequences", None)
        if seqs is None:
            seqs = run.trace.access_sequences()
            run._sequences = seqs  # type: ignore[attr-defined]
        hot = self._hot_sets() if config.policy == "static_hot" else None
        stats = simulate(run.trace, slots_per_layer=list(config.slots), policy=config.policy,
                         plan=config.plan, prefetch=config.prefetch, profile=self.profile,
                         hot=hot, sequences=seqs, miss=config.miss, policy_kw=self._policy_kw(config),
                         costs=self.costs(config.plan))
        counted = f"counted:trace-replay({run.tokens} tokens,{run.device})"
        return Measured(
            {"bytes_h2d": float(stats.bytes_h2d), "copies": float(stats.copies), "hits": float(stats.hits),
             "lookups": float(stats.lookups), "transfer_ms": float(stats.transfer_ms),
             "time_ms": float(stats.times["layer_ms"]), "cpu_tokens": float(stats.total("cpu_tokens"))},
            {"bytes_h2d": counted, "hits": counted, "transfer_ms": stats.transfer_source,
             "time_ms": stats.time_source, "cpu_tokens": counted},
        )

    def _policy_kw(self, config: TrialConfig) -> dict[str, Any]:
        if config.policy != "tide":
            return {}
        return {"tau": config.tau or DEFAULT_TAU, "steps_per_block": self.decoding["steps_per_block"]}

    def _expert_shapes(self) -> list[tuple[int, int]]:
        return list(dict.fromkeys((int(h), int(i)) for h, i in zip(self.shape.hidden, self.shape.intermediate,
                                                                     strict=True)))

    def cpu_profile(self) -> Any:
        """This host's CPU expert times on the model's expert shapes: the study's stored ones once adopted
        (`adopt_cpu_profile`), else the hardware profile's, what either lacks measured here once
        (measured:wall-clock)."""
        if getattr(self, "_cpu_profile", None) is None:
            from advisor.offload.timing import CpuProfile

            stored = getattr(self.profile, "cpu_experts", None)
            self._cpu_profile, _ = self._completed(CpuProfile.from_dict(stored) if stored else None, "profile")
        return self._cpu_profile

    def adopt_cpu_profile(self, stored: dict[str, Any]) -> list[str]:
        """Price CPU experts with the times a study stored (one study, one time model: nothing re-measured);
        what they lack is measured now and added, the source saying so. Returns what was measured."""
        from advisor.offload.timing import CpuProfile

        self._cpu_profile, measured = self._completed(CpuProfile.from_dict(stored), "study")
        return measured

    def _completed(self, base: Any, origin: str) -> tuple[Any, list[str]]:
        """`base`'s CPU expert times (None: none) for what they cover of the model's expert shapes and CPU
        kernels, and only the rest measured here; returns them and what was measured ("HxI" or "HxI:fmt,...")."""
        from advisor.offload.timing import CPU_FORMATS, kernels_text, shape_key

        shapes = self._expert_shapes()
        lack = {s: list(CPU_FORMATS) for s in shapes} if base is None else base.lacking(shapes)
        if not lack:
            return base, []
        from advisor.offload.cpu_profile import measure_cpu_experts

        by_formats: dict[tuple[str, ...], list[tuple[int, int]]] = {}
        for shape, fmts in lack.items():
            by_formats.setdefault(tuple(fmts), []).append(shape)
        measured = [measure_cpu_experts(group, fmts) for fmts, group in by_formats.items()]
        what = [kernels_text(shape_key(*s), f) for s, f in lack.items()]
        return (measured[0] if base is None else base.filled(measured, origin)), what

    def costs(self, plan: Any) -> Any:
        """The time model of `plan`: this host's CPU, the profile's link, a fused-MoE device (the roofline of
        the profile's GPU, `device_roofline`)."""
        from advisor.offload.timing import model_costs

        return model_costs(plan, self.shape.hidden, self.shape.intermediate, self.cpu_profile(), self.profile)

    def _hot_sets(self) -> dict[int, list[int]]:
        """static_hot's profile: the full-precision calibration routing (not the replayed trace itself)."""
        from advisor.offload.policies import hot_order

        return {layer: hot_order(c) for layer, c in self.calibration_counts().items()}

    def live(self, config: TrialConfig) -> Measured | None:
        """Generation through the real offload runtime on this model's device: measured bytes, copy times
        (CUDA events on a GPU) and wall-clock latency; peak memory measured by the CUDA allocator."""
        import torch

        from advisor.models.generate import generate, new_tokens
        from advisor.models.view import attach_runtime
        from advisor.offload.runtime import OffloadRuntime

        dev = self.loaded.device
        store = self.store_for(config.plan)
        on_cuda = dev.type == "cuda"
        # the fidelity stage's plan runtime (top-k slots per layer) is no part of this configuration
        self._runtimes.clear()
        if on_cuda:
            _release(self.loaded, None)
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        rt, oom = None, None
        tokens = 0
        try:
            rt = OffloadRuntime(self.loaded, store, slots_per_layer=list(config.slots), policy=config.policy,
                                prefetch=config.prefetch, device=dev, profile=self.profile,
                                hot=self._hot_sets() if config.policy == "static_hot" else None, attach=False,
                                miss=config.miss, policy_kw=self._policy_kw(config),
                                costs=self.costs(config.plan) if config.miss == "hybrid" else None)
            device_bytes = self.loaded.device_param_bytes() + sum(b.numel() for row in rt.slots for b in row)
            attach_runtime(self.loaded.model, rt, layers=self.loaded.moe)
            t0 = time.perf_counter()
            for ids in self.prompts(self.settings.trace_prompts):
                out = generate(self.loaded, ids, on_forward=getattr(rt, "on_forward", None), **self.decoding["generate"])
                tokens += new_tokens(self.loaded, out)
            sync_device(dev)
            wall = time.perf_counter() - t0
            stats = rt.stats()
            overlap = rt.overlap_report()
        except torch.OutOfMemoryError as e:  # raised below, once the frames holding device tensors are gone
            oom = TrialOutOfMemory(asked_bytes(str(e)), str(e).splitlines()[0][:200])
        finally:  # also on errors and Ctrl-C: buffers and streams must not outlive the trial
            _release(self.loaded, rt, collect=on_cuda or oom is not None)
        if oom is not None:
            raise oom
        tokens = max(1, tokens)
        where = self.device
        values = {
            "h2d_bytes_per_token": stats.bytes_h2d / tokens,
            "hit_rate": stats.hit_rate,
            "transfer_ms_per_token": stats.transfer_ms / tokens,
            "latency_ms_per_token": 1e3 * wall / tokens,
            "time_per_token": 1e3 * wall / tokens,
            "device_bytes": float(device_bytes),
        }
        sources = {
            "h2d_bytes_per_token": f"counted:offload-runtime({tokens} tokens,{where})",
            "hit_rate": f"counted:offload-runtime({where})",
            "transfer_ms_per_token": stats.transfer_source,
            "latency_ms_per_token": f"measured:wall-clock({where})",
            "time_per_token": f"measured:wall-clock({where},whole forward)",
        }
        sources["device_bytes"] = f"counted:allocated(resident parameters + slot pool,{where})"
        if overlap["cpu"] > 0:  # CPU experts ran beside the device's (on CUDA): how much of their time it hid
            values["cpu_expert_ms_per_token"] = overlap["cpu"] / tokens
            values["cpu_hidden_share"] = overlap["hidden_share"]
            sources["cpu_expert_ms_per_token"] = f"measured:wall-clock(cpu experts,{count(torch.get_num_threads(), 'thread')})"
            sources["cpu_hidden_share"] = overlap["source"]
        if on_cuda:
            values["allocator_peak_bytes"] = float(torch.cuda.max_memory_allocated(dev))
            sources["allocator_peak_bytes"] = f"measured:cuda-allocator({where})"
        return Measured(values, sources, wall)


class _ZeroExperts:
    """An expert runtime whose experts output zeros and hold no weights (the activation probe)."""

    def experts_for(self, layer: int, expert_ids: list[int]) -> dict[int, Any]:
        import torch

        return {e: torch.zeros_like for e in expert_ids}


def asked_bytes(message: str) -> int:
    """Bytes of the failed allocation from a PyTorch out-of-memory message: the device's "Tried to allocate
    2.00 GiB", the host's "you tried to allocate 512000024064 bytes" (0 when it names none)."""
    import re

    from advisor.errors import UserError
    from advisor.hardware.profiles import parse_budget

    if (host := re.search(r"allocate (\d+) bytes", message)) is not None:
        return int(host.group(1))
    m = re.search(r"Tried to allocate ([\d.]+ ?[KMGT]?i?B)", message)
    try:
        return parse_budget(m.group(1)) if m else 0
    except UserError:  # "0 bytes"
        return 0


def _release(loaded: Any, rt: Any, *, collect: bool | None = None) -> None:
    """Detach and close a trial's runtime; with `collect` (default: on CUDA) also collect reference cycles and
    hand cached device memory back (after an OOM too, on any device: its frames may hold tensors in cycles).

    A CPU trial's runtime, its slot pool included, is freed by reference counting when the trial's frame ends
    (no cycles: tests/test_live_speed.py); a full collection there freed nothing of it and cost 0.2-0.3 s per
    trial in a tune process, most of a tiny model's live trial (benchmarks/live_speed.py)."""
    import gc

    import torch

    from advisor.models.view import detach_runtime

    if rt is not None:
        detach_runtime(loaded.model)
        rt.close()
    if collect is None:
        collect = loaded.device.type == "cuda"
    if collect:
        gc.collect()
    if loaded.device.type == "cuda":
        torch.cuda.empty_cache()


def sync_device(device: Any) -> None:
    """Wait for a CUDA device's queued work (wall-clock timings); nothing on a CPU."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)
