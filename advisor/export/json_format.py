"""Neutral JSON export: everything about one recommended configuration, versioned and re-importable.

Schema `moe-advisor/export`, version 4 (documented field by field in `advisor/export/SCHEMA.md`).
`load(path)` reads it back (checking schema and version) and returns an `ExportDocument`; its
`precision_plan()` is an `advisor.quant.plan.PrecisionPlan`, and the file itself can be given wherever the
advisor takes `--precision` (`PrecisionPlan.parse` recognises the schema and reads its `precision` object).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor import __version__
from advisor.errors import UserError
from advisor.export.base import ExportResult, hot_sets, tide_kw
from advisor.hardware.profiles import DEFAULT_PROFILE
from advisor.models import DIFFUSION_FAMILIES
from advisor.parsing import loads_json
from advisor.quant.plan import EXPORT_SCHEMA, PrecisionPlan
from advisor.results.config_view import ExportConfig, config_in_use, plan_of
from advisor.results.front import FrontPoint, quality_metric

SCHEMA = EXPORT_SCHEMA
VERSION = 4  # 2: TIDE's cache.tau and cache.steps_per_block; 3: source.quality, null task and memory; 4: notes
OPTIONS: dict[str, tuple[str, tuple[str, ...] | None, str]] = {}
REQUIRED = ("schema", "version", "source", "model", "precision", "cache", "metrics")


def document(point: FrontPoint, cfg: ExportConfig) -> dict[str, Any]:
    m = cfg.model
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "generator": f"moe-advisor {__version__}",
        "source": {"study": point.study_name, "trial": point.trial_number,
                   "task": point.task if "accuracy" in point.values else None,
                   "quality": quality(point, cfg.task_text, cfg.model.family),
                   "device": point.device, "search_space": point.space},
        "model": {
            "name": point.model, "fingerprint": point.model_fingerprint, "family": m.family, "layout": m.layout,
            "is_diffusion": m.is_diffusion, "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
            "top_k": m.top_k, "dtype": m.dtype, **({"quant_method": m.quant_method} if m.quant_method else {}),
            "moe_layers": [{"index": x.index, "decoder_layer": x.decoder_layer, "name": x.name,
                            "num_experts": x.num_experts, "shared": x.shared} for x in m.layers],
        },
        "precision": json.loads(plan_of(cfg.precision).to_json()),
        "precision_per_layer": [sorted(set(row)) for row in cfg.formats],
        "cache": {"slots_per_layer": cfg.slots_per_layer, "policy": cfg.policy, "prefetch": cfg.prefetch,
                  "miss_policy": cfg.miss_policy,
                  **(tide_kw(cfg) if cfg.policy == "tide" else {}),  # other policies have no interval
                  **({"hot": {str(k): v for k, v in hot_sets(cfg).items()}} if cfg.policy == "static_hot" else {})},
        "metrics": {k: {"value": v, "source": point.sources.get(k, "unknown")} for k, v in sorted(point.values.items())},
        "hardware": hardware(point),
        # as `recommend --json` shows it: no tau beside a policy without one, no denoising keys for an AR point
        "config": config_in_use(point.config),
        "notes": list(cfg.notes),
    }


def hardware(point: FrontPoint) -> dict[str, Any]:
    """The profile the study used - for a study run without --gpu, which stored none, the default link its copies
    were priced on. A memory of 0 is the profile's "not specified" (`HardwareProfile.memory_bytes`), written as
    null: 0 read as a GPU with no memory."""
    hw = dict(point.hardware or DEFAULT_PROFILE.to_dict())
    return {**hw, "memory_bytes": hw.get("memory_bytes") or None}


def quality(point: FrontPoint, task_text: str = "", family: str = "") -> dict[str, str] | None:
    """What the point's quality figure is (`quality_metric`, the one recommend ranks by): task accuracy on its task,
    or - a study that scored no task (a model without a tokenizer, a space without an accuracy objective) - top-1
    agreement with the full-precision model, which `source.task` naming the task read as task accuracy on it.
    `task_text`: the task as the read-only commands head it (`advisor.results.read.read_task_text`: why it was not
    run); `family`: the model's, which says which predictions were compared (`advisor.eval.fidelity`). None where
    the point stores neither figure."""
    metric = quality_metric([point])
    if metric not in point.values:
        return None
    if metric == "accuracy":
        return {"metric": metric, "meaning": f"task accuracy on {point.task}, 0..1"}
    against = re.search(r"logits-vs-([\w:]+)", point.sources.get(metric, ""))
    return {"metric": metric, "meaning": f"top-1 agreement of {_predictions(family)} with the full-precision model"
            f"{f' ({against[1]})' if against else ''}, 0..1, not task accuracy: "
            + (f"task {task_text}" if task_text and task_text != point.task else "none is stored for this point")}


def _predictions(family: str) -> str:
    """Which predictions a fidelity score of `family`'s model compared (`advisor.eval.fidelity`): a dLLM's are not
    next-token ones - its masked answer positions', DiffusionGemma's (no mask token) its whole answer canvas's."""
    if family == "diffusion_gemma":
        return "the token predictions over the answer canvas (partly replaced by random tokens)"
    if family in DIFFUSION_FAMILIES:
        return "the token predictions at masked answer positions"
    return "next-token predictions" if family else "the token predictions at the scored positions"


def export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult:
    doc = document(point, cfg)
    return ExportResult("json", json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n", doc, [])


@dataclass
class ExportDocument:
    """A loaded export: the raw document plus typed accessors."""

    doc: dict[str, Any]

    def precision_plan(self) -> PrecisionPlan:
        return PrecisionPlan.from_json(self.doc["precision"])

    @property
    def slots_per_layer(self) -> list[int]:
        return list(self.doc["cache"]["slots_per_layer"])

    @property
    def policy(self) -> str:
        return str(self.doc["cache"]["policy"])

    @property
    def tau(self) -> int | None:
        """TIDE's refresh interval (None: the policy is not tide, or the file predates version 2)."""
        tau = self.doc["cache"].get("tau")
        return None if tau is None else int(tau)

    @property
    def prefetch(self) -> str:
        return str(self.doc["cache"]["prefetch"])

    @property
    def model(self) -> str:
        return str(self.doc["model"]["name"])


def load(path: str | Path) -> ExportDocument:
    """Read an export written by `advisor export --to json`; a foreign or newer file is a UserError."""
    p = Path(path)
    try:
        doc = loads_json(p.read_text())
    except FileNotFoundError:
        raise UserError(f"no such export file: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{p} is not JSON ({e}); pass a file written by `advisor export --to json`") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UserError(f"{p} is not a moe-advisor export (schema {SCHEMA!r} expected)")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise UserError(f"{p} has schema version {doc.get('version')!r}; this advisor reads up to {VERSION}: upgrade it")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise UserError(f"{p} lacks {missing}; re-export it with `advisor export --to json`")
    out = ExportDocument(doc)
    out.precision_plan()  # validates the plan (UserError when malformed)
    return out
