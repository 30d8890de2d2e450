"""What a trial needs from a model, as one small interface, so the study logic can be tested in seconds.

`Backend` is the seam between the tuner (which decides what to measure and what to reuse) and the
model stack (which measures). `ModelBackend` in `advisor.tune.model_backend` implements it on a real
model; tests inject small fakes with the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from advisor.quant.plan import PrecisionPlan
from advisor.tune.config import ModelShape, TrialConfig


@dataclass
class Measured:
    """Values with the source of each (see `advisor.results.store` for the vocabulary) and the time it took."""

    values: dict[str, float]
    sources: dict[str, str]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TraceRun:
    """A routing trace recorded once per precision plan, with what replaying it needs to scale to tokens."""

    trace: Any
    tokens: int  # generated tokens the trace covers
    compute_seconds: float  # wall-clock of the generation that recorded it
    device: str
    plan_fingerprint: str
    recorded_with: str = "experts-resident"
    """How the experts ran while it was recorded: all resident, or (an offloaded model) through the offload runtime
    with top-k LRU slots, whose own copies are then inside `compute_seconds`."""


class TrialOutOfMemory(Exception):
    """The device ran out of memory inside a trial (its memory already freed); `asked`: bytes of the allocation
    that failed (0 if unknown). The objective records the trial infeasible and the study goes on."""

    def __init__(self, asked: int, message: str):
        super().__init__(message)
        self.asked = asked


class Backend(Protocol):
    model_name: str
    model_fingerprint: str
    task_name: str
    task_data: str | None  # the task's --data file (absolute); None: bundled or hub data
    task_data_sha256: str | None  # that file's SHA-256: another file of one task is another set of problems
    device: str  # e.g. "cpu" or "cuda:0 (NVIDIA H200)"
    shape: ModelShape
    model_meta: dict[str, Any]  # `advisor.models.load.model_meta`, as `advisor.results.config_view.model_info` reads it

    def calibration_counts(self) -> dict[int, list[int]]:
        """Routing counts per (layer, expert) of the full-precision model on the trace prompts."""

    def fidelity(self, plan: PrecisionPlan) -> Measured:
        """fidelity_kl and fidelity_top1 of this plan against full precision."""

    def accuracy(self, plan: PrecisionPlan) -> Measured:
        """Task accuracy under this plan: values accuracy, accuracy_n, accuracy_ci_low, accuracy_ci_high."""

    def trace(self, plan: PrecisionPlan) -> TraceRun:
        """Record the routing of generation under this plan (routing can differ by precision)."""

    def replay(self, run: TraceRun, config: TrialConfig) -> Measured:
        """Replay a trace through the cache of `config`: bytes_h2d, copies, hits, lookups (counted)."""

    def live(self, config: TrialConfig) -> Measured | None:
        """Run generation with the real offload runtime (CUDA when present); None when not supported."""
