"""The front point as plain data, and the canonical metric names every layer uses as keys.

Written by the tuner (`advisor.tune.study`), read by recommend, export, report, studies and pareto through
`advisor.results.read` (fast, stdlib sqlite3) or `advisor.results.store` (SQLAlchemy).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from advisor.units import format_bytes

METRICS = (
    "time_per_token",
    "h2d_bytes_per_token",
    "transfer_ms_per_token",
    "latency_ms_per_token",
    "hit_rate",
    "accuracy",
    "fidelity_kl",
    "fidelity_top1",
    "peak_gpu_bytes",
)
"""Canonical metric names (used as keys everywhere in the project):
  time_per_token          ms per generated token: device expert compute + copies + CPU experts
                          (modelled from the routing trace, `advisor.offload.timing`)
  h2d_bytes_per_token     counted bytes copied host->device per generated token
  transfer_ms_per_token   H2D time per generated token (CUDA events in a live trial on a GPU, else modelled
                          from a hardware profile: replay models it on a GPU too)
  latency_ms_per_token    wall-clock generation time per generated token
  hit_rate                expert-cache hits / look-ups
  accuracy                task accuracy (exact match, or pass@1), 0..1
  fidelity_kl             mean KL(full precision || this config) of next-token distributions
  fidelity_top1           top-1 agreement with full precision, 0..1
  peak_gpu_bytes          peak device memory, counted (resident weights + slots; offloaded: + staging and the
                          activation allowance); a live trial of an offloaded model on CUDA: the allocator's
                          measured peak
`sources` maps each metric to how it was obtained, e.g. "counted", "measured:cuda-events",
"measured:wall-clock", "modelled:pcie(bw=25.0GB/s,lat=10us)".
"""


def short_source(src: str | None, missing: str = "?") -> str:
    """A stored source's kind alone - measured, counted or modelled - as a value's short label: the one definition
    `pareto`'s header row, `recommend`'s reasons and `report`'s summary label numbers with (the full string is in
    the legend, the stored values and `--json`). 'measured:toy(n=32,cpu)' -> 'measured'; a sum of parts keeps every
    kind: 'measured:wall-clock(..)+modelled:pcie(..)' -> 'measured+modelled'; `missing` where none is recorded."""
    if not src:
        return missing
    kinds = [part.split(":", 1)[0] for part in re.split(r"\+(?=[a-z]+:)", src)]
    return "+".join(dict.fromkeys(kinds))


def source_kinds(sources: Iterable[str | None], missing: str = "?") -> str:
    """The distinct `short_source` kinds of several values of one quantity (a column, two points compared), sorted
    and joined with '/': 'counted', or 'measured/modelled' where they were obtained differently."""
    return "/".join(sorted({short_source(s, missing) for s in sources})) or missing


def quality_metric(records: Iterable[Any]) -> str:
    """What a study's plans are judged by as quality, from its stored points or trials (anything with a
    `values` mapping of metric name to number): "accuracy", or "fidelity_top1" - top-1 agreement with full
    precision - where none stores task accuracy and some store fidelity_top1 (a fidelity study: a model without
    a tokenizer). The one rule `advisor recommend` ranks and floors by and the report plots and tabulates by."""
    stored = [r.values for r in records]
    if not any("accuracy" in v for v in stored) and any("fidelity_top1" in v for v in stored):
        return "fidelity_top1"
    return "accuracy"


NO_TOKENIZER = "the model has no tokenizer"
"""What the space text stored with a study says on the objective line where a shipped space's accuracy objective
was tuned as fidelity_top1 (`advisor.tune.space.SearchSpace.without_tokenizer`)."""


def task_text(task: str, objectives: dict[str, str] | None, space_toml: str | None = None) -> str:
    """A study's task as the read-only commands head it: the name alone where the study measured task accuracy
    (or its objectives were not recorded), else the name with why it was not run - a model without a tokenizer
    (`NO_TOKENIZER` in the stored space text): its fidelity is measured on random token ids, as the report's
    Workload line says."""
    if not objectives or "accuracy" in objectives:
        return task
    why = ("no tokenizer; fidelity on random token ids" if space_toml and NO_TOKENIZER in space_toml
           else "no accuracy objective")
    return f"{task} (not run: {why})"


def format_metric(name: str, v: float) -> str:
    """A stored value as people read it, by its name: bytes in binary units (3 decimals, so 1.963 MiB does not
    read as a 2.0 MiB over a 1.97 budget; `device_bytes` printed as 1.287e+07 beside it), times in ms."""
    if name.endswith(("_bytes", "_bytes_per_token")):
        return format_bytes(v, 3)
    if name.endswith("_ms_per_token") or name == "time_per_token":
        return f"{v:.3f} ms"
    return f"{v:.4g}"


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
    objectives: dict[str, str] = field(default_factory=dict)
    """The study's objectives (metric -> direction) that built the front; {} when not recorded."""


def check_stored(p: FrontPoint) -> FrontPoint:
    """`p` as read back from a stored row, or ValueError when the row is garbled (a JSON field that is not an
    object, a value that is not a number): the readers make that one error line, where every command reading the
    front (recommend, export, report) met it later as a traceback."""
    for name in ("config", "values", "sources", "hardware", "objectives"):
        if not isinstance(getattr(p, name), dict):
            raise ValueError(f"study {p.study_name!r} trial {p.trial_number}: stored {name} is not a JSON object")
    bad = [k for k, v in p.values.items() if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        raise ValueError(f"study {p.study_name!r} trial {p.trial_number}: stored value {bad[0]!r} is not a number")
    p.values, p.sources = finite_values(p.values, p.sources)
    return p


def finite_values(values: Mapping[str, Any], sources: Mapping[str, str]) -> tuple[dict[str, float], dict[str, str]]:
    """`values` without a non-finite one (a NaN KL of a model that overflowed), and `sources` saying of each left
    out that it was not stored: how a front is stored (`advisor.results.store.save_front`: PostgreSQL's JSON has no
    NaN and refused the whole row, losing the front of the trial that measured it) and read back (`check_stored`:
    a SQLite front written before that, or edited by hand, held a NaN accuracy, which crashed recommend's interval
    and passed its floor)."""
    kept = {k: float(v) for k, v in values.items() if math.isfinite(float(v))}
    said = {k: f"{sources.get(k, 'unknown')}; not stored: {float(v)} is not a finite number"
            for k, v in values.items() if k not in kept}
    return kept, {**sources, **said}


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether objective vector `a` Pareto-dominates `b` (at least as good everywhere, better somewhere)."""
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def trial_point(study_name: str, study_attrs: Mapping[str, Any], metric_names: Sequence[str], number: int,
                objective_values: Sequence[float] | None, attrs: Mapping[str, Any],
                params: Mapping[str, Any] | None = None) -> FrontPoint:
    """A finished trial as a point, from the study's and the trial's stored attributes: how the tuner stores
    its front, and how `export` reads any complete trial off it."""
    values = dict(attrs.get("values") or {})
    for m, v in zip(metric_names, objective_values or [], strict=False):
        values.setdefault(m, float(v))
    return FrontPoint(
        study_name=study_name,
        trial_number=int(number),
        model=str(study_attrs.get("model", "?")),
        model_fingerprint=str(study_attrs.get("model_fingerprint", "")),
        task=str(study_attrs.get("task", "?")),
        config=dict(attrs.get("config") or {"params": dict(params or {})}),
        values={k: float(v) for k, v in values.items()},
        sources=dict(attrs.get("sources") or {}),
        device=str(attrs.get("device", study_attrs.get("device", "cpu"))),
        hardware=dict(study_attrs.get("hardware") or {}),
        space=str(study_attrs.get("space", "")),
        budget_bytes=study_attrs.get("budget_bytes"),
        objectives=dict(study_attrs.get("objectives") or {}),
    )
