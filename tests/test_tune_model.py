"""The objective on a real (tiny, random) MoE dLLM: trace once per plan, replay per cache config, and the
live offload runtime counting the same bytes as the replay of its routing."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from cli_helpers import advisor_in_process

from advisor.tune.space import parse_space

SPACE = """
name = "tiny-test"
[precision]
formats = ["fp32", "int8", "int4"]
groups = 1
[precision.hot_cold]
hot_fraction = [0.0, 0.25]
hot_formats = ["fp32"]
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru", "static_hot"]
prefetch = ["none"]
[objectives]
h2d_bytes_per_token = "minimize"
fidelity_top1 = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
task = "toy"
trace_prompts = 2
fidelity_prompts = 2
max_new_tokens = 8
"""


@pytest.fixture(scope="module")
def backend():
    import torch

    torch.set_num_threads(1)
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model
    from advisor.tune.model_backend import ModelBackend

    loaded = load_model("tiny:llada_moe")
    space = parse_space(SPACE, "<tiny>")
    return ModelBackend(loaded, get_task("toy", limit=4), space.evaluation), space


@pytest.fixture
def db():
    d = Path(tempfile.mkdtemp(prefix="advisor-tm-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    yield f"sqlite:///{d}/m.db"
    shutil.rmtree(d, ignore_errors=True)


def test_shape_counts_real_bytes(backend):
    b, _ = backend
    total = sum(p.numel() * p.element_size() for p in b.loaded.model.parameters())
    assert b.shape.full_bytes() == total
    assert b.model_meta["family"] == "llada_moe" and len(b.model_meta["layers"]) == b.shape.n_layers


def test_tiny_study_replays_one_trace_per_plan(backend, db):
    from advisor.tune.study import TuneOptions, run_tune

    b, space = backend
    res = run_tune(b, space, TuneOptions(study_name="tiny", storage=db, sampler="random", seed=0, n_trials=6,
                                         heartbeat_interval=None), budget_bytes=None)
    assert res.n_complete == 6 and res.front
    c = res.counters
    assert c["traces_recorded"] == res.distinct_plans <= 6 and c["replays"] == 6
    p = res.front[0]
    assert p.sources["h2d_bytes_per_token"].startswith("counted:trace-replay")
    assert p.sources["fidelity_top1"].startswith("measured:logits")
    assert p.sources["transfer_ms_per_token"].startswith("modelled:")
    assert 0.0 <= p.values["hit_rate"] <= 1.0 and p.values["h2d_bytes_per_token"] >= 0


def test_static_hot_trials_store_the_routing_their_hot_set_came_from(backend, db):
    """static_hot's profile is stored with its trials, so an export pins the experts the study pinned."""
    import optuna

    from advisor.tune.study import TuneOptions, run_tune

    b, _ = backend
    space = parse_space(SPACE.replace('policies = ["lru", "static_hot"]', 'policies = ["static_hot"]'), "<tiny>")
    run_tune(b, space, TuneOptions(study_name="hot", storage=db, sampler="random", seed=0, n_trials=3,
                                   heartbeat_interval=None), budget_bytes=None)
    trials = [t for t in optuna.load_study(study_name="hot", storage=db).trials if "config" in t.user_attrs]
    want = {str(layer): list(c) for layer, c in b.calibration_counts().items()}
    assert trials and all(t.user_attrs["config"]["routing_counts"] == want for t in trials)
    plain = parse_space(SPACE.replace('policies = ["lru", "static_hot"]', 'policies = ["lru"]')
                        .replace("hot_fraction = [0.0, 0.25]", "hot_fraction = [0.0]"), "<tiny>")
    run_tune(b, plain, TuneOptions(study_name="plain", storage=db, sampler="random", seed=0, n_trials=2,
                                   heartbeat_interval=None), budget_bytes=None)
    stored = [t.user_attrs["config"] for t in optuna.load_study(study_name="plain", storage=db).trials
              if "config" in t.user_attrs]
    assert stored and not any("routing_counts" in c for c in stored)  # a study-wide table: not stored where unused


def test_full_precision_is_exact_and_cache_size_moves_bytes(backend, db):
    from advisor.results.evalcache import EvalCache
    from advisor.results.store import engine_for
    from advisor.tune.objective import Objective

    b, space = backend
    obj = Objective(b, space, budget_bytes=None, eval_cache=EvalCache(engine_for(db)), study_name="x")
    base = {"fmt_g0": "fp32", "hot_fraction": 0.0, "hot_format": "fp32", "policy": "lru", "prefetch": "none"}
    small = obj.evaluate({**base, "slots": 1}, completed=[])
    full = obj.evaluate({**base, "slots": b.shape.min_experts}, completed=[])
    assert small.values["fidelity_top1"] == pytest.approx(1.0) and small.values["fidelity_kl"] < 1e-6
    assert small.values["h2d_bytes_per_token"] > full.values["h2d_bytes_per_token"]
    assert small.values["peak_gpu_bytes"] < full.values["peak_gpu_bytes"]
    int4 = obj.evaluate({**base, "fmt_g0": "int4", "slots": 1}, completed=[])
    assert int4.values["peak_gpu_bytes"] < small.values["peak_gpu_bytes"]
    assert obj.counters["traces_recorded"] == 2  # fp32 and int4: one trace each, the rest replayed


def test_live_runtime_counts_what_the_replay_counts(backend, db):
    from advisor.tune.config import build_config

    b, space = backend
    params = {"fmt_g0": "int8", "hot_fraction": 0.0, "hot_format": "fp32", "slots": 2, "policy": "lru",
              "prefetch": "none"}
    cfg = build_config(space, params, b.shape, None)
    run = b.trace(cfg.plan)
    replayed = b.replay(run, cfg)
    live = b.live(cfg)
    assert live.values["h2d_bytes_per_token"] * run.tokens == pytest.approx(replayed.values["bytes_h2d"])
    assert live.sources["latency_ms_per_token"].startswith("measured:wall-clock")


def test_miss_policy_moves_time_per_token_and_live_counts_equal_replay(backend, db):
    """time_per_token is modelled by replay (this host's measured CPU expert times), the miss policy moves
    it, and the live runtime with CPU misses counts what the replay counts."""
    from advisor.results.evalcache import EvalCache
    from advisor.results.store import engine_for
    from advisor.tune.config import build_config
    from advisor.tune.objective import Objective

    b, space = backend
    obj = Objective(b, space, budget_bytes=None, eval_cache=EvalCache(engine_for(db)), study_name="m")
    base = {"fmt_g0": "int8", "hot_fraction": 0.0, "hot_format": "fp32", "policy": "lru", "prefetch": "none",
            "slots": 1}
    out = {m: obj.evaluate({**base, "miss": m}, completed=[]) for m in ("copy", "cpu", "hybrid")}
    for m, o in out.items():
        assert o.values["time_per_token"] > 0, m
        assert o.sources["time_per_token"].startswith("modelled:") and "measured:wall-clock" in \
            o.sources["time_per_token"]
    assert out["cpu"].values["h2d_bytes_per_token"] < out["copy"].values["h2d_bytes_per_token"]
    assert out["cpu"].values["time_per_token"] != out["copy"].values["time_per_token"]
    assert out["cpu"].config.to_json()["miss_policy"] == "cpu"
    cfg = build_config(space, {**base, "miss": "cpu", "slots": 2}, b.shape, None)
    run = b.trace(cfg.plan)
    replayed = b.replay(run, cfg)
    live = b.live(cfg)
    assert live.values["h2d_bytes_per_token"] * run.tokens == pytest.approx(replayed.values["bytes_h2d"])
    assert live.sources["time_per_token"].startswith("measured:wall-clock")


def test_out_of_memory_message_gives_the_asked_bytes():
    from advisor.tune.model_backend import asked_bytes

    assert asked_bytes("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 1 GiB total)") == 20 * 2**20
    assert asked_bytes("Tried to allocate 1.5 GB") == 1_500_000_000 and asked_bytes("Tried to allocate 512B") == 512
    assert asked_bytes("Tried to allocate 0 B") == 0 and asked_bytes("out of memory") == 0
    # the host's allocator names a byte count (`advisor eval`/`trace` refuse with it)
    assert asked_bytes("DefaultCPUAllocator: can't allocate memory: you tried to allocate 512000024064 bytes.") \
        == 512000024064


def test_tune_labels_fidelity_with_the_prompts_it_compared(tmp_path):
    """A --data file of 3 problems under `fidelity_prompts = 16`: the study's fidelity source said "16 prompts"
    (the setting) where 3 were compared; it says what was measured, as `advisor eval` does."""
    import json

    from advisor.eval import toy

    (tmp_path / "g.jsonl").write_text("".join(json.dumps({"question": e.question, "answer": e.answer}) + "\n"
                                              for e in toy.test_set()[:3]))
    (tmp_path / "g.toml").write_text('name = "g"\n[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = [8]\n'
                                     '[objectives]\nh2d_bytes_per_token = "minimize"\nfidelity_top1 = "maximize"\n'
                                     '[evaluation]\nlimit = 3\ntrace_prompts = 1\nfidelity_prompts = 16\n'
                                     'max_new_tokens = 8\n')
    r = advisor_in_process("tune", "bundled", "--task", "gsm8k", "--data", "g.jsonl", "--space", "g.toml", "--trials",
                           "1", "--storage", "g.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert re.search(r"fidelity_top1 \[top-1 agree\]: measured:logits-vs-fp32\(\d+ positions,3 prompts,cpu\)", text), r.stdout
