"""`advisor tune --budgets`: the baseline strategies and each budget's best-cache points as trials of the study,
read back by `advisor report` like any trial (a tiny real LLaDA-MoE model, real quantization, real replay)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import advisor_entry, advisor_in_process, flat, said_lines

from advisor.baselines import BASELINES, NO_CACHE, Baseline, baseline_slots
from advisor.results.config_view import config_in_use

BUDGETS = ("30%", "60%")
SPACE = """
name = "baselines-test"
[precision]
formats = ["fp16", "int8", "int4"]
groups = 1
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru", "tide"]
tau = [1, 4]
prefetch = ["none"]
miss = ["copy", "cpu"]
[objectives]
time_per_token = "minimize"
accuracy = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
task = "toy"
limit = 4
trace_prompts = 2
fidelity_prompts = 2
max_new_tokens = 16
"""


def test_baseline_slots_take_the_most_that_fits():
    def under(limit):
        return lambda slots: sum(slots) <= limit

    mixtral, llama = BASELINES[0], next(b for b in BASELINES if b.whole_layers)
    assert baseline_slots(mixtral, [8, 8, 8], under(17)) == [5, 5, 5]
    assert baseline_slots(llama, [8, 8, 8], under(17)) == [0, 8, 8]  # the last layers, as llama.cpp keeps them
    assert baseline_slots(llama, [8, 8, 8], under(7)) == [0, 0, 0]
    assert baseline_slots(mixtral, [4, 8], under(100)) == [4, 8]
    assert baseline_slots(NO_CACHE, [8, 8], under(100)) == [0, 0]
    assert isinstance(NO_CACHE, Baseline) and {b.name for b in BASELINES} == {
        "mixtral-offloading", "fiddler", "tide", "llama.cpp"}


def test_bad_budgets_value_is_one_line_before_loading(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from advisor.cli import run; run()", "tune", "--budgets", "10%,150%",
                        "--storage", f"sqlite:///{tmp_path}/x.db"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: --budgets '150%': a share must be between 0% and 100%, e.g. 25%"], r.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(("model", "budgets", "over"), [
    # 90% of the bundled model is 3.93 MiB: its seeded points were cut to 2 MiB while labelled "budget 90%",
    # and all seven of its baselines were stored over budget - an answer at 90% the study cannot give
    ("bundled", "10%,90%", "90% (3.93 MiB)"),
    # a size compares with --budget without the model (only shares need its size): refused before it loads
    # (minutes for a real checkpoint), shown by a model directory that passes the spec check but cannot load
    ("unloadable", "10%,3MiB", "3MiB (3.00 MiB)"),
    # two over it: "exceed", "drop them" (it said "exceeds", "drop it")
    ("unloadable", "3MiB,10%,4MiB", "3MiB (3.00 MiB), 4MiB (4.00 MiB)"),
])
def test_budgets_above_the_studys_budget_are_refused_not_stored_over_budget(tmp_path, model, budgets, over):
    """`--budget 2MiB` with a --budgets value above it: one line, exit 2, nothing written."""
    spec = model if model == "bundled" else str(tmp_path / model)
    if model == "unloadable":  # a MoE config.json and an empty weights file: loading it would fail, not refuse this
        Path(spec).mkdir()
        Path(spec, "config.json").write_text('{"model_type": "qwen3_moe", "num_experts": 4}')
        Path(spec, "model.safetensors").write_bytes(b"")
    argv = ("tune", spec, "--budget", "2MiB", "--budgets", budgets, "--trials", "1", "--storage",
            f"sqlite:///{tmp_path}/x.db")
    if model == "bundled":  # refused once the model has loaded (a share needs its size): the entry point in this
        r = advisor_entry(*argv, cwd=tmp_path)  # process, as a subprocess it paid ~10 s of CPU importing torch
    else:  # refused at startup, as a fresh process does it
        r = subprocess.run([sys.executable, "-c", "from advisor.cli import run; run()", *argv],
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    verb, it = ("exceed", "them") if "," in over else ("exceeds", "it")
    assert r.stderr.strip().splitlines() == [
        f"error: --budgets {over} {verb} the study's budget of 2.00 MiB (--budget 2MiB); drop {it} from --budgets, "
        "or raise --budget"], r.stderr
    assert not (tmp_path / "x.db").exists()


def test_budgets_of_every_fp16_expert_offload_a_model_stored_at_fp32(shm_tmp_path):
    """`--budgets 100%` is the resident weights + every expert at FP16: 4.23 MiB of the bundled model's 7.23 MiB
    (stored at fp32), so it loads offloaded, as under `--budget 4.23MiB`. The share was taken of the counted fp32
    bytes, and the model was loaded whole, below its budget: "counted 7.23 MiB of weights <= --budgets 100%"."""
    space = shm_tmp_path / "s.toml"
    space.write_text(SPACE)
    r = advisor_in_process("tune", "--budgets", "100%", "--space", str(space), "--trials", "1", "--storage",
                           f"sqlite:///{shm_tmp_path}/x.db", cwd=shm_tmp_path)  # not about the process: no torch import again
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("loading: offloaded: routed experts stream from the checkpoint (counted 7.23 MiB of checkpoint tensors > --budgets "
            "100% (resident weights + 100% of the FP16 expert bytes))") in " ".join(r.stdout.split()), r.stdout


@pytest.fixture(scope="module")
def study(shm_module_path):
    import torch

    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model
    from advisor.tune.baseline_trials import baseline_trials, budget_points
    from advisor.tune.budget import BudgetFit, budget_memory
    from advisor.tune.model_backend import ModelBackend
    from advisor.tune.space import parse_space
    from advisor.tune.study import TuneOptions, run_tune
    from tests.test_report_study import agreement_accuracy

    torch.set_num_threads(1)
    space = parse_space(SPACE, "<baselines-test>")
    loaded = load_model("tiny:llada_moe")
    task = get_task("toy", limit=space.evaluation.limit, seed=space.evaluation.seed)
    backend = ModelBackend(loaded, task, space.evaluation, accuracy_fn=agreement_accuracy)
    url = f"sqlite:///{shm_module_path / 'study.db'}"
    budget = int(budget_memory("60%", backend.shape)[0])
    shape = backend.shape
    enqueued = len(budget_points(BudgetFit(space, shape, budget), BUDGETS)) + len(baseline_trials(space, shape, BUDGETS))
    opts = TuneOptions(study_name="b", storage=url, sampler="random", total_trials=None, n_trials=enqueued,
                       budgets=BUDGETS, warm_start=False)
    result = run_tune(backend, space, opts, budget_bytes=budget)
    opts.n_trials = 1
    run_tune(backend, space, opts, budget_bytes=budget)  # resuming enqueues nothing twice
    return url, shape, result


def test_baselines_are_stored_trials_at_each_budget(study):
    import optuna

    from advisor.report.data import load_study_data
    from advisor.tune.budget import budget_memory

    url, shape, result = study
    trials = load_study_data("b", url).trials
    tagged = [t for t in trials if "baseline" in t.attrs]
    assert [t.attrs["baseline"] for t in tagged].count("no-cache") == 1
    per_budget = len(BASELINES) - 1 + len(next(b for b in BASELINES if b.name == "tide").taus)
    assert len(tagged) == 1 + per_budget * len(BUDGETS)
    every = optuna.load_study(study_name="b", storage=url).get_trials(deepcopy=False)  # waiting ones too
    assert sum("baseline" in t.user_attrs for t in every) == len(tagged)
    for t in tagged:
        assert t.attrs["feasible"] and set(t.config["layer_formats"]) == {"fp16"}
        if t.attrs["baseline"] == "no-cache":
            assert t.config["slots_per_layer"] == [0] * shape.n_layers and t.config["miss_policy"] == "copy"
            continue
        b = next(b for b in BASELINES if b.name == t.attrs["baseline"])
        memory = budget_memory(t.attrs["baseline_budget"], shape)[0]
        slots = t.config["slots_per_layer"]
        assert t.values["peak_gpu_bytes"] <= memory
        assert (t.config["policy"], t.config["miss_policy"]) == (b.policy, b.miss)
        if b.whole_layers:  # every expert of the last layers, none of the earlier ones (llama.cpp's placement)
            k = sum(s > 0 for s in slots)
            assert slots == [e if i >= shape.n_layers - k else 0 for i, e in enumerate(shape.num_experts)]
        else:
            assert len(set(slots)) == 1
    # each budget's best-cache points: every format x (policy, miss, tau) with the most cache that fits
    seeded = [t for t in trials if str(t.attrs.get("seeded", "")).startswith("budget ")]
    assert {t.attrs["seeded"] for t in seeded} == {f"budget {b}" for b in BUDGETS}
    for t in seeded:
        memory = budget_memory(t.attrs["seeded"].split()[1], shape)[0]
        assert t.values["peak_gpu_bytes"] <= memory
    assert result.n_complete + 1 == len(trials)


def test_report_answers_with_the_baselines(study, tmp_path):
    from advisor.report.data import load_study_data
    from advisor.report.select import feasible_trials, rank
    from advisor.results.front import short_source, source_kinds

    url, _, _ = study
    # the report must succeed: through the CLI in this process, no second torch import
    r = advisor_in_process("report", "b", "--storage", url, "--block-lengths", "", "--memory", ",".join(BUDGETS), "-o",
                           str(tmp_path / "r"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    payload = json.loads((tmp_path / "r" / "report.json").read_text())
    trials = {t.number: t for t in feasible_trials(load_study_data("b", url))}
    ref = trials[payload["baseline"]["trial"]]
    assert ref.attrs["baseline"] == "no-cache"
    for a in payload["answer_by_budget"]:
        fit = [t for t in trials.values() if t.values["peak_gpu_bytes"] <= a["memory_bytes"]]
        for row in a["rows"]:
            same = [t for t in fit if set(t.config["layer_formats"]) == {row["precision"]}]
            assert row["trial"] == min(same, key=rank).number
        names = [row["strategy"] for row in a["baselines"]]
        assert names == [b.label for b in BASELINES]
        for row in a["baselines"]:
            t = trials[row["trial"]]
            assert t.attrs["baseline_budget"] == a["budget"]
            assert row["time_per_token"] == t.values["time_per_token"]
            assert row["time_cut"] == pytest.approx(1 - t.values["time_per_token"] / ref.values["time_per_token"])
            assert row["reduction_vs_baseline"] == pytest.approx(
                1 - t.values["h2d_bytes_per_token"] / ref.values["h2d_bytes_per_token"])
            if t.config["policy"] == "tide":  # the best tau of the strategy's trials at this budget
                taus = [u for u in trials.values() if u.attrs.get("baseline") == "tide"
                        and u.attrs["baseline_budget"] == a["budget"]]
                assert len(taus) == 4 and row["time_per_token"] == min(u.values["time_per_token"] for u in taus)
        # the terminal summary gives the time per token the answer ranks by, its cut and the transfer cut, each
        # labelled as pareto labels the values it is computed from (the summary said "transfer cut 99.4%", no label)
        for row in a["rows"]:
            t = trials[row["trial"]]
            h2d, time = (source_kinds([t.sources.get(m), ref.sources.get(m)])
                         for m in ("h2d_bytes_per_token", "time_per_token"))
            assert (h2d, time) == ("counted", "modelled")
            assert (f" {row['precision']} #{row['trial']}: time per token {row['time_per_token']:.3f} ms ({time}), "
                    f"time cut {100 * row['time_cut']:.1f}% ({time}), transfer cut "
                    f"{100 * row['reduction_vs_baseline']:.1f}% ({h2d}), accuracy change ") in " ".join(r.stdout.split()), \
                r.stdout
    for row in payload["headline"]:
        if row["accuracy_change"] is not None:
            kind = short_source(trials[row["trial"]].sources["accuracy"])
            assert f"accuracy change {100 * row['accuracy_change']:+.1f} pt, to {row['accuracy']:.3f} ({kind}" in r.stdout, r.stdout
    assert all(len(ln) <= 80 for ln in r.stdout.splitlines()[3:]), r.stdout  # below the three paths
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| GPU budget | strategy | precision | trial | GPU slots/layer | policy | miss |" in md
    assert "Time per token: modelled:" in md and "llama.cpp-style" in md


LLAMA_SPACE = """
name = "llama-layers"
[precision]
formats = ["fp16"]
groups = 1
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
prefetch = ["none"]
miss = ["cpu"]
[objectives]
time_per_token = "minimize"
accuracy = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
task = "toy"
limit = 2
trace_prompts = 1
fidelity_prompts = 1
"""


def test_llama_cpp_style_baseline_measures_the_layers_its_llama_cpp_export_runs(shm_tmp_path):
    """llama.cpp keeps the FIRST blocks' experts on the CPU (`--n-cpu-moe N`: blocks 0..N-1; `-ngl N`: the last N-1
    blocks and the output layer on the GPU), but the llama.cpp-style baseline put the first MoE layers' experts on
    the GPU (slots 64,0,0,0), so a baseline trial measured a placement that its own llama.cpp export (-ngl 2: the
    last block) does not run. It now measures the last layers, and `advisor export --to llama.cpp` of the trial
    places exactly the blocks it measured on the GPU."""
    (shm_tmp_path / "space.toml").write_text(LLAMA_SPACE)
    url = f"sqlite:///{shm_tmp_path}/s.db"
    r = advisor_in_process("tune", "--space", "space.toml", "--storage", url, "--study", "l", "--budgets", "60%",
                           "--trials", "12", cwd=shm_tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    import optuna

    from advisor.results.storage import open_storage

    study = optuna.load_study(study_name="l", storage=open_storage(url, heartbeat_interval=None))
    (t,) = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline") == "llama.cpp"]
    assert t.state.name == "COMPLETE"
    slots = t.user_attrs["config"]["slots_per_layer"]
    assert slots == [0, 0, 0, 64], slots  # 60% holds one whole layer: the last, as --n-cpu-moe 3 / -ngl 2 keep it
    r = advisor_in_process("export", "l", str(t.number), "--storage", url, "--to", "llama.cpp", "--json", cwd=shm_tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    gpu = sorted({int(name.split(".")[1]) for name, dev in doc["placement"].items() if dev == "GPU"})
    assert gpu == [i for i, s in enumerate(slots) if s] == doc["placement_info"]["gpu_blocks"], doc["placement"]
    assert doc["run_command"][doc["run_command"].index("-ngl") + 1] == "2"


def test_explicit_per_layer_slots_and_miss_policy_round_trip_through_storage():
    """A llama.cpp-style placement (the last whole layers, 0 slots before them) with its miss policy and tau: counted
    bytes include only the placed experts, and the stored configuration reads back unchanged (the report
    replays stored trials from it)."""
    from advisor.tune.config import ModelShape, TrialConfig, build_config
    from advisor.tune.space import parse_space

    space = parse_space(SPACE, "<baselines-test>")
    shape = ModelShape(num_experts=(4, 4), top_k=(2, 2), hidden=(8, 8), intermediate=(16, 16),
                       native_format="fp32", resident_bytes=1000)
    params = {"fmt_g0": "fp16", "hot_fraction": 0.0, "hot_format": "fp16", "prefetch": "none",
              "slots_per_layer": [0, 4], "policy": "tide", "miss": "cpu", "tau": 4}
    cfg = build_config(space, params, shape, None)
    assert cfg.slots == (0, 4) and cfg.peak_bytes == 1000 + 4 * shape.expert_bytes(1, "fp16")
    back = TrialConfig.from_json(cfg.to_json(), shape.num_experts)
    assert (back.slots, back.policy, back.miss, back.tau) == ((0, 4), "tide", "cpu", 4)
    assert back.cache_key == cfg.cache_key


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from advisor.cli import run; run()", *args], capture_output=True,
                          text=True, timeout=120)


def test_any_complete_trial_exports_and_unfinished_ones_are_refused(study, tmp_path):
    """The report's baseline rows are trials off the front: `export b N` exports each complete one with one line
    naming the front trials that dominate it (without torch or optuna); a TIDE trial's JSON carries its tau and
    the study's steps per block, an LRU one no tau; a running or failed trial is refused in one line (exit 2)."""
    import re
    import shutil

    import optuna

    from advisor.export.json_format import load
    from advisor.recommend import load_points
    from advisor.results.front import dominates
    from advisor.results.trials import read_trial

    url, _, _ = study
    front = {p.trial_number: p for p in load_points(url, "b")}
    st = optuna.load_study(study_name="b", storage=url)
    metrics, dirs = st.metric_names, [d.name.lower() for d in st.directions]
    for n, p in front.items():  # a front trial reads back from Optuna's tables as the tuner stored it
        q = read_trial(url, "b", n).point
        assert (q.config, q.values, q.sources, q.model, q.hardware, q.device) == \
            (p.config, p.values, p.sources, p.model, p.hardware, p.device)
    off = [t for t in st.get_trials(deepcopy=False) if "baseline" in t.user_attrs and t.number not in front]
    tide = next(t for t in off if t.user_attrs["config"]["policy"] == "tide")
    lru = next(t for t in off if t.user_attrs["config"]["policy"] == "lru")
    docs = {}
    for t in (tide, lru):
        r = _cli("export", "b", str(t.number), "--to", "json", "--storage", url)
        assert r.returncode == 0, r.stderr
        (line,) = [ln for ln in said_lines(r.stderr) if "not on the stored front" in ln]
        by = re.search(r"dominated by front trials? ([\d, ]+) on time_per_token, accuracy, peak_gpu_bytes", line)
        assert by, line
        for n in map(int, by.group(1).split(", ")):
            assert dominates([front[n].values[m] for m in metrics], t.values, dirs)
        docs[t.number] = json.loads(r.stdout)
        assert docs[t.number]["source"]["trial"] == t.number
        # the stored config as recommend shows it: an lru trial's tau (drawn, never used) dropped
        assert docs[t.number]["config"] == config_in_use(t.user_attrs["config"])
    decoding = tide.user_attrs["config"]["decoding"]
    assert decoding == {"generate": {"max_new_tokens": 16, "seed": 0, "steps": 16, "block_length": 8},
                        "steps_per_block": 8, "block_length": 8, "steps_per_block_counts": "denoising steps"}
    assert docs[tide.number]["cache"]["tau"] == tide.user_attrs["config"]["tau"] > 0
    assert docs[tide.number]["cache"]["steps_per_block"] == 8
    assert "tau" not in docs[lru.number]["cache"] and "steps_per_block" not in docs[lru.number]["cache"]
    assert "tau" not in docs[lru.number]["config"] and docs[tide.number]["config"]["tau"] > 0
    for t in (tide, lru):  # and read back so
        (tmp_path / f"{t.number}.json").write_text(json.dumps(docs[t.number]))
    assert load(tmp_path / f"{tide.number}.json").tau == tide.user_attrs["config"]["tau"]
    assert load(tmp_path / f"{lru.number}.json").tau is None
    code = ("import sys\nfrom advisor.cli import app\ntry:\n"
            f"    app(['export', 'b', '{lru.number}', '--to', 'hf', '--storage', {url!r}])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "not on the stored front" in flat(r.stderr) and "HEAVY []" in r.stdout, r.stdout[-500:] + r.stderr[-2000:]

    copy = tmp_path / "copy.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    st = optuna.load_study(study_name="b", storage=f"sqlite:///{copy}")
    running = st.ask()
    failed = st.ask()
    st.tell(failed, state=optuna.trial.TrialState.FAIL)
    for t, state in ((running, "is running"), (failed, "failed")):  # as `export` says each state (c5ae06c)
        r = _cli("export", "b", str(t.number), "--to", "json", "--storage", str(copy))
        assert r.returncode == 2 and r.stdout == "", r.stdout
        assert r.stderr.startswith(f"error: trial {t.number} of study 'b' {state}, not complete") \
            and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _cli("export", "b", "999", "--to", "json", "--storage", str(copy))
    assert r.returncode == 2 and "study 'b' has no trial 999 (its trials are numbered 0-" in r.stderr


def test_a_resume_seeds_its_budgets_points_reading_the_study_once_and_queues_none_twice(shm_tmp_path, monkeypatch):
    """`advisor tune tiny:qwen3_moe --space dllm --budgets 60%` queues 340 points; each rerun enqueued every one
    with Optuna's `skip_if_exists`, which reads the whole study per point: a resume of this tiny model spent
    28 s of its 36 s reading the study (quadratic in its size). The study is read once now; the queue is the
    same (nothing enqueued twice)."""
    import optuna
    from typer.testing import CliRunner

    from advisor.cli import app

    url = f"sqlite:///{shm_tmp_path / 's.db'}"
    args = ["tune", "tiny:qwen3_moe", "--space", "dllm", "--budgets", "60%", "--storage", url, "--study", "q"]
    r = CliRunner().invoke(app, [*args, "--trials", "1"])
    assert r.exit_code == 0, r.output[-2000:]
    queued = len(optuna.load_study(study_name="q", storage=url).get_trials(deepcopy=False))
    reads = []
    get_trials = optuna.study.Study.get_trials
    monkeypatch.setattr(optuna.study.Study, "get_trials", lambda self, *a, **k: reads.append(1) or get_trials(self, *a, **k))
    r = CliRunner().invoke(app, [*args, "--trials", "2"])
    assert r.exit_code == 0, r.output[-2000:]
    assert len(reads) < 100, len(reads)  # it was 340 and more: one per queued point
    assert len(optuna.load_study(study_name="q", storage=url).get_trials(deepcopy=False)) == queued
