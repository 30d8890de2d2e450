"""`advisor report` on a small real study: a tiny LLaDA-MoE model tuned over fp16/int8/int4 x slots.

The study is run by the tuner itself (real model, real quantization, real trace replay) into a temporary
SQLite database; the report is then built from storage and checked against what storage holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import advisor_entry, one_error_line
from example_study import EXAMPLE_DB

from advisor.errors import UserError
from advisor.units import format_bytes

MODEL = "tiny:llada_moe"
SPACE = """
name = "report-test"
[precision]
formats = ["fp16", "int8", "int4"]
groups = 1
[precision.hot_cold]
hot_fraction = [0.0]
hot_formats = ["fp16"]
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
prefetch = ["none"]
[objectives]
h2d_bytes_per_token = "minimize"
accuracy = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
task = "toy"
limit = 4
trace_prompts = 2
fidelity_prompts = 2
max_new_tokens = 16
"""
# the same space measured on fewer prompts (2 problems, 1 traced and 1 fidelity prompt), for the tests of a study's
# report whose checks (tables, wording, stars) do not depend on how many prompts measured its trials
FEW_PROMPTS = SPACE.replace("limit = 4\ntrace_prompts = 2\nfidelity_prompts = 2\n",
                            "limit = 2\ntrace_prompts = 1\nfidelity_prompts = 1\n")
assert FEW_PROMPTS != SPACE
# one trial per precision at equal slots, plus two cache-only variations
ENQUEUED = [("fp16", 2), ("int8", 4), ("int4", 4), ("int8", 2), ("fp16", 8)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


_FULL_PRECISION_TOKENS: dict[tuple, object] = {}


def agreement_accuracy(backend, plan):
    """A real accuracy for a model without a tokenizer: exact match of each prompt's generated tokens with
    the full-precision model's (greedy decoding), with its Wilson interval."""
    import torch

    from advisor.eval.stats import wilson_interval
    from advisor.models.generate import generate
    from advisor.models.view import attach_runtime, detach_runtime
    from advisor.tune.backend import Measured

    prompts = backend.prompts(backend.settings.limit)
    kw = dict(max_new_tokens=backend.max_new_tokens, seed=backend.settings.seed)
    with torch.no_grad():
        # a prompt's full-precision generation is the same for every trial of every study of one model: made once
        # per test process (keyed by the model's fingerprint, the prompt and the decoding)
        keys = [(backend.model_fingerprint, repr(backend.loaded.gen_defaults), tuple(ids.flatten().tolist()),
                 tuple(sorted(kw.items()))) for ids in prompts]
        for key, ids in zip(keys, prompts, strict=True):
            if key not in _FULL_PRECISION_TOKENS:
                _FULL_PRECISION_TOKENS[key] = generate(backend.loaded, ids, **kw)
        ref = [_FULL_PRECISION_TOKENS[key] for key in keys]
        attach_runtime(backend.loaded.model, backend._runtime(plan), layers=backend.loaded.moe)
        try:
            got = [generate(backend.loaded, ids, **kw) for ids in prompts]
        finally:
            detach_runtime(backend.loaded.model)
    correct = sum(bool(torch.equal(a, b)) for a, b in zip(ref, got, strict=True))
    n = len(prompts)
    lo, hi = wilson_interval(correct, n)
    return Measured({"accuracy": correct / n, "accuracy_n": float(n), "accuracy_correct": float(correct),
                     "accuracy_ci_low": lo, "accuracy_ci_high": hi},
                    {"accuracy": f"measured:exact-match-vs-full-precision(n={n},cpu)"})


def run_small_study(db: Path, name: str = "report-test", space_text: str = SPACE,
                    enqueued: list[tuple] = ENQUEUED) -> str:
    """Tune `enqueued` trials: (format, slots) or (format, slots, miss policy)."""
    import optuna

    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model
    from advisor.tune.model_backend import ModelBackend
    from advisor.tune.space import parse_space
    from advisor.tune.study import TuneOptions, run_tune

    space = parse_space(space_text, "<report-test>")
    loaded = load_model(MODEL)
    task = get_task("toy", seed=space.evaluation.seed)  # as `advisor tune` builds it
    backend = ModelBackend(loaded, task, space.evaluation, accuracy_fn=agreement_accuracy)
    url = f"sqlite:///{db}"
    directions = [space.objectives[m] for m in space.objectives]
    study = optuna.create_study(study_name=name, storage=url, directions=directions)
    for fmt, slots, *miss in enqueued:
        study.enqueue_trial({"fmt_g0": fmt, "slots": slots, **({"miss": miss[0]} if miss else {})})
    run_tune(backend, space, TuneOptions(study_name=name, storage=url, n_trials=len(enqueued), sampler="random"),
             budget_bytes=None)
    return url


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[str, str]:
    import torch

    torch.set_num_threads(1)  # tiny matrices: extra threads only add contention
    db = tmp_path_factory.mktemp("report") / "study.db"
    return run_small_study(db), "report-test"


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    from advisor.report.study import build_report

    url, name = study
    out = tmp_path_factory.mktemp("out") / "report"
    return build_report(name, url, out, block_lengths=(8, 16))


def test_every_figure_is_a_png(report):
    names = {p.name for p in report.figures}
    assert {"transfer_vs_slots.png", "transfer_vs_memory.png", "accuracy.png", "pareto.png",
            "block_reuse.png"} <= names
    for p in report.figures:
        assert p.is_file(), p
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, p
    md = report.markdown.read_text()
    for p in report.figures:
        assert f"figures/{p.name}" in md



def test_recommended_points_are_the_lowest_transfer_picks(report, study):
    """The report's stars are what `advisor recommend --prefer transfer` picks (as its caption says), also at a
    budget every stored point fits, where recommend's default would pick the most accurate point instead."""
    from advisor.results.read import read_fronts

    recs = json.loads(report.data.read_text())["recommended"]
    assert recs
    front = read_fronts(*study)  # what storage holds, not what the report computed
    for r in recs:
        assert any(x.startswith("lowest H2D bytes/token among") for x in r["reasons"]), r["reasons"]
        # the star is really the lowest-transfer stored front point that fits its budget and meets its floor
        (floor,) = (float(m.group(1)) for x in r["reasons"] if (m := re.search(r">= floor (\d\.\d+)", x)))
        ok = [p for p in front if p.values["peak_gpu_bytes"] <= r["budget_bytes"] and p.values["accuracy"] >= floor]
        assert r["trial"] in {p.trial_number for p in ok}, (r["trial"], r["budget_bytes"], floor)
        assert r["values"]["h2d_bytes_per_token"] == min(p.values["h2d_bytes_per_token"] for p in ok), r

def test_the_stars_caption_gives_the_recommend_command_that_picks_them(report):
    """The caption said the stars were "what `advisor recommend` picks at the budgets shown"; that command's
    defaults (1 accuracy point, the most accurate point where everything fits) pick other trials. It now gives
    the flags the report used."""
    md = report.markdown.read_text()
    assert "`advisor recommend --study report-test --budget B --prefer transfer --max-accuracy-drop 0.05`" in md


def test_html_is_self_contained(report):
    page = report.html.read_text()
    srcs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert srcs, "no embedded figures"
    assert all(s.startswith("data:image/png;base64,") for s in srcs), [s[:40] for s in srcs]
    assert len(srcs) == len(report.figures)
    assert "<link" not in page and "<script" not in page and "@import" not in page


def test_headline_numbers_are_the_stored_ones(report, study):
    import optuna

    from advisor.quant.plan import PrecisionPlan

    url, name = study
    stored = {t.number: t for t in optuna.load_study(study_name=name, storage=url).get_trials()}
    payload = json.loads(report.data.read_text())
    rows = payload["headline"]
    assert {r["precision"] for r in rows} == {"fp16", "int8", "int4"}
    base = payload["baseline"]["h2d_bytes_per_token"]
    assert base > 0
    for r in rows:
        assert r["trial"] is not None, r
        t = stored[r["trial"]]
        values = t.user_attrs["values"]
        assert r["h2d_bytes_per_token"] == values["h2d_bytes_per_token"]
        assert r["accuracy"] == values["accuracy"]
        assert r["transfer_ms_per_token"] == values["transfer_ms_per_token"]
        assert r["time_per_token"] == values["time_per_token"] and r["time_source"].startswith("modelled:")
        assert r["reduction_vs_baseline"] == pytest.approx(1 - values["h2d_bytes_per_token"] / base)
        # the replay of the stored configuration on a freshly recorded trace gives the stored bytes
        assert r["replayed_bytes_per_token"] == pytest.approx(values["h2d_bytes_per_token"], rel=1e-12)
        plan = PrecisionPlan.from_json(json.dumps(t.user_attrs["config"]["precision"]))
        assert plan.formats_used() == {r["precision"]}
        assert t.values[0] == values["h2d_bytes_per_token"]  # the objective Optuna stored
    # the rendered table shows the same numbers (one decimal, in the unit the no-cache baseline fills 100 times)
    from advisor.report.document import _h2d
    from advisor.units import h2d_unit

    md = report.markdown.read_text()
    assert "| precision | trial | GPU slots/layer | expert cache | H2D / token |" in md  # no miss axis: no column
    for r in rows:
        assert f"#{r['trial']}" in md
        assert _h2d(r["h2d_bytes_per_token"], h2d_unit(base)) in md
    # equal memory: every headline trial fits the reference memory
    assert all(r["peak_gpu_bytes"] <= payload["reference_memory_bytes"] for r in rows)


def test_equal_memory_replay_gives_each_precision_every_slot_that_fits(report):
    """The equal-memory table takes, per precision, the most slots per layer whose cache fits the FP16 headline
    trial's cache bytes - not the nearest point of the sweep's grid (fp16 got 1 slot where 6 fit)."""
    payload = json.loads(report.data.read_text())
    (fp16,) = [r for r in payload["headline"] if r["precision"] == "fp16"]
    ref = fp16["expert_cache_bytes"]
    equal = payload["equal_memory"]
    assert set(equal) == {"fp16", "int8", "int4"}
    experts = max(p["slots"] for p in payload["sweep"]["points"])  # the sweep's grid ends at every expert
    for fmt, p in equal.items():
        per_slot = sum(payload["sweep"]["expert_bytes"][fmt])  # one slot in every MoE layer
        assert p["cache_bytes"] == p["slots"] * per_slot <= ref, (fmt, p, ref)
        assert p["slots"] == experts or (p["slots"] + 1) * per_slot > ref, (fmt, p, ref)
    assert equal["fp16"]["slots"] == fp16["slots_per_layer"][0]  # the headline trial's own cache
    md = report.markdown.read_text()
    for fmt, p in equal.items():  # a tiny model's caches in the unit they fill: "48.00 KiB", not "0.047 MiB"
        assert f"| {fmt} | {p['slots']} | {format_bytes(p['cache_bytes'], 2)} | {p['policy']} |" in md, md
    assert not re.search(r"\| 0\.\d+ [MG]iB \|", md), re.findall(r".*\| 0\.\d+ [MG]iB \|.*", md)
    blocks = [ln for ln in md.splitlines() if ln.startswith("| ") and "no-cache H2D / token" in ln]
    assert blocks, "the block-reuse table's byte column"


def test_a_bf16_study_gets_its_cache_bytes_and_the_equal_memory_replay(tmp_path):
    """The quick space tunes bf16, not fp16: the report showed its bf16 row's cache as `-` and the equal-memory
    table as "no FP16 trial in the headline" (bf16 experts have fp16's bytes)."""
    from advisor.report.study import build_report

    space = FEW_PROMPTS.replace('"fp16", "int8", "int4"', '"bf16", "int8"').replace('["fp16"]', '["bf16"]')
    url = run_small_study(tmp_path / "bf16.db", "bf16-test", space, [("bf16", 2), ("int8", 4)])
    payload = json.loads(build_report("bf16-test", url, tmp_path / "r", block_lengths=()).data.read_text())
    (bf16,) = [r for r in payload["headline"] if r["precision"] == "bf16"]
    assert bf16["expert_cache_bytes"] == 2 * sum(payload["sweep"]["expert_bytes"]["bf16"])  # traced as it ran
    assert payload["equal_memory"]["bf16"]["slots"] == 2 and payload["equal_memory"]["int8"]["slots"] >= 2
    assert payload["baseline"]["precision"] == "bf16"


def test_one_slot_per_layer_is_said_in_the_singular_and_the_opening_names_every_kind_of_number(tmp_path):
    """The answer said "1 GPU slots per layer"; the opening said every number was measured, while time per token
    is modelled and transfer counted from recorded routing (each labelled in the last section)."""
    from advisor.report.study import build_report

    space = FEW_PROMPTS.replace('"fp16", "int8", "int4"', '"bf16", "int8"').replace('["fp16"]', '["bf16"]')
    url = run_small_study(tmp_path / "one.db", "one-test", space, [("bf16", 1), ("int8", 4)])
    md = build_report("one-test", url, tmp_path / "r", block_lengths=()).markdown.read_text()
    assert "bf16 experts with 1 GPU slot per layer" in md
    assert "measured, counted from recorded routing, or modelled" in md.split("\n## ")[0]


def test_baseline_is_distinct_experts_times_fp16_bytes(report):
    """FP16-no-cache bytes/token recomputed from first principles on a fresh trace of the same workload."""
    from advisor.report.blocks import forwards_from_trace
    from advisor.report.data import load_study_data
    from advisor.report.workbench import Workbench

    payload = json.loads(report.data.read_text())
    data = load_study_data(payload["study"], payload["storage"])
    wb = Workbench.open(data)
    run = wb.trace("fp16")
    eb = payload["sweep"]["expert_bytes"]["fp16"]
    total = sum(len(s) * eb[layer] for f in forwards_from_trace(run.trace) for layer, s in enumerate(f.layers))
    assert payload["baseline"]["h2d_bytes_per_token"] == total / run.tokens
    info = payload["sweep"]["traces"]["fp16"]  # the provenance table's row: every routed pair, every distinct look-up
    assert info["routed_pairs"] == int(run.trace.tokens.sum()) > info["lookups"] == len(run.trace.experts)


def test_sweep_curves_respect_belady_and_memory(report):
    payload = json.loads(report.data.read_text())
    pts = payload["sweep"]["points"]
    by = {(p["precision"], p["policy"], p["slots"]): p for p in pts}
    for (prec, pol, slots), p in by.items():
        if pol != "belady":
            assert by[(prec, "belady", slots)]["hit_rate"] >= p["hit_rate"] - 1e-12
    eb = payload["sweep"]["expert_bytes"]
    assert eb["int8"][0] < eb["fp16"][0] and eb["int4"][0] < eb["int8"][0]
    # no cache beats the baseline, and bytes never grow with more slots under Belady
    bel = sorted((p for p in pts if p["policy"] == "belady" and p["precision"] == "fp16"), key=lambda p: p["slots"])
    assert all(a["bytes_per_token"] >= b["bytes_per_token"] for a, b in zip(bel, bel[1:], strict=False))
    assert bel[0]["bytes_per_token"] <= payload["baseline"]["h2d_bytes_per_token"]


def test_block_reuse_section(report):
    payload = json.loads(report.data.read_text())
    rows = payload["block_reuse"]["rows"]
    assert [r["block_length"] for r in rows] == [8, 16]
    for r in rows:
        assert 0 < r["distinct_mean"] <= 8 and 0.0 <= r["jaccard_within_block"] <= 1.0
    assert "Block diffusion" in report.markdown.read_text()


def test_block_reuse_caption_names_the_panels_the_figure_draws(report, monkeypatch, tmp_path):
    """The caption read 'Left ... Middle: within a block vs across a block boundary ... Right', while the figure
    draws two panels on top (working set; overlap within a block, whole sequence vs the block's tokens - no
    across-boundary curve) and one hit-rate panel per block length below. The figure is redrawn here from the
    report's own rows and its axes read back; the caption must name each as drawn."""
    from advisor.report import plots

    payload = json.loads(report.data.read_text())
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    plots.block_reuse(payload["block_reuse"]["rows"], payload["block_reuse"]["curves"], tmp_path / "b.png")
    (fig,) = drawn
    titles = [ax.get_title() for ax in fig.axes]
    lengths = [r["block_length"] for r in payload["block_reuse"]["rows"]]
    assert titles == ["Working set of one denoising step", "Overlap of consecutive steps in a block",
                      *(f"Cache hit rate, block length {n}" for n in lengths)]
    overlap_series = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert [s.split(": ")[1] for s in overlap_series] == ["whole sequence", "block's tokens"]
    md = " ".join(report.markdown.read_text().split())
    caption = md[md.index("![Top left:"):].split("](")[0]
    for said in ("Top left: distinct experts", "whole sequence (solid)", "block's own tokens (hatched)",
                 "Top right: Jaccard overlap", "within a block", "block's tokens (dashed)",
                 "Bottom: cache hit rate vs slots", "one panel per block length"):
        assert said in caption, (said, caption)
    assert "Middle" not in caption and "vs across" not in caption


def test_transfer_vs_slots_caption_names_the_rows_and_columns_the_figure_draws(report, monkeypatch, tmp_path):
    """The caption said 'H2D bytes (left, counted) and transfer time (right, ...) ...; one curve per precision and
    policy', while the figure draws H2D bytes in its top row, transfer time in its bottom row, one column per
    precision and one curve per policy in each. Redrawn here from the report's sweep, its axes read back."""
    from types import SimpleNamespace

    from advisor.report import plots

    payload = json.loads(report.data.read_text())
    sweep = SimpleNamespace(points=[SimpleNamespace(**p) for p in payload["sweep"]["points"]], baseline_format="fp16",
                            baseline_bytes_per_token=1.0, baseline_ms_per_token=1.0, time_source="modelled:x")
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    plots.transfer_vs_slots(sweep, tmp_path / "t.png")
    (fig,) = drawn
    precisions = list(dict.fromkeys(p.precision for p in sweep.points))
    n = len(precisions)
    assert n > 1 and len(fig.axes) == 2 * n
    assert [ax.get_title() for ax in fig.axes[:n]] == [f"{p} experts" for p in precisions]  # columns: precisions
    assert fig.axes[0].get_ylabel().startswith("H2D") and fig.axes[n].get_ylabel().startswith("transfer ms")
    md = " ".join(report.markdown.read_text().split())
    caption = md[md.index("![H2D bytes"):].split("](")[0]
    assert "H2D bytes (top row, counted) and transfer time (bottom row, " in caption, caption
    assert "one column per precision, one curve per cache policy" in caption, caption
    assert "(left" not in caption and "(right" not in caption


def test_block_reuse_jaccards_say_their_pairs_and_the_saturated_ones(report):
    """A tiny model's "Jaccard across blocks" read 1 (0.955 within): not a miscount - its one block boundary per
    prompt gives one pair per MoE layer (2 pairs), and a pair of forwards that both use every expert of a layer
    overlaps 1 whatever the routing. Each Jaccard cell now says how many pairs it averages and how many of them
    held every expert on both sides."""
    payload = json.loads(report.data.read_text())
    md = report.markdown.read_text()
    for r in payload["block_reuse"]["rows"]:
        (line,) = [ln for ln in md.splitlines() if ln.startswith(f"| {r['model']} | {r['block_length']} | ")]
        cells = [c.strip() for c in line.strip("|").split("|")]
        for cell, value, pairs, full in ((cells[5], r["jaccard_within_block"], r["pairs_within"], r["saturated_within"]),
                                         (cells[6], r["jaccard_across_blocks"], r["pairs_across"], r["saturated_across"])):
            assert pairs > 0 and 0 <= full <= pairs, r
            assert cell == f"{value:.4g} ({pairs} pair{'s' if pairs != 1 else ''}" + (
                f"; {full} with every expert on both sides)" if full else ")"), (cell, r)
    assert "'every expert' counts the pairs whose two steps both used all of the layer's experts" in md


def test_unknown_and_empty_studies_are_user_errors(study, tmp_path):
    import optuna

    from advisor.report.study import build_report

    url, _ = study
    with pytest.raises(UserError, match="no study named"):
        build_report("nope", url, tmp_path / "a")
    optuna.create_study(study_name="empty", storage=url, directions=["minimize"])
    out = tmp_path / "b"
    with pytest.raises(UserError, match="no finished trial"):
        build_report("empty", url, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temp directory left behind either
    with pytest.raises(UserError, match="no advisor database"):
        build_report("x", f"sqlite:///{tmp_path}/missing.db", tmp_path / "c")


def test_a_wrong_study_name_fails_before_torch_is_imported():
    """The read side of `advisor report` (storage, study, trials) is checked before the model's libraries load."""
    db = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    code = ("import sys\nfrom advisor.errors import UserError\nfrom advisor.report.study import build_report\n"
            f"try:\n    build_report('nope', {str(db)!r}, 'unused')\nexcept UserError as e:\n    print('ERR', e)\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "ERR no study named 'nope'" in r.stdout and "TORCH False" in r.stdout, r.stdout + r.stderr[-2000:]


@pytest.mark.parametrize("args", [
    ["report", "bundled-example", "--storage", "studies/example/advisor.db", "-o", "unused", "--model", "/nonexistent"],
    ["tune", "./not-here", "--trials", "1"], ["eval", "/nonexistent"], ["trace", "/nonexistent", "-o", "t.json"],
    ["quant-report", "/nonexistent"], ["inspect", "/nonexistent"], ["inspect", "tiny:nope"],
    ["profile", "--cpu", "--model", "/nonexistent", "--profiles-dir", "p"]], ids=lambda a: " ".join(a[:2]))
def test_a_missing_model_directory_is_refused_before_torch_is_imported(args):
    """`advisor report --model /nonexistent` (and every command that loads a model) said that the model is
    neither a directory nor a hub id only once torch and transformers had imported (4-9 s on this host). It is
    one line now, and torch is never imported."""
    from cli_helpers import one_error_line

    root = Path(__file__).resolve().parents[1]
    code = ("import atexit, sys\natexit.register(lambda: print('TORCH', 'torch' in sys.modules))\n"
            "from advisor.cli import run\nrun()\n")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=root)
    line = one_error_line(r)
    assert line.startswith(("error: no directory '/nonexistent'", "error: no directory './not-here'",
                             "error: unknown tiny family 'nope'")), line
    assert "TORCH False" in r.stdout, r.stdout + r.stderr
    assert not (root / "p").exists() and not (root / "t.json").exists()


@pytest.mark.parametrize(("args", "env"), [
    (["report", "bundled-example", "-o", "{tmp}/no/rep"], {}),
    (["pareto", "bundled-example", "-o", "{tmp}/no/plots"], {}),
    (["profile", "--cpu", "--repeats", "1", "--profiles-dir", "{tmp}/no/profiles"], {}),
    (["profile", "--cpu", "--repeats", "1"], {"ADVISOR_PROFILES_DIR": "{tmp}/no/profiles"})],
    ids=["report -o", "pareto -o", "--profiles-dir", "ADVISOR_PROFILES_DIR"])
def test_an_output_folder_inside_a_missing_folder_is_refused_as_an_output_file_is(args, env, tmp_path):
    """`export -o no/x.json` (every output file, and `tune --storage`'s SQLite file) is refused when its folder is
    missing, while `report -o no/rep`, `pareto -o no/plots` and `profile --profiles-dir no/profiles` made `no/`
    without a word. The folder each names is still made (it is the output, or the profiles' store), the folders
    above it are not: one line, exit 2, nothing written; a folder in an existing one is made as before."""
    from cli_helpers import advisor, advisor_in_process, one_error_line

    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    storage = ["--storage", db] if args[0] != "profile" else []
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args] + storage
    environ = {**os.environ, **{k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}}
    r = advisor(*argv, cwd=tmp_path, env=environ, timeout=120)
    one_error_line(r, f"directory {tmp_path / 'no'} does not exist", f"mkdir -p {tmp_path / 'no'}")
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    if args[0] == "report":
        return  # the report of a folder in an existing one: `report` fixture, and the tests above
    # (made as before: a run that must succeed, through the CLI in this process - as a subprocess `profile` paid
    # ~3 s of CPU importing torch again)
    r = advisor_in_process(*[a.replace("/no/", "/") for a in argv], cwd=tmp_path,
                           env={k: v.replace("{tmp}", str(tmp_path)).replace("/no/", "/") for k, v in env.items()})
    assert r.returncode == 0, r.stdout + r.stderr
    assert any((tmp_path / name).is_dir() for name in ("plots", "profiles")), list(tmp_path.iterdir())


def test_report_and_pareto_name_a_missing_study_alike():
    """`advisor report` named the storage by its normalized URL (`in sqlite:///studies/...`) where `pareto` gave
    the path as typed; both now say it as the user wrote it."""
    db = "studies/example/advisor.db"
    root = Path(__file__).resolve().parents[1]
    want = f"error: no study named 'nope' in {db} (studies there: bundled-example); see `advisor studies`"
    for args in (["report", "nope", "--storage", db, "-o", "unused"], ["pareto", "nope", "--storage", db]):
        r = subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, timeout=120, cwd=root)
        assert r.returncode == 2 and r.stderr.strip() == want, r.stderr


def test_cli_empty_study_is_one_line(study, tmp_path):
    url, _ = study
    r = subprocess.run([sys.executable, "-c", "from advisor.cli import run; run()", "report", "nope", "--storage", url, "-o",
                        str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no study named"), r.stderr


def test_cli_answers_at_several_budgets(study, tmp_path):
    """`--memory 30%,100%`: one answer table per budget, each row the stored trial with the least time per token
    that fits (ties: fewest H2D bytes); a share outside (0%, 100%] is one line, exit 2."""
    from advisor.report.data import load_study_data
    from advisor.report.select import rank

    url, name = study
    base = ["report", name, "--storage", url, "--block-lengths", ""]
    bad = advisor_entry(*base, "-o", str(tmp_path / "bad"), "--memory", "150%", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --memory '150%': a share must be between 0% and 100%, e.g. 25%"], bad.stderr
    r = advisor_entry(*base, "-o", str(tmp_path / "r"), "--memory", "30%,100%", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "at 30% (" in r.stdout and "at 100% (" in r.stdout  # each budget with its size
    payload = json.loads((tmp_path / "r" / "report.json").read_text())
    answers = payload["answer_by_budget"]
    assert [a["budget"] for a in answers] == ["30%", "100%"] and answers[0]["memory_bytes"] < answers[1]["memory_bytes"]
    stored = {t.number: t for t in load_study_data(name, url).trials}
    for a in answers:
        for row in a["rows"]:
            fits = [t for t in stored.values() if t.values["peak_gpu_bytes"] <= a["memory_bytes"]
                    and set(t.config["layer_formats"]) == {row["precision"]}]
            if row["trial"] is None:
                assert not fits
                continue
            assert row["trial"] == min(fits, key=rank).number
            assert row["time_per_token"] == min(t.values["time_per_token"] for t in fits)
            assert stored[row["trial"]].config["policy"] == row["policy"] == "lru"
        assert a["baselines"] == []  # the study was not tuned with --budgets
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| GPU budget | strategy | precision |" in md


def test_a_study_searching_the_miss_policy_shows_it_in_the_headline(tmp_path):
    """The headline table (no --memory) names each point's miss policy when the space searches `cache.miss`,
    as the several-budgets table does; the FP16-no-cache baseline copies every expert."""
    space = FEW_PROMPTS.replace('prefetch = ["none"]', 'prefetch = ["none"]\nmiss = ["copy", "cpu", "hybrid"]')
    db = tmp_path / "miss.db"
    url = run_small_study(db, "miss", space, [("fp16", 4, "copy"), ("int8", 4, "cpu"), ("int4", 4, "hybrid")])
    r = advisor_entry("report", "miss", "--storage", url, "-o", str(tmp_path / "r"), "--block-lengths", "",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (tmp_path / "r" / "report.md").read_text()
    header = "| precision | trial | GPU slots/layer | expert cache | miss | H2D / token |"
    assert header in md, md
    table = md[md.index(header):].split("\n\n")[0].splitlines()[2:]
    misses = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[4] for row in table}
    assert misses == {"fp16, no cache (baseline)": "copy", "fp16": "copy", "int8": "cpu", "int4": "hybrid"}, table


def test_with_bf16_and_fp16_trials_the_accuracy_reference_is_the_baseline_formats_and_named_as_used(tmp_path):
    """With bf16 and fp16 trials both storing accuracy the reference was the lowest-numbered 16-bit trial,
    whichever format - named by the first such trial, not the one used - while every line said its change was
    "vs FP16" and the FP16-no-cache row showed it: a bf16 trial's accuracy. It is now the trial of the format the
    report names its baseline (fp16 here: a float32 model whose study ran both), named with its number, and each
    row's change is against it. The bf16 trial's stored accuracy is set apart so that the two differ."""
    import sqlite3

    space = SPACE.replace('"fp16", "int8", "int4"', '"bf16", "fp16", "int8"')
    db = tmp_path / "both.db"
    url = run_small_study(db, "both", space, [("bf16", 2), ("fp16", 2)])
    with sqlite3.connect(db) as con:
        (raw,) = con.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'values' AND trial_id = "
                             "(SELECT MIN(trial_id) FROM trials)").fetchone()
        values = json.loads(raw)
        assert values["accuracy"] == 1.0, values  # every plan agrees with full precision on the toy prompts
        con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'values' AND trial_id = "
                    "(SELECT MIN(trial_id) FROM trials)", (json.dumps({**values, "accuracy": 0.5}),))
    con.close()
    r = advisor_entry("report", "both", "--storage", url, "-o", str(tmp_path / "r"), "--block-lengths", "",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    md = " ".join((tmp_path / "r" / "report.md").read_text().split())
    assert "Accuracy reference: stored accuracy of the fp16 plan (trial #1)." in md, md
    baseline = md[md.index("| fp16, no cache (baseline) |"):].split(" | ")
    assert baseline[8:10] == ["1.000 [0.510, 1.000]", "0 pt"], baseline[:10]
    payload = json.loads((tmp_path / "r" / "report.json").read_text())
    changes = {r["trial"]: r["accuracy_change"] for r in payload["headline"] if r["trial"] is not None}
    assert changes == {1: 0.0}, payload["headline"]  # the 16-bit row: fp16's trial, the more accurate at equal bytes
    # its recommended points' floor is measured from the same trial (`advisor.results.reference`), though the
    # stored front has both 16-bit trials at accuracy 1.0: it was bf16's, the first of the most accurate
    floors = {ln for rec in payload["recommended"] for ln in rec["reasons"] if "floor" in ln and "of trial #" in ln}
    assert floors and all("trial #1: uniform fp16 plan (the study's full precision)" in ln for ln in floors), floors


def test_a_time_studys_stars_are_its_fastest_picks_as_its_axis_and_recommend_rank(tmp_path):
    """In a study tuned for time per token the Pareto figure's x axis is time per token and `advisor recommend`
    ranks by it, but the stars were still the lowest-transfer picks under a "transfer vs accuracy" heading: a
    point with every miss on the CPU (few bytes, slow) was starred at the slow end of the time axis. They are
    now `--prefer latency`'s picks, the heading and caption say so and their table shows the time."""
    from advisor.results.read import read_fronts

    space = FEW_PROMPTS.replace('prefetch = ["none"]', 'prefetch = ["none"]\nmiss = ["copy", "cpu"]').replace(
        'h2d_bytes_per_token = "minimize"', 'time_per_token = "minimize"')
    url = run_small_study(tmp_path / "time.db", "timed", space,
                          [("fp16", 8, "copy"), ("fp16", 1, "cpu"), ("int8", 1, "cpu"), ("int8", 8, "copy")])
    r = advisor_entry("report", "timed", "--storage", url, "-o", str(tmp_path / "r"), "--block-lengths", "",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Pareto front: time vs accuracy vs memory" in md, md
    assert "`advisor recommend --study timed --budget B --prefer latency --max-accuracy-drop 0.05`" in md
    assert "| budget | trial | time ms / token | H2D / token | accuracy | peak GPU memory |" in md
    recs = json.loads((tmp_path / "r" / "report.json").read_text())["recommended"]
    assert recs
    front = read_fronts(url, "timed")
    for rec in recs:
        (floor,) = (float(m.group(1)) for x in rec["reasons"] if (m := re.search(r">= floor (\d\.\d+)", x)))
        ok = [p for p in front if p.values["peak_gpu_bytes"] <= rec["budget_bytes"] and p.values["accuracy"] >= floor]
        assert rec["values"]["time_per_token"] == min(p.values["time_per_token"] for p in ok), rec


def test_the_pareto_figure_labels_time_per_token_by_its_stored_source(tmp_path, monkeypatch):
    """The figure's x axis said "time per generated token, ms (modelled; ...)" in every study, also in a --mode
    live one, whose time per token is measured:wall-clock. It now names the stored sources' kind."""
    from cli_helpers import advisor_in_process

    from advisor.report import plots

    (tmp_path / "live.toml").write_text(
        'name = "live"\n[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = [2, 4]\n'
        'miss = ["cpu"]\n[objectives]\ntime_per_token = "minimize"\nfidelity_top1 = "maximize"\n'
        'peak_gpu_bytes = "minimize"\n[evaluation]\ntrace_prompts = 2\nfidelity_prompts = 2\nmax_new_tokens = 8\n')
    r = advisor_in_process("tune", "tiny:llada_moe", "--space", "live.toml", "--mode", "live", "--trials", "2",
                           "--storage", "t.db", "--study", "live", cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    labels: dict[str, str] = {}
    save = plots._save

    def keep_label(fig, path):
        labels[path.name] = fig.axes[0].get_xlabel()
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep_label)
    r = advisor_in_process("report", "live", "--storage", "t.db", "-o", "r", "--block-lengths", "", cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    assert labels["pareto.png"] == "time per generated token, ms (measured; lower is better)", labels


def test_the_cpu_times_line_names_whose_times_priced_the_trials():
    """A study stored before its CPU expert times were, tuned with a hardware profile that had them, was priced
    with the profile's: the report said it took them itself (while its headline check said they matched)."""
    from advisor.report.document import _cpu_label, _hybrid_check

    src = "measured-cpu:2026-01-02"
    assert "the study's stored measurement of 2026-01-02, the one its trials were priced with" in _cpu_label(
        "study", src)
    profile = _cpu_label("profile", src)
    assert "from the study's hardware profile, the one its trials were priced with" in profile
    assert "taken by this report" not in profile
    assert "taken by this report (the study predates storing the ones" in _cpu_label(None, src)
    assert "(the study's hardware profile's), so they replay to their stored bytes" in _hybrid_check("profile", True)
    assert "(stored with the study), so they replay to their stored bytes" in _hybrid_check("study", True)
    assert "taken now" in _hybrid_check(None, True) and _hybrid_check("study", False) == ""


def test_a_study_tuned_on_a_data_file_is_reported_on_the_same_prompts(tmp_path):
    """`advisor tune --task gsm8k --data FILE` stored no data file, so `advisor report` read GSM8K from the hub:
    offline it stopped with "pass --data" (an option report lacked), online it replayed other prompts than the
    study's. The study now stores its file and the report replays its trials to their stored bytes.

    Its settings ask for more than the file's 2 problems (the task caps them to those): the report's workload line
    printed them as given ("100000000000 examples", "10000 of the task's prompts", "fidelity on 10000 prompts");
    it now states what the trials ran on."""
    from advisor.eval import toy

    (tmp_path / "g.jsonl").write_text("".join(json.dumps({"question": e.question, "answer": e.answer}) + "\n"
                                              for e in toy.test_set()[:2]))
    (tmp_path / "g.toml").write_text('name = "g"\n[precision]\nformats = ["fp16", "int8"]\n[cache]\n'
                                     'slots_per_layer = { low = 1, high = "all" }\n[objectives]\n'
                                     'h2d_bytes_per_token = "minimize"\naccuracy = "maximize"\n'
                                     'fidelity_top1 = "maximize"\n[evaluation]\nlimit = 100000000000\n'
                                     'trace_prompts = 10000\nfidelity_prompts = 10000\nmax_new_tokens = 8\n')
    tune = advisor_entry("tune", "bundled", "--task", "gsm8k", "--data", "g.jsonl", "--space", "g.toml",
                         "--trials", "1", "--storage", "g.db", cwd=tmp_path)  # one trial's replay is the check
    assert tune.returncode == 0, tune.stdout + tune.stderr
    (tmp_path / "elsewhere").mkdir()  # the stored path is absolute: the report runs from anywhere
    rep = advisor_entry("report", "bundled-gsm8k-g", "--storage", "../g.db", "--block-lengths", "", "-o", "rep",
                        cwd=tmp_path / "elsewhere")
    assert rep.returncode == 0, rep.stderr
    rows = [r for r in json.loads((tmp_path / "elsewhere/rep/report.json").read_text())["headline"] if r["trial"] is not None]
    assert rows and all(r["replayed_bytes_per_token"] == pytest.approx(r["h2d_bytes_per_token"], rel=1e-12) for r in rows)
    md = " ".join((tmp_path / "elsewhere/rep/report.md").read_text().split())
    assert "Workload (accuracy): task gsm8k, 2 examples, seed 0." in md, md
    assert "2 of the task's prompts, chosen by seed 0 (all the task has that fit; the space asks for 10000)" in md, md
    assert "fidelity on 2 prompts." in md and "100000000000" not in md, md
    (tmp_path / "g.jsonl").rename(tmp_path / "moved.jsonl")  # the stored file has moved: the line says what to do
    moved = advisor_entry("report", "bundled-gsm8k-g", "--storage", "g.db", "--block-lengths", "", "-o", "rep2",
                          cwd=tmp_path)
    lines = [line for line in moved.stderr.splitlines() if line.strip()]
    assert moved.returncode == 2 and len(lines) == 1 and "advisor report --data FILE" in lines[0], moved.stderr


def _fidelity_checkpoint(tmp_path, formats: str) -> None:
    """A tiny LLaDA-MoE checkpoint in `tmp_path/ckpt` and a fidelity space `f.toml` over `formats` (TOML list
    items) beside it: one prompt, 8 new tokens."""
    from advisor.models.tiny import build_tiny

    build_tiny("llada_moe").save_pretrained(str(tmp_path / "ckpt"))
    (tmp_path / "f.toml").write_text(f'name = "f"\n[precision]\nformats = [{formats}]\n[cache]\n'
                                     'slots_per_layer = { low = 1, high = "all" }\n[objectives]\n'
                                     'h2d_bytes_per_token = "minimize"\nfidelity_top1 = "maximize"\n'
                                     'peak_gpu_bytes = "minimize"\n[evaluation]\ntrace_prompts = 1\n'
                                     'fidelity_prompts = 1\nmax_new_tokens = 8\n')


def test_a_study_of_a_relative_checkpoint_directory_is_reported_from_anywhere(tmp_path):
    """`advisor tune ./ckpt` stores the model as typed (`ckpt`) and its absolute path in the model's meta; the
    report loaded the name, so from another directory it said "model ckpt is not available offline" (or loaded
    another `ckpt` there). It loads the recorded path now, as exports do."""
    _fidelity_checkpoint(tmp_path, '"fp16", "int8"')
    tune = advisor_entry("tune", "./ckpt", "--space", "f.toml", "--trials", "2", "--storage", "f.db", "--study", "rel",
                         cwd=tmp_path)
    assert tune.returncode == 0, tune.stdout + tune.stderr
    (tmp_path / "elsewhere").mkdir()
    rep = advisor_entry("report", "rel", "--storage", "../f.db", "--block-lengths", "", "-o", "rep",
                        cwd=tmp_path / "elsewhere")
    assert rep.returncode == 0, rep.stderr
    rows = [r for r in json.loads((tmp_path / "elsewhere/rep/report.json").read_text())["headline"] if r["trial"] is not None]
    assert rows and all(r["replayed_bytes_per_token"] == pytest.approx(r["h2d_bytes_per_token"], rel=1e-12) for r in rows)


def test_the_block_diffusion_table_names_the_model_as_the_rest_of_the_report(tmp_path):
    """The block-diffusion table named a local checkpoint by the absolute path it loaded from, where the title,
    the text and report.json name it as the study ran it (`./ckpt` typed: `ckpt`): it names it the same now."""
    _fidelity_checkpoint(tmp_path, '"fp16"')
    tune = advisor_entry("tune", "./ckpt", "--space", "f.toml", "--trials", "1", "--storage", "f.db", "--study", "bl",
                         cwd=tmp_path)
    assert tune.returncode == 0, tune.stdout + tune.stderr
    rep = advisor_entry("report", "bl", "--storage", "f.db", "--block-lengths", "8", "-o", "rep", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    payload = json.loads((tmp_path / "rep/report.json").read_text())
    md = (tmp_path / "rep/report.md").read_text()
    assert [r["model"] for r in payload["block_reuse"]["rows"]] == [payload["model"]], payload["block_reuse"]
    assert f"| {payload['model']} | 8 | " in md and str(tmp_path) not in md, md

def test_a_bad_accuracy_drop_or_data_file_is_refused_before_the_model_loads(study, tmp_path):
    """`--max-accuracy-drop 2` was refused by recommend at the end, after the model loaded and every trace was
    recorded (minutes on a real model); a missing `--data` file once the model had loaded. Both are one line
    now, before the first progress line."""
    url, name = study
    base = [sys.executable, "-m", "advisor", "report", name, "--storage", url, "-o", str(tmp_path / "r")]
    for extra, said in ((["--max-accuracy-drop", "2"], "error: --max-accuracy-drop 2 must be between 0 and 1"),
                        (["--data", str(tmp_path / "missing.jsonl")], "error: --data")):
        r = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=120)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(said), r.stderr
        assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("dtype", "formats"), [("float32", '"bf16", "int8"'), ("bfloat16", '"int8"')])
def test_a_bf16_models_baseline_is_named_bf16_everywhere(tmp_path, monkeypatch, dtype, formats):
    """A bf16 model's no-cache baseline was called "fp16" (its headline row, the cuts, the definitions, the plot's
    line, report.json and the command's summary), a format the study never ran at; the name follows the format
    the study's 16-bit trials ran at (an fp32 model tuned at bf16, as the shipped spaces do, was still "fp16"),
    else the dtype the study recorded for its model, and the report traces its 16-bit plan at that format."""
    import torch
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.models.tiny import build_tiny

    monkeypatch.chdir(tmp_path)
    build_tiny("llada_moe", dtype=getattr(torch, dtype)).save_pretrained(str(tmp_path / "ckpt"))
    (tmp_path / "f.toml").write_text(f'name = "f"\n[precision]\nformats = [{formats}]\n[cache]\n'
                                     'slots_per_layer = { low = 1, high = "all" }\n[objectives]\n'
                                     'h2d_bytes_per_token = "minimize"\nfidelity_top1 = "maximize"\n'
                                     'peak_gpu_bytes = "minimize"\n[evaluation]\ntrace_prompts = 1\n'
                                     'fidelity_prompts = 1\nmax_new_tokens = 8\n')
    tune = CliRunner().invoke(app, ["tune", "./ckpt", "--space", "f.toml", "--trials", "1", "--storage", "f.db",
                                    "--study", "b"])
    assert tune.exit_code == 0, tune.output
    rep = CliRunner().invoke(app, ["report", "b", "--storage", "f.db", "--block-lengths", "", "-o", "rep"])
    assert rep.exit_code == 0, rep.output
    assert "against bf16 without cache" in rep.stdout and "fp16" not in rep.stdout, rep.stdout
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| bf16, no cache (baseline) |" in md and "*BF16-no-cache baseline*" in md, md
    assert "fp16" not in md.lower(), [ln for ln in md.splitlines() if "fp16" in ln.lower()]
    payload = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert payload["baseline"]["precision"] == "bf16" and set(payload["sweep"]["expert_bytes"]) == {"bf16", "int8",
                                                                                                       "int4"}


def _without_fingerprint(url: str, name: str, to: Path) -> str:
    """A copy of the study database at `url` with every record of its model's fingerprint taken out, as a study
    not written by `advisor tune` (or by a tool of its own) stores none; its model description's layers lack top_k,
    as an older description may (a field not stored is not compared)."""
    import shutil
    import sqlite3

    shutil.copy(url.removeprefix("sqlite:///"), to)
    con = sqlite3.connect(to)

    def strip(meta: dict) -> dict:
        meta.pop("fingerprint", None)
        for layer in meta.get("layers", []):
            layer.pop("top_k", None)
        return meta

    con.execute("DELETE FROM study_user_attributes WHERE key = 'model_fingerprint'")
    for table in ("study_user_attributes", "trial_user_attributes"):
        for rowid, key, value in con.execute(f"SELECT rowid, key, value_json FROM {table}").fetchall():
            doc = json.loads(value)
            if key == "model_meta":
                doc = strip(doc)
            elif key == "config" and isinstance(doc, dict) and "model_meta" in doc:
                doc["model_meta"] = strip(doc["model_meta"])
            con.execute(f"UPDATE {table} SET value_json = ? WHERE rowid = ?", (json.dumps(doc), rowid))
    for rowid, config in con.execute("SELECT rowid, config FROM advisor_front").fetchall():
        doc = json.loads(config)
        strip(doc.get("model_meta", {}))
        con.execute("UPDATE advisor_front SET config = ?, model_fingerprint = '' WHERE rowid = ?", (json.dumps(doc), rowid))
    con.execute("UPDATE advisor_study SET model_fingerprint = ''")
    con.commit()
    con.close()
    from advisor.report.data import load_study_data
    from advisor.report.workbench import stored_fingerprint

    data = load_study_data(name, f"sqlite:///{to}")
    assert stored_fingerprint(data) is None and data.setting("model_meta")["layers"], data.study_attrs  # none left
    return f"sqlite:///{to}"


def test_a_study_that_stored_no_fingerprint_is_reported_saying_what_was_checked_instead(study, tmp_path):
    """Where a study stored no model fingerprint, the report of any --model ran without a check and said
    "fingerprint ... (checked equal to the stored one)". It checks what the study did store - the model's family and
    MoE sizes, and its trials' counted peak GPU bytes counted again on the model loaded (resident weights and expert
    bytes, which every replay and `--memory` share is counted from) - and says, in one warning line and in the
    report, that the fingerprint could not be checked and what matched."""
    url, name = study
    bare = _without_fingerprint(url, name, tmp_path / "bare.db")
    r = advisor_entry("report", name, "--storage", bare, "--block-lengths", "", "--memory", "50%", "-o", "r",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert (f"warning: study '{name}' stores no model fingerprint, so model {MODEL} could not be checked to be the "
            "model it ran; its family and MoE sizes and the counted peak GPU bytes of 5 of 5 stored trials match it, "
            "its weights were not compared") in said, said
    md = (tmp_path / "r" / "report.md").read_text()
    assert "checked equal to the stored one" not in md and "its weights were not compared" in md, md
    assert "**not checked**: the study stores none" in md.split("\n## ")[0], md
    payload = json.loads((tmp_path / "r" / "report.json").read_text())
    assert payload["model_fingerprint_checked"] is False and "could not be checked" in payload["model_check"]
    with_fp = advisor_entry("report", name, "--storage", url, "--block-lengths", "", "--memory", "50%", "-o", "r2",
                            cwd=tmp_path)
    assert with_fp.returncode == 0 and "warning" not in with_fp.stderr, with_fp.stderr
    same = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert same["model_fingerprint_checked"] is True and same["reference_memory_bytes"] == payload["reference_memory_bytes"]


def test_another_model_for_a_study_that_stored_no_fingerprint_is_refused(study, tmp_path):
    """`report --model` of another model, for a study with no stored fingerprint, wrote that model's report under
    the study's name. A model of another family is refused by the stored model description; one of the same family
    and MoE sizes whose resident weights differ (a larger vocabulary), by the stored trials' counted peaks - which
    the `--memory` shares are counted from too. One line each, before any trace is recorded, nothing written."""
    from advisor.models.tiny import _model_class, randomize_, tiny_config

    url, name = study
    bare = _without_fingerprint(url, name, tmp_path / "bare.db")
    base = ["report", name, "--storage", bare, "--block-lengths", "", "-o", "r"]
    r = advisor_entry(*base, "--model", "tiny:qwen3_moe", cwd=tmp_path)
    one_error_line(r, f"--model tiny:qwen3_moe is not the model study '{name}' ran: it stores no fingerprint to "
                      "check it by, and it has other model family ('qwen3_moe' here, 'llada_moe' stored)")
    config = tiny_config("llada_moe")
    config.vocab_size = 300
    randomize_(_model_class("llada_moe")(config)).save_pretrained(tmp_path / "wide")
    r = advisor_entry(*base, "--model", "wide", cwd=tmp_path)
    one_error_line(r, f"--model wide is not the model study '{name}' ran", "no stored trial's counted peak GPU memory "
                      "is counted on it", "its resident weights or expert bytes differ")
    assert not (tmp_path / "r").exists()


def test_a_fidelity_studys_headline_shows_top1_agreement_not_dashes(tmp_path, monkeypatch):
    """A study of a model without a tokenizer stores fidelity_top1, no task accuracy: the report's headline (and
    the budget table) showed '-' in both accuracy columns of every row, and its answer lines "accuracy change not
    measured", while the command's own summary said each trial's top-1 agreement. The columns are now top-1
    agreement and its change against the 16-bit plan's, labelled, with the stored values."""
    from typer.testing import CliRunner

    from advisor.cli import app
    monkeypatch.chdir(tmp_path)
    _fidelity_checkpoint(tmp_path, '"fp16", "int8", "int4"')
    tune = CliRunner().invoke(app, ["tune", "./ckpt", "--space", "f.toml", "--trials", "3", "--storage", "f.db",
                                    "--study", "fid", "--threads", "1"])
    assert tune.exit_code == 0, tune.output
    rep = CliRunner().invoke(app, ["report", "fid", "--storage", "f.db", "--block-lengths", "", "-o", "rep",
                                   "--memory", "100%,50%"])
    assert rep.exit_code == 0, rep.output
    md = (tmp_path / "rep" / "report.md").read_text()
    payload = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "## Headline: transfer saved and top-1 agreement kept, at equal GPU memory" in md, md
    tables = [ln for ln in md.splitlines() if ln.startswith(("| precision | trial |", "| GPU budget |"))]
    assert len(tables) == 2 and all("| top-1 agreement | top-1 change |" in t and "accuracy" not in t
                                    for t in tables), tables
    top1 = {r["precision"]: r["fidelity_top1"] for r in payload["headline"] if r["trial"] is not None}
    assert set(top1) == {"fp16", "int8", "int4"} and all(v is not None for v in top1.values()), payload["headline"]
    for prec, value in top1.items():
        row = next(ln for ln in md.splitlines() if ln.startswith(f"| {prec} | #"))
        assert f"| {value:.3f} | {100 * (value - top1['fp16']):+.1f} pt |" in row, row
    assert "| fp16, no cache (baseline) | - | 0 | 0 |" in md and f"| {top1['fp16']:.3f} | 0 pt |" in md, md
    at_100 = [ln for ln in md.splitlines() if ln.startswith("| 100% | best cache + miss policy |")]
    assert [ln.split(" | ")[2] for ln in at_100] == ["fp16", "int8", "int4"], at_100
    assert all(f"| {top1[ln.split(' | ')[2]]:.3f} | " in ln for ln in at_100), at_100
    assert "The study measured no task accuracy: top-1 agreement is" in md
    assert f"top-1 agreement {top1['int4']:.3f} (fidelity: the study measured no task accuracy)" in md, md


def test_a_time_studys_summary_shows_the_time_it_ranks_by_also_without_an_fp16_plan(tmp_path):
    """In a study tuned for time per token the printed summary listed each budget's fastest trials by their
    transfer cut (a bf16 row cut 54.5% at 100 KiB, 51.4% at a larger 102.75 KiB: it looked backwards) and showed
    time only as a cut against a stored fp16 no-cache trial - none here, so no time at all. Each row now gives its
    time per token with its source, what it is ranked by, before the transfer cut."""
    space = FEW_PROMPTS.replace('"fp16", "int8", "int4"', '"bf16", "int8"').replace(
        'h2d_bytes_per_token = "minimize"', 'time_per_token = "minimize"')
    url = run_small_study(tmp_path / "t.db", "bf", space, [("bf16", 2), ("int8", 4), ("bf16", 8)])
    r = advisor_entry("report", "bf", "--storage", url, "-o", "r", "--block-lengths", "", "--memory", "30%,100%",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    payload = json.loads((tmp_path / "r" / "report.json").read_text())
    lines = r.stdout.splitlines()
    for a in payload["answer_by_budget"]:
        assert f"  at {a['budget']} ({format_bytes(a['memory_bytes'], 2)}), fastest per precision, against " \
               f"bf16 without cache:" in lines, r.stdout
        for row in (row for row in a["rows"] if row["trial"] is not None):
            assert row["time_source"].startswith("modelled:"), row
            assert (f"    {row['precision']} #{row['trial']}: time per token {row['time_per_token']:.3f} ms "
                    f"(modelled), transfer cut {100 * row['reduction_vs_baseline']:.1f}% (counted),") in lines, r.stdout
    flat = " ".join(r.stdout.split())
    headline = [row for row in payload["headline"] if row["trial"] is not None]
    assert {row["precision"] for row in headline} == {"bf16", "int8"}, payload["headline"]
    for row in headline:
        assert (f"{row['precision']}: trial #{row['trial']}, time per token {row['time_per_token']:.3f} ms (modelled), "
                f"transfer cut") in flat, r.stdout


def test_the_pareto_figure_draws_h2d_bytes_in_the_unit_the_tables_print_them(monkeypatch, tmp_path):
    """The report's Pareto figure, against H2D bytes (a study not tuned for time per token), drew them in MiB:
    0.026 for the point its tables print as 26.5 KiB. Tables and figure now take the report's one unit
    (`advisor.units.h2d_unit` of the no-cache baseline: KiB for the example's 3016.7 KiB); redrawn here from the
    committed example study's trials, its axis read back as the table's cells."""
    from advisor.report import plots
    from advisor.report.data import load_study_data
    from advisor.report.document import _h2d
    from advisor.report.select import feasible_trials
    from advisor.units import h2d_unit

    data = load_study_data("bundled-example", f"sqlite:///{EXAMPLE_DB}")
    trials = feasible_trials(data)
    unit = h2d_unit(3016.7 * 2**10)  # the example's fp16 no-cache bytes per token
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    plots.pareto(trials, {p.trial_number for p in data.front}, [], tmp_path / "p.png", "h2d_bytes_per_token", h2d=unit)
    (fig,) = drawn
    ax = fig.axes[0]
    assert unit[0] == "KiB" and ax.get_xlabel().startswith("H2D KiB per generated token"), ax.get_xlabel()
    drawn_x = sorted(ax.collections[0].get_offsets()[:, 0])
    stored = sorted(t.values["h2d_bytes_per_token"] for t in trials if "h2d_bytes_per_token" in t.values)
    assert [f"{x:.1f} KiB" for x in drawn_x] == [_h2d(v, unit) for v in stored]  # each point reads as its cell


def _sweep(scale: float):
    from types import SimpleNamespace

    pts = [SimpleNamespace(precision="int8", policy=pol, slots=s, cache_bytes=s * 4096.0 * scale,
                           bytes_per_token=b * scale, transfer_ms_per_token=b / 25e6) for pol, s, b in
           (("lru", 2, 30000.0), ("lru", 8, 26521.0), ("belady", 2, 28000.0), ("belady", 8, 20480.0))]
    return SimpleNamespace(points=pts, baseline_format="fp16", baseline_bytes_per_token=39168.0 * scale,
                           baseline_ms_per_token=1.0, time_source="modelled:x")


@pytest.mark.parametrize("scale, unit", [(1.0, "B"), (32.0, "KiB"), (3e5, "MiB")])
def test_the_transfer_figures_draw_h2d_bytes_in_the_unit_the_sweep_table_prints_them(monkeypatch, tmp_path, scale,
                                                                                      unit):
    """The transfer-vs-slots (and -memory) figure drew H2D bytes per token in MiB (the example's fp16 no-cache line
    at 2.95) beside tables in KiB (3016.7 KiB); then both took a fixed KiB, in which a LLaDA-MoE-7B's no-cache
    ~11 GB per token reads as 11 million. Both take `ReportContext.h2d_unit` now (the largest unit the no-cache
    baseline fills 100 times): a small sweep (~1.2 MiB baseline: KiB) and one at a 7B's scale (~11 GiB: MiB),
    redrawn, their top row read back as the table's cells."""
    from advisor.report import plots
    from advisor.report.document import ReportContext, _h2d

    sweep = _sweep(scale)
    context = ReportContext.__new__(ReportContext)
    context.sweep = sweep
    assert context.h2d_unit[0] == unit
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    plots.transfer_vs_slots(sweep, tmp_path / "t.png")
    (fig,) = drawn
    top = fig.axes[0]
    # at byte scale the axis says "bytes" (it read "H2D B per generated token")
    word = "bytes" if unit == "B" else unit
    assert top.get_ylabel().startswith(f"H2D {word} per generated token"), top.get_ylabel()
    lru, belady, baseline = top.get_lines()
    assert [f"{y:.1f} {unit}" for y in lru.get_ydata()] == [_h2d(b * scale, context.h2d_unit)
                                                           for b in (30000.0, 26521.0)]
    assert [f"{y:.1f} {unit}" for y in baseline.get_ydata()] == [_h2d(39168.0 * scale, context.h2d_unit)] * 2
    assert 100 <= float(_h2d(39168.0 * scale, context.h2d_unit).split()[0]) < 1024 * 100


def test_the_accuracy_table_breaks_a_top1_tie_by_the_lower_kl():
    """The report's accuracy table (and its figure and report.json, which take the same rows) listed plans tied on
    top-1 agreement alphabetically: the example's fp16, int2, int4, int8, all at top-1 1, so int2 (KL 0.0076) came
    second. A tie is now broken by the lower KL, the table's next column, so it reads best-first; rows are
    `accuracy_rows` of the committed example study's trials."""
    from advisor.report.data import load_study_data
    from advisor.report.select import accuracy_rows, feasible_trials

    rows = accuracy_rows(feasible_trials(load_study_data("bundled-example", f"sqlite:///{EXAMPLE_DB}")))
    assert {r.fidelity_top1 for r in rows} == {1.0} and len(rows) == 4  # the premise: all tied on top-1
    assert [r.plan for r in rows] == ["fp16", "int8", "int4", "int2"], [(r.plan, r.fidelity_kl) for r in rows]
    assert [r.fidelity_kl for r in rows] == sorted(r.fidelity_kl for r in rows)


def test_a_tiny_studys_memory_axes_read_in_the_unit_its_tables_print(monkeypatch, tmp_path):
    """The Pareto figure's colour bar and the transfer-vs-memory figure's x axis took a fixed MiB: a tiny study's
    peaks of ~107 KiB (the budgets beside its stars: "106.8 KiB") read 0.105 to 0.109 MiB, its caches 0.008 to
    0.031 MiB where the tables print "8.00 KiB". Both take the unit their largest value fills now; the example's
    (peaks to 2.7 MiB, caches to 3 MiB) stay in MiB."""
    from types import SimpleNamespace

    from advisor.report import plots

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    plots.transfer_vs_slots(_sweep(1.0), tmp_path / "m.png", x="memory")  # caches of 2 and 8 slots x 4 KiB
    assert drawn[-1].axes[1].get_xlabel() == "GPU expert-cache memory (KiB, all layers)"  # (the bottom row)
    assert list(drawn[-1].axes[0].get_lines()[0].get_xdata()) == [8.0, 32.0]
    for peak, unit, value in ((109312.0, "KiB", 106.75), (1.5 * 2**20, "MiB", 1.5)):
        trial = SimpleNamespace(number=0, values={"h2d_bytes_per_token": 512.0, "accuracy": 1.0,
                                                  "peak_gpu_bytes": peak}, sources={})
        plots.pareto([trial], {0}, [], tmp_path / "p.png", "h2d_bytes_per_token", h2d=("B", 1))
        bar = drawn[-1].axes[1]  # the colour bar's axes
        assert bar.get_ylabel() == f"peak GPU memory ({unit})", bar.get_ylabel()
        assert list(drawn[-1].axes[0].collections[0].get_array()) == [value]


def test_the_headline_transfer_column_has_the_time_columns_digits(report):
    """The headline's "transfer ms / token" column was printed to 4 significant figures (0.04429 beside 0.005061,
    against a 3-decimal time column); it now has 3 decimals, as the time column beside it (polish59)."""
    import itertools

    lines = report.markdown.read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if "| transfer ms / token |" in ln)
    header = [c.strip() for c in lines[at].strip("|").split("|")]
    table = itertools.takewhile(lambda ln: ln.startswith("|"), lines[at + 2:])
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table]
    cells = [row[header.index("transfer ms / token")] for row in rows if row[1] != "-"]
    assert cells and all(re.fullmatch(r"\d+\.\d{3}", c) for c in cells), cells
