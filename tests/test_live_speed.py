"""A `--mode live` trial on the CPU spends its time on what it measures: no full garbage collection per trial (each
took 0.2-0.3 s in a tune process, most of a tiny model's trial: benchmarks/live_speed.py), and what that
collection was there for - the trial's runtime and slot pool going away with the trial - holds without it."""

from __future__ import annotations

import gc
import weakref

import pytest


def test_live_cpu_trials_run_no_full_collection(tmp_path, monkeypatch):
    """`advisor tune tiny:llada_moe --mode live --device cpu`: the trials finish, and no `gc.collect()` ran in
    them (before: one per trial in the runtime's release and one per new plan's store)."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.tune import objective

    calls: list[int] = []
    collect = gc.collect
    trial = objective.Objective.__call__
    in_trial = [False]

    def counting(*args, **kwargs):
        if in_trial[0]:
            calls.append(1)
        return collect(*args, **kwargs)

    def timed_trial(self, t):
        in_trial[0] = True
        try:
            return trial(self, t)
        finally:
            in_trial[0] = False

    monkeypatch.setattr(gc, "collect", counting)
    monkeypatch.setattr(objective.Objective, "__call__", timed_trial)
    monkeypatch.chdir(tmp_path)
    r = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["tune", "tiny:llada_moe", "--mode", "live", "--device", "cpu", "--trials", "2", "--storage", "t.db"])
    assert r.exit_code == 0, r.output
    assert "2 finished trials" in " ".join(r.output.split()), r.output
    assert calls == [], f"{len(calls)} full collections in 2 live CPU trials"


@pytest.mark.parametrize("knobs", [
    {"policy": "lru", "prefetch": "none", "miss": "copy"},
    {"policy": "lru", "prefetch": "lookahead", "miss": "hybrid"},
    {"policy": "static_hot", "prefetch": "prev_step", "miss": "cpu"},
])
def test_a_live_cpu_trials_runtime_goes_with_the_trial(knobs, monkeypatch):
    """With garbage collection off, `ModelBackend.live` returns with its runtime and slot pool freed (reference
    counting alone: no cycle keeps them), so trials do not pile up slot pools between collections."""
    import torch

    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model
    from advisor.offload import runtime
    from advisor.tune.config import build_config
    from advisor.tune.model_backend import ModelBackend
    from advisor.tune.space import parse_space

    torch.set_num_threads(1)
    space = parse_space('name = "t"\n[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = [2]\n'
                        '[objectives]\nh2d_bytes_per_token = "minimize"\nfidelity_top1 = "maximize"\n'
                        '[evaluation]\ntrace_prompts = 2\nmax_new_tokens = 8\n', "<t>")
    b = ModelBackend(load_model("tiny:llada_moe"), get_task("toy", limit=2), space.evaluation)
    refs: list[tuple[weakref.ref, weakref.ref]] = []
    close = runtime.OffloadRuntime.close

    def recording_close(self):
        refs.append((weakref.ref(self), weakref.ref(self.slots[0][0])))
        return close(self)

    monkeypatch.setattr(runtime.OffloadRuntime, "close", recording_close)
    cfg = build_config(space, {"fmt_g0": "int8", "slots": 2, **knobs}, b.shape, b.calibration_counts())
    was = gc.isenabled()
    gc.disable()
    try:
        measured = b.live(cfg)
    finally:
        if was:
            gc.enable()
    assert measured.values["h2d_bytes_per_token"] >= 0 and len(refs) == 1
    rt, slot = refs[0]
    assert rt() is None and slot() is None, "the trial's runtime or its slot pool outlived the trial"
