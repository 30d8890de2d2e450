"""What a new user following the README's big-model and PostgreSQL sections met: each test failed before its fix."""

from __future__ import annotations

import io

from rich.console import Console
from tune_helpers import FakeBackend, small_space

from advisor.tune.display import LiveProgress
from advisor.tune.study import TuneOptions, run_tune


def test_the_live_line_of_a_live_study_does_not_say_replay(tmp_path):
    """`advisor tune ... --mode live` printed `tuning 1/6 front 1 #1 replay 0:01:00` while each trial ran through
    the offload runtime, where the README promises measured, not replayed, trials. The live line says `live run`
    there (and `replay` in --mode replay)."""
    for mode, said, not_said in (("live", "live run", "replay"), ("replay", "replay", "live run")):
        opts = TuneOptions(study_name=f"line-{mode}", storage=f"sqlite:///{tmp_path}/{mode}.db", sampler="random",
                           seed=0, n_trials=2, heartbeat_interval=None, mode=mode)
        line = LiveProgress(Console(file=io.StringIO(), width=80), opts)
        seen: list[str] = []

        def on_stage(stage, number, line=line, seen=seen):
            line.stage(stage, number)
            seen.append(line.plain_line())

        run_tune(FakeBackend(), small_space(), opts, budget_bytes=None, on_stage=on_stage)
        assert any(said in s for s in seen) and not any(not_said in s for s in seen), (mode, seen)
