"""Front points shaped like the tuner's (config = TrialConfig.to_json() + model_meta), saved to real SQLite."""

from __future__ import annotations

import json
from pathlib import Path

from advisor.quant.plan import PrecisionPlan
from advisor.quant.spec import expert_nbytes_of
from advisor.results.front import FrontPoint
from advisor.results.store import engine_for, save_front

GiB = 1 << 30

FAMILY_NAMES = {
    "llada_moe": ("model.layers.{d}.mlp.experts", "list", None),
    "llada2": ("model.layers.{d}.mlp.experts", "list", "model.layers.{d}.mlp.shared_experts"),
    "qwen3_moe": ("model.layers.{d}.mlp.experts", "fused", None),
    "deepseek_v3": ("model.layers.{d}.mlp.experts", "fused", "model.layers.{d}.mlp.shared_experts"),
    "olmoe": ("model.layers.{d}.mlp.experts", "fused", None),
}


def model_meta(family: str = "llada_moe", n_layers: int = 4, n_experts: int = 8, first_dense: int = 0,
               hidden: int = 2048, inter: int = 1024) -> dict:
    name, layout, shared = FAMILY_NAMES[family]
    layers = []
    for i in range(n_layers):
        d = i + first_dense
        layers.append({"index": i, "decoder_layer": d, "name": name.format(d=d), "num_experts": n_experts,
                       "top_k": 2, "hidden_size": hidden, "intermediate_size": inter,
                       "shared": shared.format(d=d) if shared else None})
    return {"family": family, "name": f"tiny-{family}", "fingerprint": "fp0", "is_diffusion": family in ("llada_moe", "llada2"),
            "layout": layout, "num_moe_layers": n_layers, "num_experts": n_experts, "top_k": 2,
            "hidden_size": hidden, "intermediate_size": inter, "dtype": "bfloat16", "layers": layers}


def config(plan: PrecisionPlan | str, slots: int | list[int], meta: dict, policy: str = "lru") -> dict:
    plan = PrecisionPlan.parse(plan) if isinstance(plan, str) else plan
    n = meta["num_moe_layers"]
    return {
        "precision": json.loads(plan.to_json()),
        "precision_spec": plan.spec,
        "precision_description": plan.describe(),
        "plan_fingerprint": plan.fingerprint,
        "slots_per_layer": slots if isinstance(slots, list) else [slots] * n,
        "policy": policy,
        "prefetch": "none",
        "counted_expert_store_bytes": n * meta["num_experts"] * expert_nbytes_of("bf16", meta["hidden_size"], meta["intermediate_size"]),
        "model_meta": meta,
    }


def point(study: str, trial: int, plan: str, slots, *, acc: float, h2d: float, peak_gib: float,
          meta: dict | None = None, task: str = "toy", latency: float | None = None, model: str = "tiny-llada") -> FrontPoint:
    meta = meta or model_meta()
    values = {"accuracy": acc, "h2d_bytes_per_token": h2d, "peak_gpu_bytes": peak_gib * GiB,
              "transfer_ms_per_token": h2d / 25e9 * 1e3}
    sources = {"accuracy": "measured:exact-match n=64", "h2d_bytes_per_token": "counted",
               "peak_gpu_bytes": "counted:resident-weights+slots*expert-bytes",
               "transfer_ms_per_token": "modelled:pcie(bw=25.0GB/s,lat=10us)"}
    if latency is not None:
        values["latency_ms_per_token"] = latency
        sources["latency_ms_per_token"] = "measured:wall-clock"
    return FrontPoint(study_name=study, trial_number=trial, model=model, model_fingerprint="fp0", task=task,
                      config=config(plan, slots, meta), values=values, sources=sources, device="cpu",
                      hardware={"name": "default"}, space="quick")


def standard_front(study: str = "s1", meta: dict | None = None) -> list[FrontPoint]:
    """A small front: full precision is most accurate but biggest; int4 moves least but loses accuracy."""
    m = meta or model_meta()
    return [
        point(study, 0, "bf16", 8, acc=0.92, h2d=0.0, peak_gib=20.0, meta=m, latency=5.0),
        point(study, 1, "bf16", 4, acc=0.92, h2d=40e6, peak_gib=11.0, meta=m, latency=9.0),
        point(study, 2, "int8", 4, acc=0.91, h2d=20e6, peak_gib=9.1, meta=m, latency=7.0),
        point(study, 3, "int8", 2, acc=0.91, h2d=26e6, peak_gib=6.0, meta=m, latency=8.0),
        point(study, 4, "int4", 4, acc=0.80, h2d=10e6, peak_gib=7.0, meta=m, latency=6.5),
        point(study, 5, "default=int4;layers=0-1:int8", 4, acc=0.89, h2d=15e6, peak_gib=8.0, meta=m, latency=6.8),
    ]


def make_db(path: Path, points: list[FrontPoint]) -> str:
    url = f"sqlite:///{path}"
    engine = engine_for(url)
    by_study: dict[str, list[FrontPoint]] = {}
    for p in points:
        by_study.setdefault(p.study_name, []).append(p)
    for s, pts in by_study.items():
        save_front(engine, s, pts)
    engine.dispose()
    return url
