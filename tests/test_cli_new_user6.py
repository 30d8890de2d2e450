"""What a new user met in pass 6: each test failed before its fix."""

from __future__ import annotations

import json
import subprocess
import sys

from tune_helpers import FIDELITY_SPACE, tiny_fidelity_study


def test_a_fidelity_study_says_its_task_was_not_run(tmp_path, monkeypatch):
    """A study of a model without a tokenizer measures no task accuracy - its quality objective is fidelity_top1 on
    random token ids - yet `advisor pareto`, `studies` and `recommend` headed it `task toy` (or `on toy`), as if the
    toy task had been scored. They say it was not run and why, as the report's Workload lines do; recommend still
    imports neither torch nor SQLAlchemy to say it."""
    from advisor.cli import app

    run = tiny_fidelity_study(tmp_path, monkeypatch, columns=250)
    said = "toy (not run: no tokenizer; fidelity on random token ids)"
    for args in (["pareto", "s", "--storage", "t.db", "--no-plots"], ["studies", "--storage", "t.db"],
                 ["recommend", "--study", "s", "--storage", "t.db", "--budget", "1MiB"]):
        out = run.invoke(app, args)
        assert out.exit_code == 0 and said in " ".join(out.output.split()), (args, out.output)
    code = ("import sys\nfrom advisor.cli import app\n"
            "try:\n    app(['recommend', '--study', 's', '--storage', 't.db', '--budget', '1MiB'])\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers', 'sqlalchemy') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"COLUMNS": "250", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert said in " ".join(p.stdout.split()) and "HEAVY []" in p.stdout, p.stdout + p.stderr


MIXED_SPACE = FIDELITY_SPACE.replace('["fp16", "int8", "int4"]', '["int8", "int4"]').replace(
    "groups = 1", 'groups = "per_layer"')  # one format per MoE layer


def test_a_fidelity_studys_json_export_says_its_quality_is_fidelity_not_a_task(tmp_path, monkeypatch):
    """`export --to json` of a study that measured no task accuracy (a model without a tokenizer) still named the
    task under `source.task`, "toy", as if the trial's quality were accuracy on it. `source.task` is null there and
    `source.quality` says what the figure is: top-1 agreement with the full-precision model, and why no task ran; a
    study that scored its task names it, and says so."""
    from pathlib import Path

    from advisor.cli import app
    from advisor.export.json_format import load

    run = tiny_fidelity_study(tmp_path, monkeypatch)
    out = run.invoke(app, ["export", "s", "0", "--to", "json", "--storage", "t.db", "-o", "s.json"])
    assert out.exit_code == 0, out.output
    doc = load("s.json").doc
    assert doc["version"] == 4 and doc["source"]["task"] is None, doc["source"]
    assert "accuracy" not in doc["metrics"] and "fidelity_top1" in doc["metrics"], doc["metrics"]
    assert doc["source"]["quality"] == {
        "metric": "fidelity_top1",
        "meaning": "top-1 agreement of next-token predictions with the full-precision model (fp32), 0..1, not task "
                   "accuracy: task toy (not run: no tokenizer; fidelity on random token ids)"}, doc["source"]
    example = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    out = run.invoke(app, ["export", "bundled-example", "129", "--to", "json", "--storage", str(example)])
    assert out.exit_code == 0, out.output
    source = json.loads(out.stdout)["source"]
    assert source["task"] == "toy" and source["quality"] == {"metric": "accuracy",
                                                             "meaning": "task accuracy on toy, 0..1"}, source


def test_the_report_headline_counts_the_expert_cache_of_a_mixed_plan(tmp_path, monkeypatch):
    """The report's headline gave a per-layer mixed plan `expert cache -`: only uniform plans were counted. A mixed
    row counts each layer's slots at the sizes of the experts its plan gives that layer (the most its cache can
    hold, as the trial's peak_gpu_bytes counts it): the same slots in both layers of tiny:qwen3_moe, one layer int4
    and the other int8, count slots x (one int4 + one int8 expert's bytes).
    """
    import re

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.quant.spec import expert_nbytes_of
    from advisor.units import format_bytes

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mixed.toml").write_text(MIXED_SPACE)
    run = CliRunner(env={"COLUMNS": "200"})
    r = run.invoke(app, ["tune", "tiny:qwen3_moe", "--space", "mixed.toml", "--trials", "6", "--sampler", "random",
                         "--storage", "t.db", "--study", "s"])
    assert r.exit_code == 0, r.output
    rep = run.invoke(app, ["report", "s", "--storage", "t.db", "-o", "rep", "--block-lengths", ""])
    assert rep.exit_code == 0, rep.output
    md = (tmp_path / "rep" / "report.md").read_text()
    head = md[md.index("| precision | trial |"):md.index("**Definitions.**")]
    rows = re.findall(r"^\| L0:(\S+) L1:(\S+) \| #\d+ \| (\d+) \| ([^|]+?) \|", head, re.M)
    assert rows, head
    (f0, f1, slots, cache), = rows
    want = int(slots) * (expert_nbytes_of(f0, 32, 16) + expert_nbytes_of(f1, 32, 16))  # tiny:qwen3_moe's experts
    assert f0 != f1 and cache == format_bytes(want, 2), head  # a tiny model's KiB, not "0.012 MiB"


def test_pareto_takes_o_for_its_plot_directory_as_report_and_export_do(tmp_path):
    """`advisor report STUDY -o DIR` and `advisor export ... -o FILE` take `-o`; `advisor pareto STUDY -o DIR`
    answered `error: No such option: -o` (exit 2): only `--out` was spelled."""
    from recommend_helpers import make_db, standard_front
    from typer.testing import CliRunner

    from advisor.cli import app

    url = make_db(tmp_path / "a.db", standard_front("s1"))
    r = CliRunner().invoke(app, ["pareto", "s1", "--storage", url, "-o", str(tmp_path / "plots")])
    assert r.exit_code == 0, r.output[-2000:]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["s1.html", "s1.png"]
