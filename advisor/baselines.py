"""The offloading strategies users run today, as configurations of this tool: ONE definition, used by
`benchmarks/offload_strategies.py` and by `advisor tune --budgets` (which stores them as tagged trials of a
study, so `advisor report` reads them like any trial).

Each keeps every expert at the model's 16-bit format (bf16/fp16) and takes as much GPU expert cache as fits
the budget:

* ``mixtral-offloading`` - LRU cache, every miss copied to the GPU (Eliseev & Mazur, Mixtral-offloading);
* ``fiddler`` - a static set of hot experts (by calibration routing) on the GPU, misses computed on the CPU;
* ``tide`` - the GPU set refreshed every tau denoising steps, misses on the CPU (one configuration per tau
  of `TIDE_TAUS`; the best of them is the strategy's number);
* ``llama.cpp`` - the last whole layers' experts on the GPU, as many layers as fit, the earlier layers' experts
  on the CPU, as llama.cpp places them: ``--n-cpu-moe N`` keeps the experts of the first N blocks on the CPU
  (common/arg.cpp, llm_add_n_cpu_ffn_overrides for blocks 0..N-1) and ``-ngl N`` puts the last N-1 blocks and the
  output layer on the GPU (src/llama-model.cpp: i_gpu_start = n_layer + 1 - N; llama.cpp 0c1e570 as llama-cpp-python
  0.3.36 vendors it), which is what `advisor export --to llama.cpp` writes for such a point: no cache policy at play;

and ``no-cache``: no expert stays on the GPU, every routed expert is copied for every forward - the
reference every cut is measured against. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from advisor.units import dtype_format

TIDE_TAUS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Baseline:
    name: str  # the tag stored with a trial (`baseline=<name>`)
    label: str  # how tables name it
    what: str  # what it does, in a few words
    policy: str
    miss: str
    whole_layers: bool = False  # llama.cpp: slots are whole layers, not a share of every layer
    no_cache: bool = False
    taus: tuple[int, ...] = (0,)


NO_CACHE = Baseline("no-cache", "without cache", "every routed expert copied for every forward", "lru", "copy",
                    no_cache=True)
"""Tables name it with its 16-bit format: `no_cache_label`."""
SIXTEEN_BIT = ("fp16", "bf16")


def full_precision(dtype: str | None, ran: str | None = None) -> str:
    """The 16-bit format of a study's full-precision baseline, as every table, plot and line names it: the format
    its stored no-cache trial (else its 16-bit trials) ran at (`ran`, when a 16-bit one), else the model's own
    16-bit dtype as the study recorded it (model_meta "dtype": "bfloat16" -> bf16, "float16" -> fp16; a format
    name is taken too), else fp16 (a model stored at 32 bits, or no dtype recorded). bf16 and fp16 experts count the same bytes: only the
    name differs, and a bf16 model's baseline called "fp16" named a format it never ran at."""
    if ran in SIXTEEN_BIT:
        return str(ran)
    own = dtype_format(dtype)
    return own if own in SIXTEEN_BIT else "fp16"


def no_cache_label(fmt: str) -> str:
    """How tables name the no-cache baseline at 16-bit format `fmt` (`full_precision`)."""
    return f"{fmt} {NO_CACHE.label}"


BASELINES = (
    Baseline("mixtral-offloading", "Mixtral-offloading-style", "LRU, every miss copied", "lru", "copy"),
    Baseline("fiddler", "Fiddler-style", "static hot experts, misses on the CPU", "static_hot", "cpu"),
    Baseline("tide", "TIDE-style", "interval refresh, misses on the CPU, best tau", "tide", "cpu", taus=TIDE_TAUS),
    Baseline("llama.cpp", "llama.cpp-style", "the last whole layers' experts on the GPU, the others' on the CPU", "lru", "cpu",
             whole_layers=True),
)


def baseline_keys(attrs: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(strategy, budget, tau) of each baseline a stored trial's user attrs say it measured: its own (``baseline``,
    ``baseline_budget``, its fixed tau) and those it stands for (``baseline_also``: baselines of the same
    configuration, e.g. every strategy that keeps no expert on the GPU and computes its misses on the CPU, queued
    once; `advisor.tune.baseline_trials`). Empty for a trial that is no baseline."""
    if "baseline" not in attrs:
        return []
    own = (str(attrs.get("baseline")), str(attrs.get("baseline_budget")),
           int((attrs.get("fixed_params") or {}).get("tau", 0)))
    return [own, *((str(n), str(b), int(t)) for n, b, t in attrs.get("baseline_also") or [])]


def baseline_slots(b: Baseline, num_experts: Sequence[int], fits: Callable[[list[int]], bool]) -> list[int]:
    """GPU slots per MoE layer of `b`: the most that `fits` (a check on counted bytes) allows - the same number
    in every layer, or for whole-layer placement all of the LAST k layers' experts and none of the earlier ones
    (llama.cpp's `--n-cpu-moe` and `-ngl` keep the first blocks on the CPU: module docstring)."""
    n = len(num_experts)
    if b.no_cache:
        return [0] * n
    if b.whole_layers:
        def last(k: int) -> list[int]:
            return [e if i >= n - k else 0 for i, e in enumerate(num_experts)]
        return last(max((k for k in range(n + 1) if fits(last(k))), default=0))
    s = max((s for s in range(max(num_experts) + 1) if fits([min(s, e) for e in num_experts])), default=0)
    return [min(s, e) for e in num_experts]
