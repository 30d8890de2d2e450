"""The front point as plain data, and the canonical metric names every layer uses as keys.

Written by the tuner (`advisor.tune.study`), read by recommend, export, report, studies and pareto through
`advisor.results.read` (fast, stdlib sqlite3) or `advisor.results.store` (SQLAlchemy).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

METRICS = (
    "h2d_bytes_per_token",
    "transfer_ms_per_token",
    "latency_ms_per_token",
    "hit_rate",
    "accuracy",
    "fidelity_kl",
    "fidelity_top1",
    "peak_gpu_bytes",
)


@dataclass
class FrontPoint:
    """A front point as the rest of the project sees it (plain data, no database session attached)."""

    study_name: str
    trial_number: int
    model: str
    model_fingerprint: str
    task: str
    config: dict[str, Any]
    values: dict[str, float]
    sources: dict[str, str]
    device: str = "cpu"
    hardware: dict[str, Any] = field(default_factory=dict)
    space: str = ""
    budget_bytes: float | None = None
    created_at: dt.datetime | None = None
