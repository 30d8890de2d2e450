"""`Backend` on a real model: quantize per plan, measure fidelity and accuracy, record and replay routing.

Workload: the task's first `trace_prompts` prompts, one at a time (batch 1, the offloading scenario), with
the family's published decoding and the task's generation length. The same prompts give the calibration
routing (full precision) that places hot experts, sizes per-layer budgets and profiles static-hot.
Models without a tokenizer (`tiny:*`) get seeded random prompt ids, so the pipeline runs on them too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from advisor.errors import UserError
from advisor.quant.plan import PrecisionPlan
from advisor.tune.backend import Measured, TraceRun
from advisor.tune.config import ModelShape, TrialConfig
from advisor.tune.space import EvaluationSettings

_DTYPE_FORMAT = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}


def _device_text(device: Any) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return device.type


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
        native_format=_DTYPE_FORMAT.get(str(moe[0].dtype), "bf16"),
        resident_bytes=int(total - experts),
    )


class ModelBackend:
    """Measures trials on `loaded` with `task` (see the module docstring for the workload)."""

    def __init__(self, loaded: Any, task: Any, settings: EvaluationSettings, *, profile: Any = None,
                 accuracy_fn: Callable[[Any, Any], Measured] | None = None):
        from advisor.models.load import model_meta  # lazy like every torch import here: importing stays cheap

        self.loaded, self.task, self.settings = loaded, task, settings
        self.profile = profile
        self.model_name = str(loaded.name)
        self.model_fingerprint = str(loaded.fingerprint)
        self.task_name = str(getattr(task, "name", task))
        self.device = _device_text(loaded.device)
        self.shape = model_shape(loaded)
        self.model_meta = model_meta(loaded)
        self._accuracy_fn = accuracy_fn
        self._prompts: list[Any] | None = None
        self._reference = None
        self._calibration = None
        self._runtimes: dict[str, Any] = {}

    # ------------------------------------------------------------------ workload
    @property
    def max_new_tokens(self) -> int:
        return int(self.settings.max_new_tokens or getattr(self.task, "max_new_tokens", 32))

    @property
    def gen_kwargs(self) -> dict[str, Any]:
        """The task's decoding (steps, block length): the workload accuracy is measured with."""
        return dict(getattr(self.task, "gen_kwargs", {}) or {})

    def prompts(self, n: int) -> list[Any]:
        """Token ids [1, L] of n task prompts (the evaluation's own selection and encoding); seeded random ids
        for tokenizer-less models (tiny:*)."""
        import torch

        if self._prompts is None or len(self._prompts) < n:
            tok = self.loaded.tokenizer
            examples = list(getattr(self.task, "examples", []))
            out = []
            if tok is not None and examples:
                from advisor.eval.run import encode_prompt
                from advisor.eval.tasks import select

                for ex in select(examples, n, self.settings.seed):
                    out.append(torch.tensor([encode_prompt(tok, self.task.prompt(ex))], dtype=torch.long))
            else:
                g = torch.Generator().manual_seed(self.settings.seed)
                vocab = int(getattr(self.loaded.model.config, "vocab_size", 256))
                for _ in range(n):
                    length = int(torch.randint(8, 17, (1,), generator=g))
                    out.append(torch.randint(3, max(4, vocab - 2), (1, length), generator=g))
            if not out:
                raise UserError(f"task {self.task_name!r} has no examples to build prompts from")
            self._prompts = out
        return self._prompts[:n]

    def _fidelity_inputs(self) -> Any:
        """Fidelity reference inputs: the task's gold answers as a partly masked canvas (eval helper's
        `task_reference`), or random prompts + a masked canvas for tokenizer-less models."""
        import torch

        from advisor.eval.fidelity import reference_logits, task_reference

        n = self.settings.fidelity_prompts
        if self.loaded.tokenizer is not None and getattr(self.task, "examples", None):
            return task_reference(self.loaded, self.task, n=n, seed=self.settings.seed)
        ids = [p[0] for p in self.prompts(n)]
        width = max(len(p) for p in ids)
        canvas = 8
        mask = self.loaded.mask_token_id
        rows = []
        for p in ids:
            p = torch.cat([p.new_full((width - len(p),), int(p[0])), p])
            tail = p.new_full((canvas,), mask) if mask is not None else p.new_zeros(0)
            rows.append(torch.cat([p, tail]))
        return reference_logits(self.loaded, torch.stack(rows))

    def _runtime(self, plan: PrecisionPlan) -> Any:
        """The quantized runtime of a plan (not attached: callers attach it around one run)."""
        fp = plan.fingerprint
        if fp not in self._runtimes:
            from advisor.quant.apply import quantize_experts

            self._runtimes.clear()  # keep one plan's quantized copy in memory at a time
            self._runtimes[fp] = quantize_experts(self.loaded, plan, attach=False)
        return self._runtimes[fp]

    def _record(self, runtime: Any) -> tuple[Any, int, float]:
        from advisor.offload.trace import merge, record_trace
        from advisor.quant.apply import fast_runtime

        traces, tokens = [], 0
        if runtime is not None:
            runtime = fast_runtime(self.loaded, runtime)  # same outputs (hence routing), dequantized once
        t0 = time.perf_counter()
        for ids in self.prompts(self.settings.trace_prompts):
            tr = record_trace(self.loaded, ids, runtime=runtime, max_new_tokens=self.max_new_tokens,
                              seed=self.settings.seed, **self.gen_kwargs)
            traces.append(tr)
            tokens += tr.generated_tokens
        _sync(self.loaded.device)
        return merge(traces), tokens, time.perf_counter() - t0

    # ------------------------------------------------------------------ Backend interface
    def calibration_counts(self) -> dict[int, list[int]]:
        if self._calibration is None:
            trace, _, _ = self._record(None)
            self._calibration = {i: [int(x) for x in c] for i, c in enumerate(trace.expert_counts())}
        return self._calibration

    def fidelity(self, plan: PrecisionPlan) -> Measured:
        from advisor.eval.fidelity import fidelity

        t0 = time.perf_counter()
        if self._reference is None:
            self._reference = self._fidelity_inputs()
        values = fidelity(self.loaded, self._reference, self._runtime(plan))
        src = (f"measured:logits-vs-{self.shape.native_format}({self._reference.n_positions} positions,"
               f"{self.settings.fidelity_prompts} prompts,{self.device})")
        return Measured({k: float(values[k]) for k in ("fidelity_kl", "fidelity_top1")},
                        {"fidelity_kl": src, "fidelity_top1": src}, time.perf_counter() - t0)

    def accuracy(self, plan: PrecisionPlan) -> Measured:
        if self._accuracy_fn is not None:
            return self._accuracy_fn(self, plan)
        from advisor.eval.run import evaluate

        res = evaluate(self.loaded, self.task, limit=self.settings.limit, seed=self.settings.seed,
                       runtime=self._runtime(plan))
        src = f"{res.source or 'measured'}:{self.task_name}(n={res.n},{self.device})"
        return Measured(
            {"accuracy": float(res.accuracy), "accuracy_n": float(res.n), "accuracy_correct": float(res.correct),
             "accuracy_ci_low": float(res.ci_low), "accuracy_ci_high": float(res.ci_high)},
            {"accuracy": src}, float(res.seconds),
        )

    def trace(self, plan: PrecisionPlan) -> TraceRun:
        trace, tokens, seconds = self._record(self._runtime(plan))
        run = TraceRun(trace, tokens, seconds, self.device, plan.fingerprint)
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
                         hot=hot, sequences=seqs)
        counted = f"counted:trace-replay({run.tokens} tokens,{run.device})"
        return Measured(
            {"bytes_h2d": float(stats.bytes_h2d), "copies": float(stats.copies), "hits": float(stats.lookups
             - stats.misses), "lookups": float(stats.lookups), "transfer_ms": float(stats.transfer_ms)},
            {"bytes_h2d": counted, "hits": counted, "transfer_ms": stats.transfer_source},
        )

    def _hot_sets(self) -> dict[int, list[int]]:
        """static_hot's profile: the full-precision calibration routing (not the replayed trace itself)."""
        return {layer: sorted(range(len(c)), key=lambda e, c=c: (-c[e], e))
                for layer, c in self.calibration_counts().items()}

    def live(self, config: TrialConfig) -> Measured | None:
        """Generation through the real offload runtime on this model's device: measured bytes, copy times
        (CUDA events on a GPU) and wall-clock latency; peak memory measured by the CUDA allocator."""
        import torch

        from advisor.models.generate import generate
        from advisor.models.view import attach_runtime, detach_runtime
        from advisor.offload.runtime import OffloadRuntime

        dev = self.loaded.device
        rt = OffloadRuntime(self.loaded, config.plan, slots_per_layer=list(config.slots),
                            policy=config.policy, prefetch=config.prefetch, device=dev, profile=self.profile,
                            hot=self._hot_sets() if config.policy == "static_hot" else None, attach=False)
        on_cuda = dev.type == "cuda"
        if on_cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        attach_runtime(self.loaded.model, rt, layers=self.loaded.moe)
        tokens = 0
        try:
            t0 = time.perf_counter()
            for ids in self.prompts(self.settings.trace_prompts):
                out = generate(self.loaded, ids, max_new_tokens=self.max_new_tokens, seed=self.settings.seed,
                               on_forward=getattr(rt, "on_forward", None), **self.gen_kwargs)
                tokens += int(out.numel())
            _sync(dev)
            wall = time.perf_counter() - t0
            stats = rt.stats()
        finally:
            detach_runtime(self.loaded.model)
            rt.close()  # also on errors and Ctrl-C: pinned buffers and streams must not outlive the trial
        tokens = max(1, tokens)
        where = self.device
        values = {
            "h2d_bytes_per_token": stats.bytes_h2d / tokens,
            "hit_rate": stats.hit_rate,
            "transfer_ms_per_token": stats.transfer_ms / tokens,
            "latency_ms_per_token": 1e3 * wall / tokens,
        }
        sources = {
            "h2d_bytes_per_token": f"counted:offload-runtime({tokens} tokens,{where})",
            "hit_rate": f"counted:offload-runtime({where})",
            "transfer_ms_per_token": stats.transfer_source,
            "latency_ms_per_token": f"measured:wall-clock({where})",
        }
        if on_cuda:
            values["peak_gpu_bytes"] = float(torch.cuda.max_memory_allocated(dev))
            sources["peak_gpu_bytes"] = f"measured:cuda-allocator({where})"
        return Measured(values, sources, wall)


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)
