"""Budget-aware search: under a tight GPU budget no trial draws a configuration that cannot fit, the cache size
still spreads over what fits, and every study holds its warm-start points (per plan, the most cache that fits)
exactly once - through `advisor tune` on the bundled model and through `run_tune`."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import optuna
import pytest
from cli_helpers import advisor_in_process
from tune_helpers import FIDELITY_SPACE, FakeBackend, small_space

from advisor.tune.budget import BudgetFit
from advisor.tune.objective import CONSTRAINT
from advisor.tune.space import FILL
from advisor.tune.study import TuneOptions, run_tune
from benchmarks.search_efficiency import budget_bytes as bf16_expert_budget  # the benchmark's tight budgets

HERE = Path(__file__).parent

CLI_SPACE = """
name = "budget-test"
[precision]
formats = ["bf16", "int8", "int4"]
groups = 1
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru", "lfu"]
[evaluation]
task = "toy"
limit = 4
trace_prompts = 1
fidelity_prompts = 1
max_new_tokens = 8
"""

DLLM_SPACE = """
name = "budget-dllm"
[precision]
formats = ["bf16", "int8", "int4"]
groups = 2
[precision.hot_cold]
hot_fraction = [0.0, 0.25]
hot_formats = ["bf16"]
[cache]
expert_budget = { low = 1, high = "all" }
allocation = ["uniform", "by_frequency"]
policies = ["lru", "lfu"]
[evaluation]
task = "fake"
limit = 8
"""


@pytest.fixture
def tmp_path(shm_tmp_path):
    """Study databases in shared memory (conftest.shm_tmp_path)."""
    return shm_tmp_path


def _opts(tmp_path: Path, name: str, n: int, sampler: str = "random", seed: int = 0) -> TuneOptions:
    return TuneOptions(study_name=name, storage=f"sqlite:///{tmp_path}/b.db", sampler=sampler, seed=seed, n_trials=n,
                       heartbeat_interval=None)


@pytest.mark.parametrize("placement", ["--resident", "--offload"])
def test_cli_tight_budget_runs_nothing_over_budget_and_starts_from_the_most_cache_that_fits(tmp_path, placement):
    from advisor.models.load import load_model
    from advisor.tune.model_backend import model_shape

    shape = model_shape(load_model("bundled"))
    # offloaded, the activation allowance (~0.42 MiB at 8 new tokens) and staging buffers need more than 10%
    budget = bf16_expert_budget(shape, 0.1 if placement == "--resident" else 0.25)
    (tmp_path / "space.toml").write_text(CLI_SPACE)
    url = f"sqlite:///{tmp_path}/cli.db"
    # through the CLI in this process (a tune that must succeed): as a subprocess it imported torch again
    r = advisor_in_process("tune", "bundled", "--space", "space.toml", "--budget", str(budget), "--trials", "10",
                           "--storage", url, "--study", "tight", placement, cwd=tmp_path, env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sampler tpe (default" in r.stdout and "0 over budget" in r.stdout

    study = optuna.load_study(study_name="tight", storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 10
    for t in done:  # nothing over budget was drawn, so nothing over budget was run or recorded
        assert t.user_attrs["feasible"] is True and t.constraints[CONSTRAINT] <= 0
        assert t.user_attrs["config"]["counted_peak_gpu_bytes"] <= budget
        assert FILL in t.params and "slots" not in t.params
    if placement == "--offload":  # streamed experts add staging buffers to the peak: checked above, not below
        return
    # warm start: each uniform format at the most slots that fit, counted here from the formats' expert bytes
    # (experts resident in host memory: no streaming buffers in the peak)
    warm = {t.params["fmt_g0"]: t for t in study.trials if t.user_attrs.get("seeded") == "warm-start"
            and t.params[FILL] == 1.0}
    assert set(warm) == {"bf16", "int8", "int4"}
    for fmt, t in warm.items():
        per_slot = sum(shape.expert_bytes(layer, fmt) for layer in range(shape.n_layers))
        most = min((budget - shape.resident_bytes) // per_slot, shape.min_experts)
        assert most >= 1
        assert t.user_attrs["config"]["slots_per_layer"] == [most] * shape.n_layers, fmt


def test_tight_budget_study_spreads_the_cache_over_what_fits(tmp_path):
    from advisor.tune.space import parse_space

    backend = FakeBackend(n_layers=4, experts=16)
    space = parse_space(DLLM_SPACE, "<dllm>")
    budget = bf16_expert_budget(backend.shape, 0.1)
    res = run_tune(backend, space, _opts(tmp_path, "d", 40), budget_bytes=budget)
    study = optuna.load_study(study_name="d", storage=res.storage_url)
    assert res.n_complete == 40 and res.n_infeasible == 0
    totals: dict[str, set[int]] = defaultdict(set)
    for t in study.trials:
        assert t.user_attrs["feasible"] is True and t.constraints[CONSTRAINT] <= 0
        cfg = t.user_attrs["config"]
        assert cfg["counted_peak_gpu_bytes"] <= budget
        totals[cfg["precision_description"]].add(sum(cfg["slots_per_layer"]))
    # conditioning, not clamping: a plan is seen at several cache sizes, not piled up at its largest
    assert max(len(s) for s in totals.values()) >= 3
    assert all(p.values["peak_gpu_bytes"] <= budget for p in res.front)


def test_warm_start_points_are_in_the_study_once_across_resumes(tmp_path):
    backend = FakeBackend()
    budget = 40_000 + 2 * 3 * backend.shape.expert_bytes(0, "int8")  # three int8 slots per layer
    res = run_tune(backend, small_space(), _opts(tmp_path, "w", 4, "tpe"), budget_bytes=budget)
    study = optuna.load_study(study_name="w", storage=res.storage_url)
    seeded = [t for t in study.trials if t.user_attrs.get("seeded") == "warm-start"]
    # 3 formats in each of 2 groups x hot set on/off is more than 8 plans, so the uniform ones: each at the
    # most slots that fit (counted here from the formats' expert bytes) and at one slot, once per configuration
    shape = backend.shape
    most = {f: (budget - shape.resident_bytes) // sum(shape.expert_bytes(layer, f) for layer in range(2))
            for f in ("bf16", "int8", "int4")}
    assert most["int8"] == 3 and most["bf16"] == 1 < most["int4"] < 8
    want = {(f, n) for f in most for n in (most[f], 1)}
    got = [(t.user_attrs["config"]["layer_formats"][0], t.user_attrs["config"]["slots_per_layer"][0]) for t in seeded
           if t.state == optuna.trial.TrialState.COMPLETE]
    waiting = [t for t in seeded if t.state == optuna.trial.TrialState.WAITING]
    assert len(seeded) == len(want) == 5 and len(got) == 4 and len(waiting) == 1
    fit = BudgetFit(small_space(), shape, budget)  # each point drawn back (its formats are `fmt_fill_g*` shares)
    drawn = [fit.suggest(optuna.trial.FixedTrial(t.system_attrs["fixed_params"])) for t in seeded]
    assert all(p["fmt_g0"] == p["fmt_g1"] for p in drawn)
    assert set(got) < want and sorted(t.number for t in seeded if t.state.is_finished()) == [0, 1, 2, 3]
    # resuming (and another worker starting) enqueues nothing twice; the waiting ones run next
    run_tune(backend, small_space(), _opts(tmp_path, "w", 4, "tpe"), budget_bytes=budget)
    study = optuna.load_study(study_name="w", storage=res.storage_url)
    again = [t for t in study.trials if t.user_attrs.get("seeded") == "warm-start"]
    assert len(again) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in again)


def test_without_a_budget_the_cache_size_is_searched_over_its_whole_range(tmp_path):
    res = run_tune(FakeBackend(), small_space(), _opts(tmp_path, "n", 10), budget_bytes=None)
    study = optuna.load_study(study_name="n", storage=res.storage_url)
    assert all("slots" in t.params and FILL not in t.params for t in study.trials)
    seeded = [t.params["slots"] for t in study.trials if t.user_attrs.get("seeded") == "warm-start"]
    assert sorted(set(seeded)) == [1, 8]  # the smallest and the largest cache


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_samplers_stay_within_the_budget(tmp_path, sampler):
    backend = FakeBackend()
    budget = 40_000 + 2 * 2 * backend.shape.expert_bytes(0, "int8")
    res = run_tune(backend, small_space(), _opts(tmp_path, sampler, 12, sampler), budget_bytes=budget)
    assert res.n_complete == 12 and res.n_infeasible == 0


def test_warm_start_covers_every_choice_of_a_cache_axis(monkeypatch):
    """The miss-policy axis (copy / cpu / hybrid) slots in as a `WARM_AXES` knob; shown here with the policy."""
    from advisor.tune import budget as b

    monkeypatch.setattr(b, "WARM_AXES", ("policy",))
    backend = FakeBackend()
    fit = b.BudgetFit(small_space(), backend.shape, 40_000 + 2 * 3 * backend.shape.expert_bytes(0, "int8"))
    points = fit.warm_start(limit=100)
    drawn = [fit.suggest(optuna.trial.FixedTrial(p)) for p in points]  # (formats stored as `fmt_fill_g*` shares)
    most = {(d["fmt_g0"], d["policy"]) for p, d in zip(points, drawn, strict=True)
            if p[FILL] == 1.0 and d["fmt_g0"] == d["fmt_g1"]}
    assert most == {(f, pol) for f in ("bf16", "int8", "int4") for pol in ("lru", "lfu")}
    assert [p["policy"] for p in points[:2]] == ["lru", "lfu"]  # per plan, each choice, before the next plan


def test_warm_start_keeps_every_uniform_format_at_the_smallest_cache_in_the_shipped_spaces():
    """The default and dllm spaces search 3 formats x 3 miss policies: the cap on warm-start points cut two
    smallest-cache ones (int4 with cpu and hybrid misses), the low-memory end the warm start exists for."""
    from advisor.tune import budget as b
    from advisor.tune.config import ModelShape
    from advisor.tune.space import load_space

    shape = ModelShape((64,) * 4, (8,) * 4, (128,) * 4, (16,) * 4, "bf16", 1_250_000)
    counts = lambda: {layer: [100 // (e + 1) for e in range(64)] for layer in range(4)}  # noqa: E731
    for name in ("default", "dllm"):
        fit = b.BudgetFit(load_space(name), shape, int(0.6 * shape.full_bytes()), counts)
        everything = fit.warm_start(limit=10**6)
        least = [p for p in everything if p[FILL] == 0.0]
        assert len(least) == 9 and all(p in fit.warm_start() for p in least), name


def test_cpu_misses_buy_more_cache_under_the_same_budget(tmp_path):
    """An offloaded model counts staging buffers for experts that stream past the cache; misses computed on the
    CPU stream nothing, so under one budget the warm start gives `cpu` more slots than `copy` (the live H200
    study measured 742 MB allocated for a `cpu` trial counted at 1007 MB with staging), and every trial still
    fits the counted budget."""
    from advisor.models.load import load_model
    from advisor.tune.model_backend import model_shape

    shape = model_shape(load_model("bundled"))
    budget = bf16_expert_budget(shape, 0.3)  # at 0.25 the 426 KiB activation allowance leaves copied misses no slot
    space = CLI_SPACE.replace('formats = ["bf16", "int8", "int4"]', 'formats = ["int8"]').replace(
        'policies = ["lru", "lfu"]', 'policies = ["lru"]\nprefetch = ["none"]\nmiss = ["copy", "cpu"]')
    (tmp_path / "space.toml").write_text(space)
    url = f"sqlite:///{tmp_path}/m.db"
    r = advisor_in_process("tune", "bundled", "--offload", "--space", "space.toml", "--budget", str(budget),
                           "--trials", "4", "--storage", url, "--study", "miss", cwd=tmp_path, env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stdout + r.stderr
    study = optuna.load_study(study_name="miss", storage=url)
    warm = {t.params["miss"]: t for t in study.trials if t.user_attrs.get("seeded") == "warm-start"
            and t.params.get(FILL) == 1.0}
    assert set(warm) == {"copy", "cpu"}
    copy_slots, cpu_slots = (warm[m].user_attrs["config"]["slots_per_layer"] for m in ("copy", "cpu"))
    assert sum(cpu_slots) > sum(copy_slots), (copy_slots, cpu_slots)
    for t in warm.values():
        assert t.user_attrs["feasible"] is True and t.user_attrs["config"]["counted_peak_gpu_bytes"] <= budget


@pytest.mark.parametrize("args, refusal", [
    # `--trials 20` printed the 20th trial's hypervolume as `RESULT worst_hv40=` (and under the table's 40 column)
    (["--trials", "20"], "--trials must be >= 40"),
    # `--blind-formats` compares the formats drawn in turn within the budget (fmt_fill_g*) with each drawn over its
    # own domain (fmt_g*); with one group (the default --groups 1) both are fmt_g0: the same draws twice
    (["--blind-formats", "nsga2"], "--blind-formats needs --groups 2 or more"),
])
def test_search_efficiency_refuses_a_run_whose_numbers_would_say_something_else(args, refusal):
    """Refused at once, as --seeds below 3 is, before the exhaustive table is built - not a run whose RESULT line
    reports another trial count, or rows that compare a draw with itself."""
    root = Path(__file__).resolve().parents[1]
    try:
        r = subprocess.run([sys.executable, "-m", "benchmarks.search_efficiency", *args], cwd=root,
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{' '.join(args)} started the benchmark instead of being refused") from None
    assert r.returncode == 2 and refusal in r.stderr, r.stdout + r.stderr
    assert "RESULT" not in r.stdout


def test_the_most_cache_that_fits_is_every_expert_where_staging_falls_again():
    """An offloaded model's counted peak grows with the slots and falls again towards the largest cache (prev_step
    stages min(slots, experts without a slot) per layer; copied misses stream the experts without a slot): every
    int4 expert on the GPU fits a budget that half of them does not. The search for the largest fitting cache
    assumed bytes only grow and gave 6 slots of 16, so a budget-aware study never drew a cache past them."""
    from advisor.tune.budget import uniform_slots
    from advisor.tune.config import ModelShape, uniform_peak_bytes
    from advisor.tune.space import load_space

    shape = ModelShape((16,) * 4, (2,) * 4, (64,) * 4, (32,) * 4, "bf16", 1000, 100, staging=True)
    budget = uniform_peak_bytes(shape, "int4", 16, "prev_step")  # every expert int4, on the GPU
    assert uniform_peak_bytes(shape, "int4", 8, "prev_step") > budget
    assert uniform_slots(shape, "int4", budget, prefetch="prev_step") == 16
    fit = BudgetFit(load_space("default"), shape, budget)
    params = {**fit.defaults(), **{k: "int4" for k in fit.knobs if k.startswith("fmt_g")}, "hot_fraction": 0.0,
              "prefetch": "prev_step", "miss": "copy"}
    assert fit.within(fit.size, params, 1.0) == 16
    assert all(fit.fits({**params, fit.size: fit.within(fit.size, params, f)}) for f in (0.0, 0.3, 0.5, 0.7, 1.0))
    # two experts per layer: one slot stages the other expert and streams it, so only both slots fit; every fill
    # draws them (the smallest size was drawn, over budget)
    two = ModelShape((2,) * 4, (2,) * 4, (64,) * 4, (32,) * 4, "bf16", 1000, 100, staging=True)
    tight = BudgetFit(load_space("default"), two, uniform_peak_bytes(two, "int4", 2, "prev_step"))
    assert not tight.fits({**params, tight.size: 1})
    assert {tight.within(tight.size, params, f) for f in (0.0, 0.5, 1.0)} == {2}


def test_a_format_that_fits_only_with_every_expert_on_the_gpu_is_kept():
    """A space that always prefetches the previous step's experts, on an offloaded model of two experts per layer:
    one slot stages and streams the other expert, so only both slots fit int4 under this budget. The format check
    tried the smallest cache alone and refused the budget ("cannot hold ... one expert per MoE layer")."""
    from advisor.tune.config import ModelShape, uniform_peak_bytes

    space = small_space(CLI_SPACE.replace('policies = ["lru", "lfu"]', 'policies = ["lru"]\nprefetch = ["prev_step"]'))
    assert space.prefetch.values() == ["prev_step"]
    two = ModelShape((2,) * 4, (2,) * 4, (64,) * 4, (32,) * 4, "bf16", 1000, 100, staging=True)
    budget = uniform_peak_bytes(two, "int4", 2, "prev_step")
    fit = BudgetFit(space, two, budget)
    assert "int4" in fit.knobs["fmt_g0"].values() and fit.left_out == {"fmt_g0": ["bf16", "int8"]}
    assert fit.within(fit.size, {**fit.defaults(), "fmt_g0": "int4"}, 0.0) == 2


# int4 experts with a bf16 hot set, on a tokenizer-less tiny model
HOT_SPACE = FIDELITY_SPACE.replace('formats = ["fp16", "int8", "int4"]', 'formats = ["int4"]').replace(
    "[cache]", '[precision.hot_cold]\nhot_fraction = { low = 0.0, high = 0.5, step = 0.125 }\nhot_formats = ["bf16"]\n'
    "[cache]")


def test_cli_tight_budget_draws_the_hot_fraction_within_what_fits(tmp_path, monkeypatch):
    """A hot/cold space under a budget that holds two int4 slots per layer but not one bf16 expert: every hot set
    (bf16, the larger format) is over budget at any cache size. The hot fraction was drawn over its whole domain,
    so 4 of its 5 values were recorded over budget without running and counted against --trials (17 of 21 trials of
    a Qwen3-shaped checkpoint's dllm study at 10 MiB); it is drawn as `hot_fill` within what fits, as the cache size
    is as `cache_fill`."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.models.load import load_model
    from advisor.tune.model_backend import model_shape
    from advisor.tune.space import HOT_FILL

    shape = model_shape(load_model("tiny:qwen3_moe"))
    budget = shape.resident_bytes + sum(2 * shape.expert_bytes(layer, "int4") for layer in range(shape.n_layers))
    assert budget < shape.resident_bytes + sum(shape.expert_bytes(layer, "bf16") for layer in range(shape.n_layers))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hot.toml").write_text(HOT_SPACE)
    r = CliRunner(env={"COLUMNS": "250"}).invoke(app, [
        "tune", "tiny:qwen3_moe", "--resident", "--space", "hot.toml", "--budget", f"{budget}B", "--trials", "12",
        "--storage", "t.db", "--study", "hot"])
    assert r.exit_code == 0, r.output
    assert "12 finished trials, 0 over budget" in r.output, r.output
    assert "the hot fraction and the cache size are drawn within what fits" in r.output, r.output
    study = optuna.load_study(study_name="hot", storage="sqlite:///t.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 12
    for t in done:
        assert t.user_attrs["feasible"] is True and t.user_attrs["config"]["counted_peak_gpu_bytes"] <= budget
        assert t.user_attrs["config"]["hot_fraction"] == 0.0
        assert {HOT_FILL, FILL} <= set(t.params) and not {"hot_fraction", "slots"} & set(t.params)


def _begun_before_hot_fill(tmp_path, monkeypatch, trials: int):
    """(backend, space, budget) of study "old", begun with `trials` trials as the code before `hot_fill` drew them
    (`hot_fraction` over its whole range), under a budget of two int4 slots per layer (no bf16 expert fits)."""
    from advisor.tune import study as study_mod
    from advisor.tune.space import parse_space

    backend = FakeBackend()
    space = parse_space(HOT_SPACE.replace('task = "toy"', 'task = "fake"'), "<hot>")
    budget = 40_000 + 2 * 2 * backend.shape.expert_bytes(0, "int4")  # two int4 slots per layer, no bf16 expert
    monkeypatch.setattr(study_mod, "holds_blind_hot_draws", lambda drawn: True)  # the code before hot_fill
    run_tune(backend, space, _opts(tmp_path, "old", trials, "tpe"), budget_bytes=budget)
    monkeypatch.undo()
    return backend, space, budget


def test_a_study_begun_drawing_hot_fraction_resumes_drawing_it_so(tmp_path, monkeypatch):
    """A study begun before the hot fraction was drawn within the budget holds `hot_fraction` in its trials'
    parameters (its first run here draws as that code did). Resumed, it goes on drawing `hot_fraction` - one
    distribution per parameter for the sampler - and its warm-start points, stored under `hot_fraction`, are not
    queued again under `hot_fill`; the run says so. A new study draws `hot_fill` and stays within the budget."""
    from rich.console import Console

    from advisor.commands.tune import run_tune_cli
    from advisor.tune.space import HOT_FILL

    backend, space, budget = _begun_before_hot_fill(tmp_path, monkeypatch, trials=8)
    console = Console(record=True, width=250)
    run_tune_cli(console, backend, space, _opts(tmp_path, "old", 8, "tpe"), budget_bytes=budget,
                 budget_note="--budget", profile=None)
    out = " ".join(console.export_text().split())
    assert "note: study old was begun before the hot fraction was drawn within the budget: it goes on drawing " \
           "hot_fraction over its whole range" in out, out
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{tmp_path}/b.db")
    assert len(study.trials) == 16 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all("hot_fraction" in t.params and HOT_FILL not in t.params for t in study.trials)
    assert len([t for t in study.trials if t.user_attrs.get("seeded") == "warm-start"]) == 2  # int4 at each end

    new = run_tune(backend, space, _opts(tmp_path, "new", 8, "tpe"), budget_bytes=budget)
    study = optuna.load_study(study_name="new", storage=new.storage_url)
    assert new.n_infeasible == 0 and all(HOT_FILL in t.params and "hot_fraction" not in t.params for t in study.trials)


SMALL_HOT_RANGE = small_space().text.replace("hot_fraction = [0.0, 0.25]", "hot_fraction = [0.0, 0.25, 0.5]")


def test_warm_start_points_draw_the_configurations_they_were_made_of():
    """A warm-start point stores its hot fraction as the `hot_fill` share that selects it beside its formats: drawn
    back, every point (plans with a hot set included) is a configuration that fits, and the same point."""
    from advisor.tune.space import HOT_FILL

    backend = FakeBackend()
    budget = 40_000 + 2 * 3 * backend.shape.expert_bytes(0, "int8")  # bf16 hot sets fit beside int4, not bf16
    fit = BudgetFit(small_space(SMALL_HOT_RANGE), backend.shape, budget)
    points = fit.warm_start(max_plans=100, limit=100)
    assert {p[HOT_FILL] for p in points} > {0.0}  # plans with a hot set among them
    for p in points:
        params = fit.suggest(optuna.trial.FixedTrial(p))
        assert fit.fits(params) and fit.point(params, p[FILL]) == p, p



def test_a_study_seeded_drawing_hot_fraction_but_not_yet_run_resumes_drawing_it_so(tmp_path, monkeypatch):
    """A study begun before the hot fraction was drawn within the budget, stopped after its warm start was queued
    and before any trial drew (its trials all waiting, `hot_fraction` only in their fixed parameters): resumed, it
    still draws `hot_fraction`, so its queued points run as they were stored - not with a `hot_fill` drawn at random
    beside them - and its warm start is not queued a second time under `hot_fill`."""
    from advisor.tune.space import HOT_FILL

    backend, space, budget = _begun_before_hot_fill(tmp_path, monkeypatch, trials=0)
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{tmp_path}/b.db")
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.WAITING}
    assert all("hot_fraction" in t.system_attrs["fixed_params"] for t in study.trials)
    run_tune(backend, space, _opts(tmp_path, "old", 4, "tpe"), budget_bytes=budget)
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{tmp_path}/b.db")
    assert len([t for t in study.trials if t.user_attrs.get("seeded") == "warm-start"]) == 2  # int4 at each end
    assert all("hot_fraction" in t.params and HOT_FILL not in t.params for t in study.trials if t.params)


def test_cli_tight_budget_draws_each_layer_groups_format_within_what_fits_beside_those_drawn():
    """Two layer groups whose int8 each fits beside the other's int4 but not beside its int8: the formats were
    each drawn over their domain, so a dllm study of a Qwen3-shaped tiny checkpoint at 96000 bytes recorded 2 of its
    20 trials (int8 in both groups) over budget without running. Each group's format is now drawn in turn, as
    `fmt_fill_g*`, among those that fit beside the groups drawn before it: none is over budget, and int8 is still
    drawn in either group."""
    import tempfile

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.models.load import load_model
    from advisor.tune.model_backend import model_shape

    shape, budget = model_shape(load_model("tiny:qwen3_moe")), 96_000
    assert shape.n_layers == 2  # the dllm space's 4 groups are cut to one per layer
    least = {f: shape.resident_bytes + shape.expert_bytes(0, f) + shape.expert_bytes(1, "int4")
             for f in ("int8", "bf16")}  # one slot per layer, the other group in int4
    assert least["int8"] <= budget < least["bf16"]
    assert shape.resident_bytes + shape.expert_bytes(0, "int8") + shape.expert_bytes(1, "int8") > budget
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        r = CliRunner(env={"COLUMNS": "250"}).invoke(app, [
            "tune", "tiny:qwen3_moe", "--space", "dllm", "--budget", f"{budget}B", "--trials", "20",
            "--storage", f"sqlite:///{d}/t.db", "--study", "pairs"])
        assert r.exit_code == 0, r.output
        study = optuna.load_study(study_name="pairs", storage=f"sqlite:///{d}/t.db")
    out = " ".join(r.output.split())
    assert "20 finished trials, 0 over budget" in out, out
    assert "budget-aware: the layer groups' formats in turn, the hot fraction and the cache size are drawn within " \
           "what fits beside the knobs drawn before them" in out, out
    formats = []
    for t in study.trials:
        cfg = t.user_attrs["config"]
        assert t.user_attrs["feasible"] is True and cfg["counted_peak_gpu_bytes"] <= budget, cfg
        assert {"fmt_fill_g0", "fmt_fill_g1"} <= set(t.params) and not any(k.startswith("fmt_g") for k in t.params)
        formats.append(tuple(cfg["layer_formats"]))
    assert {"int8"} <= {f[0] for f in formats} & {f[1] for f in formats} and ("int8", "int8") not in formats


def _pairs_budget(backend) -> int:
    """The small space's two layer groups (one layer each) at one slot per layer: bf16 fits beside int4, not beside
    int8 or bf16."""
    shape = backend.shape
    return shape.resident_bytes + shape.expert_bytes(0, "bf16") + shape.expert_bytes(1, "int4")


def test_layer_group_formats_are_drawn_within_what_fits_together(tmp_path):
    """Random draws over 2 groups x 3 formats at a budget where 3 of the 9 pairs fit no cache size (bf16 with int8
    or bf16): every trial fits, and bf16 is still drawn in each group (beside the other's int4)."""
    backend = FakeBackend()
    budget = _pairs_budget(backend)
    res = run_tune(backend, small_space(), _opts(tmp_path, "pairs", 30, "random"), budget_bytes=budget)
    study = optuna.load_study(study_name="pairs", storage=res.storage_url)
    assert res.n_complete == 30 and res.n_infeasible == 0
    pairs = [tuple(t.user_attrs["config"]["layer_formats"]) for t in study.trials]
    assert ("bf16", "int4") in pairs and ("int4", "bf16") in pairs
    assert not {("bf16", "int8"), ("int8", "bf16"), ("bf16", "bf16")} & set(pairs)


def test_a_study_begun_drawing_each_format_over_its_domain_resumes_drawing_them_so(tmp_path, monkeypatch):
    """A study begun before the layer groups' formats were drawn in turn within the budget holds `fmt_g*` in its
    trials' parameters. Resumed, it goes on drawing them so (one distribution per parameter for the sampler), its
    warm-start points, stored under `fmt_g*`, are not queued again under `fmt_fill_g*`, and the run says so."""
    from rich.console import Console

    from advisor.commands.tune import run_tune_cli
    from advisor.tune import study as study_mod

    backend = FakeBackend()
    budget = _pairs_budget(backend)
    monkeypatch.setattr(study_mod, "holds_blind_format_draws", lambda drawn: True)  # the code before fmt_fill_g*
    run_tune(backend, small_space(), _opts(tmp_path, "old", 8, "tpe"), budget_bytes=budget)
    monkeypatch.undo()
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{tmp_path}/b.db")
    warm = len([t for t in study.trials if t.user_attrs.get("seeded") == "warm-start"])
    console = Console(record=True, width=250)
    run_tune_cli(console, backend, small_space(), _opts(tmp_path, "old", 8, "tpe"), budget_bytes=budget,
                 budget_note="--budget", profile=None)
    out = " ".join(console.export_text().split())
    assert "note: study old was begun before the layer groups' formats were drawn in turn within the budget: it " \
           "goes on drawing each of fmt_g* over its whole domain" in out, out
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{tmp_path}/b.db")
    assert len(study.trials) == 16 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all({"fmt_g0", "fmt_g1"} <= set(t.params) and "fmt_fill_g0" not in t.params for t in study.trials)
    assert len([t for t in study.trials if t.user_attrs.get("seeded") == "warm-start"]) == warm > 0
