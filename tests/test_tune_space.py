"""Search-space files: shipped spaces load, malformed ones fail with one line naming file, line and key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import advisor_in_process

from advisor.errors import UserError
from advisor.tune.config import ModelShape, TrialConfig, allocate_slots, build_config, counted_peak_bytes
from advisor.tune.space import SPACES_DIR, load_space, parse_space

SHAPE = ModelShape(num_experts=(8, 8, 8, 8), top_k=(2,) * 4, hidden=(64,) * 4, intermediate=(32,) * 4,
                   native_format="bf16", resident_bytes=10_000)


@pytest.mark.parametrize("name", ["default", "dllm", "quick"])
def test_shipped_spaces_load_and_enumerate(name):
    space = load_space(name)
    assert space.name == name
    knobs = space.knobs(SHAPE.n_layers, SHAPE.min_experts)
    assert any(k.startswith("fmt_g") for k in knobs) and "policy" in knobs
    speed = "h2d_bytes_per_token" if name == "quick" else "time_per_token"
    assert set(space.objectives) >= {speed, "accuracy", "peak_gpu_bytes"}
    if name != "quick":  # the miss policy is searched in the full spaces
        assert knobs["miss"].values() == ["copy", "cpu", "hybrid"]
    if name == "dllm":
        assert "tide" in knobs["policy"].values() and knobs["tau"].values() == [1, 2, 4, 8]
    if name == "quick":
        assert space.size(SHAPE.n_layers, SHAPE.min_experts) <= 200  # small enough for README command 1
        assert space.budget_fraction is not None


def test_slots_as_a_list_of_counts_capped_by_the_model():
    text = '[precision]\nformats = ["int8", "int4"]\n[cache]\nslots_per_layer = [2, 6, 11, 64]\n'
    space = parse_space(text, "<list>")
    assert space.knobs(SHAPE.n_layers, 8)["slots"].values() == [2, 6, 8]
    assert space.knobs(SHAPE.n_layers, 64)["slots"].values() == [2, 6, 11, 64]
    assert space.size(SHAPE.n_layers, 64) == 2 * 4  # formats x slot counts (one policy, no hot set)
    cfg = build_config(space, {"fmt_g0": "int4", "slots": 6, "policy": "lru", "prefetch": "none"}, SHAPE, None)
    assert list(cfg.slots) == [6] * SHAPE.n_layers


def test_quick_space_is_the_shipped_file():
    """`advisor tune bundled` without --space searches the shipped quick.toml as written (its header's
    "space quick (N configurations)"), not a copy held elsewhere: the file existing said nothing of that."""
    from advisor.tune.space import default_space

    shipped = SPACES_DIR / "quick.toml"
    space = load_space(default_space("bundled"))
    assert (space.name, space.source) == ("quick", str(shipped))
    assert space.text == shipped.read_text(encoding="utf-8")
    assert space.size(4, 64) == 1024  # the bundled model (4 MoE layers x 64 experts), as the README's example says


BAD = [
    ('[precision]\nformats = ["int8", "int5"]\n', 2, "precision.formats", "int5"),
    ('[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = { low = 4, high = 2 }\n', 4,
     "cache.slots_per_layer", "below low"),
    ('[precision]\nformats = ["int8"]\n[cache]\npolicies = ["lru", "clock"]\n', 4, "cache.policies", "clock"),
    ('[precision]\nformats = ["int8"]\n\n[objectives]\naccuracy = "maximise"\n', 5, "objectives.accuracy",
     "maximize"),
    ('[precision]\nformats = ["int8"]\ngroups = 0\n', 3, "precision.groups", "positive"),
    ('[precision]\nformats = ["int8"]\n[precision.hot_cold]\nhot_fraction = [0.0, 1.5]\n', 4,
     "precision.hot_cold.hot_fraction", "between"),
    ('[precision]\nformats = ["int8"]\n[cache]\nexpert_budget = 8\nslots_per_layer = 2\n', 4,
     "cache.expert_budget", "either"),
    ('[precision]\nformats = ["int8"]\ncolour = "red"\n', 3, "precision.colour", "unknown key"),
    ('[precision]\nformats = ["int8"\n', 2, "malformed TOML", "Unclosed"),
    ('[precision]\nformats = ["int8"]\n[evaluation]\nlimit = -3\n', 4, "evaluation.limit", "positive"),
]


@pytest.mark.parametrize("text,line,key,word", BAD)
def test_malformed_space_names_line_and_key(text, line, key, word):
    with pytest.raises(UserError) as e:
        parse_space(text, "bad.toml")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"bad.toml:{line}"), msg
    assert key in msg and word in msg, msg


def test_missing_space_lists_shipped_ones():
    with pytest.raises(UserError, match="quick"):
        load_space("no-such-space")


def test_hot_cold_plan_and_counted_memory():
    space = parse_space('[precision]\nformats = ["int4"]\n[precision.hot_cold]\nhot_fraction = 0.25\n'
                        'hot_formats = ["bf16"]\n', "s.toml")
    counts = {layer: [0, 9, 1, 8, 2, 7, 3, 6] for layer in range(4)}
    cfg = build_config(space, {"fmt_g0": "int4", "hot_fraction": 0.25, "hot_format": "bf16", "slots": 3,
                               "policy": "lru", "prefetch": "none"}, SHAPE, counts)
    for row in cfg.plan.grid(SHAPE.num_experts):  # the two most routed experts (1 and 3) keep bf16
        assert [e for e, f in enumerate(row) if f == "bf16"] == [1, 3]
    bf16, int4 = SHAPE.expert_bytes(0, "bf16"), SHAPE.expert_bytes(0, "int4")
    assert bf16 == 3 * 64 * 32 * 2 and int4 < bf16 / 3
    # a slot cache must be able to hold its largest experts: 2 bf16 + 1 int4 per layer
    assert cfg.peak_bytes == 10_000 + 4 * (2 * bf16 + int4) == counted_peak_bytes(SHAPE, cfg.plan, [3] * 4)
    # same weights spelled differently -> same plan fingerprint (one accuracy measurement)
    same = build_config(space, {"fmt_g0": "int4", "hot_fraction": 0.0, "hot_format": "bf16", "slots": 3,
                                "policy": "lru", "prefetch": "none"}, SHAPE, counts)
    uni = build_config(space, {"fmt_g0": "int4", "hot_fraction": 0.25, "hot_format": "int4", "slots": 5,
                               "policy": "lfu", "prefetch": "none"}, SHAPE, counts)
    assert same.plan.fingerprint == uni.plan.fingerprint != cfg.plan.fingerprint
    assert cfg.to_json()["precision"]["fingerprint"] == cfg.plan.fingerprint
    for c in (cfg, same, uni):  # from_json inverts to_json, through the stored (JSON) form
        assert TrialConfig.from_json(json.loads(json.dumps(c.to_json())), SHAPE.num_experts) == c


def test_expert_budget_allocation():
    counts = {0: [100] + [0] * 7, 1: [1] * 8, 2: [1] * 8, 3: [50, 50] + [0] * 6}
    by_freq = allocate_slots(12, SHAPE, "by_frequency", counts)
    uniform = allocate_slots(12, SHAPE, "uniform", counts)
    assert sum(by_freq) == sum(uniform) == 12 and uniform == [3, 3, 3, 3]
    assert by_freq[1] > by_freq[0] and by_freq[2] > by_freq[3] and min(by_freq) >= 1
    assert allocate_slots(1000, SHAPE, "uniform", None) == [8, 8, 8, 8]


def test_memoised_counting_follows_each_calibration_count_and_hands_out_fresh_slot_lists():
    """Plans, expert bytes and slot splits are memoised (a budget-aware study counts thousands of configurations of
    a few plans): the same knobs with other calibration counts get their own hot set, slots and bytes - as a first
    count gives them - and a caller changing a slot list it was handed changes no later answer."""
    space = parse_space('[precision]\nformats = ["int4"]\n[precision.hot_cold]\nhot_fraction = 0.25\n'
                        'hot_formats = ["bf16"]\n[cache]\nexpert_budget = [12]\n'
                        'allocation = ["by_frequency"]\n', "s.toml")
    params = {"fmt_g0": "int4", "hot_fraction": 0.25, "hot_format": "bf16", "expert_budget": 12,
              "allocation": "by_frequency", "policy": "lru", "prefetch": "none"}
    ranks = {"a": [0, 9, 1, 8, 2, 7, 3, 6], "b": [9, 0, 8, 1, 7, 2, 6, 3]}
    spread = {"a": {0: [100] + [0] * 7, 1: [1] * 8, 2: [1] * 8, 3: [50, 50] + [0] * 6},
              "b": {0: [1] * 8, 1: [100] + [0] * 7, 2: [50, 50] + [0] * 6, 3: [1] * 8}}
    counts = {k: {layer: [r + s for r, s in zip(ranks[k], spread[k][layer], strict=True)] for layer in range(4)}
              for k in ranks}
    configs = {k: build_config(space, params, SHAPE, c) for k, c in counts.items()}
    again = {k: build_config(space, params, SHAPE, c) for k, c in reversed(counts.items())}
    hot = {k: [[e for e, f in enumerate(row) if f == "bf16"] for row in cfg.plan.grid(SHAPE.num_experts)]
           for k, cfg in configs.items()}
    assert hot["a"][1] == [1, 3] and hot["b"][1] == [0, 2], hot  # each count's two most routed experts
    assert configs["a"].slots != configs["b"].slots and sum(configs["a"].slots) == sum(configs["b"].slots) == 12
    for k, cfg in configs.items():
        assert again[k] == cfg
        assert cfg.slots == tuple(allocate_slots(12, SHAPE, "by_frequency", counts[k]))
        bf16, int4 = SHAPE.expert_bytes(0, "bf16"), SHAPE.expert_bytes(0, "int4")
        assert cfg.peak_bytes == 10_000 + sum(min(s, 2) * bf16 + max(s - 2, 0) * int4 for s in cfg.slots)
    handed = allocate_slots(12, SHAPE, "uniform", None)
    handed[0] = 99
    assert allocate_slots(12, SHAPE, "uniform", None) == [3, 3, 3, 3]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "advisor.cli", *args] if False else
                          [sys.executable, "-c", "from advisor.cli import run; run()", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("args,needle", [
    (["--space", "bad.toml"], "bad.toml:3"),
    (["--budget", "12XB"], "12XB"),
    (["--budget", "-4GiB"], "budget"),
    (["--gpu", "NoSuchGPU 9000"], "NoSuchGPU"),
    (["--sampler", "cmaes"], "cmaes"),
    (["--space", "no-such-space"], "no-such-space"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    (tmp_path / "bad.toml").write_text('[precision]\nformats = ["int8"]\ngroups = "some"\n')
    r = _cli("tune", "tiny:llada_moe", *args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "studies").exists()  # nothing written


def test_cli_missing_local_task_data_is_one_line_exit_2(tmp_path):
    r = _cli("tune", "--task", "gsm8k", "--data", "missing.jsonl", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "missing.jsonl" in lines[0], r.stderr
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("text, line, words", [
    ('[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = { low = 1, high = 999 }\n', 4,
     ("999", "16 experts per layer")),
    ('[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = [2, 17]\n', 4, ("17", "16 experts per layer")),
    ('[precision]\nformats = ["int8"]\n[cache]\nexpert_budget = { low = 4, high = 65 }\n', 4,
     ("65", "64 experts in all MoE layers")),
    ('[precision]\nformats = ["int8"]\ngroups = 5\n', 3, ("precision.groups: 5", "4 MoE layers", "at most 4")),
])
def test_space_values_beyond_the_model_are_refused(text, line, words):
    space = parse_space(text, "s.toml")
    with pytest.raises(UserError) as e:
        space.check_model(4, 16)
    assert str(e.value).startswith(f"s.toml:{line}: ") and all(w in str(e.value) for w in words), str(e.value)
    parse_space(text.replace("999", '"all"').replace("17", "16").replace("65", "64").replace("= 5", "= 4"),
                "s.toml").check_model(4, 16)  # at the model's own sizes: accepted


def test_the_shipped_dllm_space_tunes_a_model_of_fewer_moe_layers_than_its_groups(tmp_path):
    """dllm's 4 layer groups refused every dLLM of 2 or 3 MoE layers, though the user wrote no number: `advisor
    tune` now cuts them to the layers and says so in one line. A file the user wrote is still refused."""
    import optuna
    from typer.testing import CliRunner

    from advisor.cli import app
    from tests.eval_helpers import tiny_toy_model_dir

    model = tiny_toy_model_dir(tmp_path)  # 2 MoE layers, with a tokenizer (dllm measures accuracy)
    db = tmp_path / "s.db"
    res = CliRunner().invoke(app, ["tune", str(model), "--space", "dllm", "--trials", "1", "--storage", str(db),
                                   "--study", "s"], terminal_width=300)
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # rich wraps at its own width
    assert said.count("precision.groups") == 1 and ("note: the dllm space's precision.groups = 4 is more than the "
                                                    "model's 2 MoE layers: tuning 2 groups, one per layer") in said
    trial = optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials[0]
    assert sorted(k for k in trial.params if k.startswith("fmt_g")) == ["fmt_g0", "fmt_g1"]
    copy = tmp_path / "mine.toml"
    copy.write_text((SPACES_DIR / "dllm.toml").read_text())
    with pytest.raises(UserError, match="precision.groups: 4 exceeds the model's 2 MoE layers; use at most 2"):
        load_space(str(copy)).check_model(2, 4)


def test_miss_axis_is_validated():
    from advisor.errors import UserError
    from advisor.tune.space import parse_space

    text = '[precision]\nformats = ["int8"]\n[cache]\nmiss = ["copy", "gpu"]\n'
    with pytest.raises(UserError, match="cache.miss"):
        parse_space(text, "<t>")
    ok = parse_space(text.replace('"gpu"', '"cpu"'), "<t>")
    assert ok.knobs(4, 8)["miss"].values() == ["copy", "cpu"] and "tau" not in ok.knobs(4, 8)


def test_expert_budget_as_a_list_of_totals(tmp_path):
    """A list is a domain like a range: `advisor tune` draws each trial's total from it. (Its trials score 2
    problems on 1 traced and 1 fidelity prompt, not the default 32 on 4: the totals drawn are the check.)"""
    import optuna

    (tmp_path / "s.toml").write_text('name = "s"\n[precision]\nformats = ["int8"]\n[cache]\n'
                                     'expert_budget = [8, 64]\n'
                                     '[evaluation]\nlimit = 2\ntrace_prompts = 1\nfidelity_prompts = 1\n')
    db = tmp_path / "s.db"
    r = advisor_in_process("tune", "--space", "s.toml", "--trials", "2", "--storage", str(db), "--study", "b",
                           cwd=tmp_path)  # must succeed: in this process, no second torch import
    assert r.returncode == 0, r.stdout + r.stderr
    done = optuna.load_study(study_name="b", storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    totals = {sum(t.user_attrs["config"]["slots_per_layer"]) for t in done if "config" in t.user_attrs}
    assert totals and totals <= {8, 64}, totals


def test_a_hot_format_without_a_hot_fraction_is_recorded_not_searched(tmp_path):
    """hot_formats = ["bf16", "int8"] with no hot_fraction (0: no expert is ever hot): the study searched the hot
    format anyway - a sampler dimension that changed nothing, and twice the configurations in the header."""
    import optuna

    (tmp_path / "s.toml").write_text('name = "s"\n[precision]\nformats = ["int8", "int4"]\n[precision.hot_cold]\n'
                                     'hot_formats = ["bf16", "int8"]\n[cache]\nslots_per_layer = [4]\n'
                                     '[evaluation]\nlimit = 2\ntrace_prompts = 1\nfidelity_prompts = 1\n')
    db = tmp_path / "s.db"
    r = advisor_in_process("tune", "--space", "s.toml", "--trials", "2", "--storage", str(db), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "space s (2 configurations)" in " ".join(r.stdout.split()), r.stdout
    trials = optuna.load_study(study_name="bundled-toy-s", storage=f"sqlite:///{db}").trials
    assert trials and all("hot_format" not in t.params for t in trials)
    assert all(t.user_attrs["config"]["hot_format"] == "bf16" for t in trials)  # recorded as the first choice
