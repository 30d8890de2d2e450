"""Test doubles and a worker entry point for the tuning tests.

`FakeBackend` answers the `advisor.tune.backend.Backend` interface from closed-form formulas (no model), so
the study machinery - constraints, staging, caching, storage, heartbeat, resume, many workers - is tested
in seconds. It counts every call, so tests can check what was (not) measured. Run as a script it is one
study worker (used by the SIGKILL / Ctrl-C / PostgreSQL tests).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from advisor.errors import UserError
from advisor.quant.plan import PrecisionPlan
from advisor.tune.backend import Measured, TraceRun
from advisor.tune.config import ModelShape, TrialConfig
from advisor.tune.space import parse_space

BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "int8": 8, "fp8": 8, "int4": 4, "nf4": 4, "int3": 3, "int2": 2}

SMALL_SPACE = """
name = "test-small"
[precision]
formats = ["bf16", "int8", "int4"]
groups = 2
[precision.hot_cold]
hot_fraction = [0.0, 0.25]
hot_formats = ["bf16"]
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru", "lfu"]
prefetch = ["none"]
[evaluation]
task = "fake"
limit = 8
"""


# one trial of a hot/cold int4:g64 plan whose misses compute on the CPU, offloaded (the space's budget is below the
# model's bytes): the smallest study that is mixed-only, cpu-miss and has a front of one point
MIXED_CPU_MISS_SPACE = """name = "mx"
[precision]
formats = ["int4:g64"]
[precision.hot_cold]
hot_fraction = [0.25]
hot_formats = ["bf16"]
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
miss = ["cpu"]
[objectives]
h2d_bytes_per_token = "minimize"
accuracy = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
limit = 1
trace_prompts = 1
fidelity_prompts = 1
[budget]
fraction_of_model = 0.6
"""

# a tokenizer-less tiny model's space: fidelity stands in for accuracy
FIDELITY_SPACE = """
name = "tiny-fidelity"
[precision]
formats = ["fp16", "int8", "int4"]
groups = 1
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
prefetch = ["none"]
[objectives]
h2d_bytes_per_token = "minimize"
fidelity_top1 = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
task = "toy"
trace_prompts = 2
fidelity_prompts = 2
"""

def small_space(text: str = SMALL_SPACE):
    return parse_space(text, "<test-small>")


def few_problems_quick_space() -> str:
    """The shipped quick space (tune's default for the bundled model), its name kept, each trial scoring 2 problems
    on 1 traced and 1 fidelity prompt (not 32, 2 and 2): a bundled trial in ~2 s, not ~7, for the tests of a
    session's flow (interrupts, resumes, output), which do not check what the trials measure."""
    from advisor.tune.space import load_space

    text = load_space("quick").text
    for key, was, now in (("limit", 32, 2), ("trace_prompts", 2, 1), ("fidelity_prompts", 2, 1)):
        assert f"\n{key} = {was}\n" in text, text
        text = text.replace(f"\n{key} = {was}\n", f"\n{key} = {now}\n")
    return text


def tiny_fidelity_study(tmp_path: Path, monkeypatch: Any, columns: int = 200) -> Any:
    """`advisor tune tiny:qwen3_moe --space quick --trials 2` into study `s` of `t.db` in `tmp_path` (the working
    directory from now on): a study of a model without a tokenizer, tuned on fidelity as a new user's would be.
    Returns the CliRunner, for the commands the test runs next."""
    from typer.testing import CliRunner

    from advisor.cli import app

    monkeypatch.chdir(tmp_path)
    run = CliRunner(env={"COLUMNS": str(columns)})
    r = run.invoke(app, ["tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "2", "--storage", "t.db",
                         "--study", "s"])
    assert r.exit_code == 0, r.output
    return run


def over_budget_study(tmp_path: Path, monkeypatch: Any, columns: int = 200) -> tuple[Any, Any]:
    """`advisor tune tiny:qwen3_moe --space dllm --budget 94KiB --trials 8` into study `s` of `t.db` in `tmp_path`
    (the working directory from now on), its formats drawn each over its whole domain (a study begun before they
    were drawn in turn within the budget): int8 in both layer groups fits no cache size at 94 KiB, so some trials
    are stored over budget, with placeholder results. Returns the CliRunner and the tune's result."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.tune import study as study_mod

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(study_mod, "holds_blind_format_draws", lambda drawn: True)
    run = CliRunner(env={"COLUMNS": str(columns)})
    r = run.invoke(app, ["tune", "tiny:qwen3_moe", "--space", "dllm", "--budget", "94KiB", "--trials", "8",
                         "--storage", "t.db", "--study", "s"])
    assert r.exit_code == 0, r.output
    return run, r


class FakeBackend:
    """Closed-form stand-in for a model: accuracy and fidelity fall with fewer bits, bytes with more slots."""

    def __init__(self, *, delay: float = 0.0, fingerprint: str = "fake-fp-1", n_layers: int = 2, experts: int = 8,
                 hold: Path | None = None):
        self.model_name = "fake-moe"
        self.model_fingerprint = fingerprint
        self.task_name = "fake"
        self.task_data = self.task_data_sha256 = None
        self.device = "cpu"
        self.shape = ModelShape(num_experts=(experts,) * n_layers, top_k=(2,) * n_layers, hidden=(64,) * n_layers,
                                intermediate=(32,) * n_layers, native_format="bf16", resident_bytes=40_000)
        self.model_meta = {"family": "llada_moe", "name": "fake-moe", "num_moe_layers": n_layers,
                           "num_experts": experts, "layout": "list"}
        self.delay = delay
        self.hold = hold  # accuracy waits until this file exists: a trial that runs exactly as long as a test needs
        self.calls: Counter[str] = Counter()
        self.accuracy_plans: list[str] = []

    def _deficiency(self, plan: PrecisionPlan) -> float:
        bits = [BITS[f.split(":")[0]] for row in plan.grid(self.shape.num_experts) for f in row]
        return sum((16 - min(b, 16)) / 16 for b in bits) / len(bits)

    def calibration_counts(self) -> dict[int, list[int]]:
        self.calls["calibration"] += 1
        return {layer: [100 // (e + 1) for e in range(n)] for layer, n in enumerate(self.shape.num_experts)}

    def fidelity(self, plan: PrecisionPlan) -> Measured:
        self.calls["fidelity"] += 1
        d = self._deficiency(plan)
        return Measured({"fidelity_kl": 0.4 * d * d, "fidelity_top1": 1.0 - 0.3 * d * d},
                        {"fidelity_kl": "measured:fake", "fidelity_top1": "measured:fake"})

    def accuracy(self, plan: PrecisionPlan) -> Measured:
        self.calls["accuracy"] += 1
        self.accuracy_plans.append(plan.fingerprint)
        if self.delay:
            time.sleep(self.delay)
        for _ in range(6000 if self.hold else 0):  # 300 s at most
            if self.hold.exists():
                break
            time.sleep(0.05)
        d = self._deficiency(plan)
        acc = round(0.95 - 0.5 * d * d, 6)
        return Measured({"accuracy": acc, "accuracy_n": 8.0, "accuracy_ci_low": acc - 0.05,
                         "accuracy_ci_high": min(1.0, acc + 0.02)}, {"accuracy": "measured:fake(n=8)"})

    def trace(self, plan: PrecisionPlan) -> TraceRun:
        self.calls["trace"] += 1
        return TraceRun(trace=None, tokens=16, compute_seconds=0.016, device="cpu", plan_fingerprint=plan.fingerprint)

    def replay(self, run: TraceRun, config: TrialConfig) -> Measured:
        self.calls["replay"] += 1
        lookups = hits = nbytes = 0.0
        for layer, slots in enumerate(config.slots):
            n = self.shape.num_experts[layer]
            look = run.tokens * self.shape.top_k[layer]
            share = (slots / n) ** (0.7 if config.policy == "lfu" else 0.8)
            mean_bytes = sum(self.shape.expert_bytes(layer, f) for f in config.plan.grid(self.shape.num_experts)[layer]) / n
            lookups += look
            hits += look * share
            nbytes += look * (1 - share) * mean_bytes
        time_ms = nbytes / 25e9 * 1e3 + hits * 1e-3  # copies at 25 GB/s + 1 us per device expert
        return Measured({"bytes_h2d": nbytes, "copies": lookups - hits, "hits": hits, "lookups": lookups,
                         "time_ms": time_ms},
                        {"bytes_h2d": "counted:fake-replay", "hits": "counted:fake-replay",
                         "time_ms": "modelled:fake-replay"})

    def live(self, config: TrialConfig):
        return None


def main(argv: list[str] | None = None) -> int:
    """One study worker on a FakeBackend: `python tests/tune_helpers.py --storage URL --study NAME --trials N`."""
    from advisor.tune.study import TuneOptions, run_tune

    ap = argparse.ArgumentParser()
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--total", type=int, default=None, help="end the study with this many finished trials")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--hold", type=Path, default=None, help="each accuracy waits until this file exists")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--sampler", default="random")
    ap.add_argument("--heartbeat", type=int, default=1, help="0: a worker without heartbeats")
    ap.add_argument("--grace", type=int, default=2)
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--result", type=Path, default=None)
    ap.add_argument("--no-staging", action="store_true")
    ap.add_argument("--fingerprint", default="fake-fp-1", help="model fingerprint (the accuracy cache key)")
    ap.add_argument("--between", type=Path, default=None,
                    help="after its first finished trial, between two trials, wait until this file exists")
    a = ap.parse_args(argv)
    text = SMALL_SPACE + ("staging = false\n" if a.no_staging else "")
    backend = FakeBackend(delay=a.delay, fingerprint=a.fingerprint, hold=a.hold)
    opts = TuneOptions(study_name=a.study, storage=a.storage, sampler=a.sampler, seed=a.seed,
                       n_trials=None if a.total else a.trials, total_trials=a.total,
                       heartbeat_interval=a.heartbeat or None, grace_period=a.grace)

    def on_stage(stage: str, number: int | None) -> None:
        print(f"STAGE {stage} {number}", flush=True)

    def on_trial(study: Any, trial: Any, objective: Any) -> None:
        if a.between is not None and not a.between.exists():  # its trial finished, its front stored
            print(f"BETWEEN {trial.number}", flush=True)
            while not a.between.exists():
                time.sleep(0.05)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as the CLI: SIGTERM = Ctrl-C outside the study
    print("READY", flush=True)
    try:
        res = run_tune(backend, small_space(text), opts, budget_bytes=a.budget, on_stage=on_stage,
                       on_trial=on_trial)
    except KeyboardInterrupt:  # before the study installed its own handler, after it, or a database wait it cut
        print("INTERRUPTED", file=sys.stderr, flush=True)
        return 130
    except UserError as e:  # as the CLI says it
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    out = {"n_complete": res.n_complete, "n_trials_run": res.n_trials_run, "interrupted": res.interrupted,
           "front": [p.trial_number for p in res.front], "calls": dict(backend.calls),
           "accuracy_plans": backend.accuracy_plans,
           "counters": res.counters, "finished_elsewhere": res.finished_elsewhere,
           "dead_workers": res.dead_workers, "n_waiting": res.n_waiting}
    if a.result:
        a.result.write_text(json.dumps(out))
    print("RESULT " + json.dumps(out), flush=True)
    return 130 if res.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
