"""Long lines of the read-only commands at 80 columns: recommend's reasons and value sources and the legend under
a front ran past the edge (a reason of 300 characters, a source of 330) or, where rich wrapped them, restarted
at column 0. They wrap at the terminal's width under their own bullet or column, with nothing lost."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DB = str(ROOT / "studies" / "example" / "advisor.db")


def at_width(columns: int, *args: str, stderr: bool = False) -> list[str]:
    """The lines `advisor ARGS` prints (on stdout, or on stderr) on a terminal `columns` wide (COLUMNS, as a
    shell sets it), through the CLI in this process (a subprocess each paid ~0.5-1.5 s starting Python and the
    CLI; what is checked is where lines break, not the process)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from cli_helpers import advisor_in_process

    r = advisor_in_process(*args, cwd=ROOT, env={"COLUMNS": str(columns)})
    assert r.returncode in (0, 1) and (stderr or not r.stderr), r.stdout + r.stderr
    return (r.stderr if stderr else r.stdout).splitlines()


def _in_process(columns: int, *args: str) -> subprocess.CompletedProcess:
    """`advisor ARGS` on a terminal `columns` wide, through the CLI in this process, for a command that must
    succeed (a report: as a subprocess it paid the torch/transformers import again); its exit status checked."""
    sys.path.insert(0, str(ROOT / "tests"))
    from cli_helpers import advisor_in_process

    r = advisor_in_process(*args, cwd=ROOT, env={"COLUMNS": str(columns)})
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def same_text(narrow: list[str], wide: list[str]) -> bool:
    """Whether both print the same characters (only where lines break differs)."""
    return "".join("".join(narrow).split()) == "".join("".join(wide).split())


def test_recommend_at_80_columns_wraps_each_reason_and_source_under_itself():
    args = ("recommend", "--storage", EXAMPLE_DB, "--gpu", "RTX 4090")  # its reasons run to 300 characters
    narrow, wide = at_width(80, *args), at_width(1000, *args)
    # the export command is printed whole, to paste into a shell (the terminal folds it, no line break inside)
    command = next(ln for ln in narrow if ln.startswith("Export it:"))
    assert command in wide and len(command) > 80 and "advisor export" in command
    assert max(len(ln) for ln in narrow if ln != command) <= 80 and max(map(len, wide)) > 200, narrow
    assert same_text(narrow, wide)
    assert len(narrow) > len(wide) + 20
    why, stored = narrow.index("Why:"), narrow.index(next(ln for ln in narrow if ln.startswith("Stored values")))
    # each reason is a bullet with its continuation under its text, never at column 0
    assert all(ln.startswith(("  - ", "    ")) and not ln.startswith("     ") for ln in narrow[why + 1:stored])
    assert sum(ln.startswith("  - ") for ln in narrow[why + 1:stored]) == sum(
        ln.startswith("  - ") for ln in wide)
    # a value's source goes on 6 columns in; the long sources break after a separator, not inside a word
    values = narrow[stored + 1:next(i for i, ln in enumerate(narrow) if ln.startswith("Export it:"))]
    assert all(ln.startswith("  ") for ln in values) and any(ln.startswith("      ") for ln in values), values
    assert "      assumed);copies=pcie(bw=25.0GB/s,lat=10us);" in values, values
    # at 1000 columns each reason and each value is one line, as before
    assert any(ln.startswith("  - the candidates come from the stored Pareto front") and ln.endswith("new --study")
               for ln in wide), wide


def test_recommend_with_no_pick_wraps_at_80_columns_too():
    args = ("recommend", "--storage", EXAMPLE_DB, "--budget", "1MiB")  # nothing fits: exit code 1, with why
    narrow, wide = at_width(80, *args), at_width(1000, *args)
    assert narrow[0] == "No stored configuration meets the requirements."
    assert max(map(len, narrow)) <= 80 < max(map(len, wide)) and same_text(narrow, wide), narrow
    assert all(ln.startswith(("  - ", "    ")) for ln in narrow[1:]), narrow


def test_pareto_legend_at_80_columns_wraps_under_each_metric():
    args = ("pareto", "bundled-example", "--storage", EXAMPLE_DB, "--no-plots")
    narrow, wide = at_width(80, *args), at_width(1000, *args)
    assert max(map(len, narrow)) <= 80, [ln for ln in narrow if len(ln) > 80]
    legend = narrow[next(i for i, ln in enumerate(narrow) if ln.startswith("  accuracy: ")):]
    assert all(ln.startswith("  ") for ln in legend) and any(ln.startswith("    ") for ln in legend), legend
    wide_legend = wide[next(i for i, ln in enumerate(wide) if ln.startswith("  accuracy: ")):]
    assert same_text(legend, wide_legend) and len(legend) > len(wide_legend)


REPORT_ARGS = ("report", "bundled-example", "--storage", EXAMPLE_DB, "--memory", "50%,100%", "--block-lengths", "")
"""A report of the example study at half and all of its FP16 expert bytes (a --memory above its budget: a long
note), without the block-length section (not what is checked)."""


@pytest.fixture(scope="module")
def report_at_80(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, Any]:
    """`advisor REPORT_ARGS -o DIR` at 80 columns, once per test process (a report re-records the example's
    traces: ~10 s): its output, DIR, and the result `build_report` gave the command, which
    `test_report_headline_wraps_at_the_terminals_width` prints again at another width."""
    import advisor.report.study as report_study

    out = tmp_path_factory.mktemp("report") / "r"
    built: list[Any] = []
    real = report_study.build_report

    def recorded(*args: Any, **kwargs: Any) -> Any:
        built.append(real(*args, **kwargs))
        return built[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_study, "build_report", recorded)
        r = _in_process(80, *REPORT_ARGS, "-o", str(out))
    assert len(built) == 1, built
    return r, out, built[0]


def test_report_progress_and_notes_at_80_columns_wrap_under_their_text(report_at_80):
    """report's note on a --memory above the study's budget (about 230 characters) and its progress lines (up to
    100) went to stderr whole; they wrap at the terminal's width too, a note's continuation under its text."""
    r, out, _ = report_at_80
    narrow = r.stderr.splitlines()
    assert max(map(len, narrow)) <= 80, narrow
    note = narrow.index(next(ln for ln in narrow if ln.startswith("note: --memory 100%")))
    assert len(narrow) - note > 1 and all(ln.startswith("      ") for ln in narrow[note + 1:]), narrow
    said = " ".join(" ".join(narrow[note:]).split()).removeprefix("note: ")
    assert f"**Note:** {said}" in (out / "report.md").read_text()  # the whole note, as the report has it
    step = next(i for i, ln in enumerate(narrow) if "replaying traces" in ln)
    assert narrow[step + 1].startswith(" " * 13) and narrow[step + 1].strip().endswith("MIN ..."), narrow


def test_export_notes_at_80_columns_wrap_under_their_text(tmp_path):
    """export's notes (the hf recipe's on hybrid misses, about 400 characters; an off-front trial's, 200) went to
    stderr whole, past the edge of an 80-column terminal, where recommend, pareto and report wrap theirs. They
    wrap at the terminal's width too, each continuation under its note's text, with nothing lost."""
    from example_study import example_trial

    hybrid = example_trial(precision_spec="int4", slots_per_layer=[52] * 4, policy="flru", miss_policy="hybrid")
    off_front = "216"  # the example's TIDE-style baseline (fp16, 6 slots/layer, tau 8, misses on the CPU)
    for args in (("export", "bundled-example", str(hybrid), "--storage", EXAMPLE_DB, "--to", "hf"),
                 ("export", "bundled-example", off_front, "--storage", EXAMPLE_DB, "--to", "json")):
        narrow, wide = at_width(80, *args, stderr=True), at_width(1000, *args, stderr=True)
        assert max(map(len, wide)) > 150 and max(map(len, narrow)) <= 80, narrow
        assert len(narrow) > len(wide) and same_text(narrow, wide), narrow
        assert all(ln.startswith(("note: ", "      ")) for ln in narrow), narrow
        assert sum(ln.startswith("note: ") for ln in narrow) == len(wide), (narrow, wide)  # one per note


def test_a_wrapped_line_with_a_tab_loses_no_text():
    """`print_wrapped` of a line with a tab (a reason quoting a path or a model's own text): rich expands the tab
    when it wraps, so the rest was cut from the unexpanded line by the expanded first line's length, and the
    characters in between were never printed."""
    import io

    from rich.console import Console

    from advisor.terminal import print_wrapped

    line = "model\tpath " + " ".join(f"word{i}" for i in range(40))
    buf = io.StringIO()
    print_wrapped(Console(file=buf, width=40, color_system=None), line, 4)
    assert buf.getvalue().split() == line.split(), buf.getvalue()


def test_report_headline_wraps_at_the_terminals_width(tmp_path, report_at_80, monkeypatch):
    """report's headline rows (trial, transfer cut, time cut, accuracy change, each with its source) broke at a
    fixed 80 columns, where its notes and every other command wrap at the terminal's: on a 200-column terminal a
    row of ~110 characters still took two lines. They break at the terminal's width now, between parts. (The
    command prints what `build_report` gave: here `report_at_80`'s, not built again, at 200 columns.)"""
    import advisor.report.study as report_study

    built = report_at_80[2]
    monkeypatch.setattr(report_study, "build_report", lambda *a, **k: built)
    r = _in_process(200, *REPORT_ARGS, "-o", str(tmp_path / "r"))
    wide = r.stdout.splitlines()
    rows = [ln for ln in wide if re.match(r"  +\S+: trial #\d+, ", ln)]
    assert rows and all("accuracy change" in ln for ln in rows), wide  # each row whole on its line
    assert max(map(len, rows)) > 80 and max(map(len, wide)) <= 200, wide


def test_report_headline_gives_each_accuracy_its_sample_size_and_interval(report_at_80):
    """report's headline rows said "accuracy change -3.1 pt (measured)": on the 32 examples a quick tune measures
    that is one problem, inside both plans' 95% intervals, and a researcher reading the summary took it for a loss.
    Each row now gives the accuracy it changed to as recommend gives one, with its sample size and Wilson
    interval: "accuracy change -0.5 pt, to 0.945 (measured, n=200, 95% CI 0.904-0.969)"."""
    r, out, _ = report_at_80
    text = " ".join(r.stdout.split())
    rows = json.loads((out / "report.json").read_text())["headline"]  # the report's own interval of each row
    assert rows and all(row["trial"] is not None for row in rows), rows
    for row in rows:
        low, high = row["accuracy_ci"]
        assert row["accuracy_n"] == 200 and row["accuracy_source"] == "measured:exact-match:toy(n=200,cpu)", row
        said = (f"accuracy change {100 * row['accuracy_change']:+.1f} pt, to {row['accuracy']:.3f} "
                f"(measured, n=200, 95% CI {low:.3f}-{high:.3f})")
        assert f"#{row['trial']}, " in text and said in text, (said, r.stdout)


def test_report_answer_at_each_budget_says_what_accuracy_each_row_loses(report_at_80):
    """`report --memory A,B` printed each budget's rows with their time and transfer cuts only, and the accuracy
    change only in the headline rows, at the first budget: where nothing fits there (an offloaded quick study at
    10%), the terminal said nothing of accuracy at all. Every budget's row now gives it, as the headline's do."""
    r, out, _ = report_at_80
    text = " ".join(r.stdout.split())
    answers = json.loads((out / "report.json").read_text())["answer_by_budget"]
    rows = [row for a in answers for row in a["rows"] if row["trial"] is not None]
    assert len(answers) == 2 and len(rows) >= 8, answers
    for row in rows:
        low, high = row["accuracy_ci"]
        said = (f" {row['precision']} #{row['trial']}: time per token {row['time_per_token']:.3f} ms (modelled), "
                f"time cut {100 * row['time_cut']:.1f}% (modelled), transfer cut "
                f"{100 * row['reduction_vs_baseline']:.1f}% (counted), accuracy change "
                f"{100 * row['accuracy_change']:+.1f} pt, to {row['accuracy']:.3f} (measured, n=200, 95% CI "
                f"{low:.3f}-{high:.3f})")
        assert said in text, (said, r.stdout)


def test_report_answer_in_words_gives_each_accuracy_its_sample_size_and_interval(report_at_80):
    """report.md's answer in words ("int8 experts with 11 GPU slots per layer (trial #47) cut H2D transfer by 68.8%
    vs FP16 without a cache; accuracy 0.945 (-0.5 pt vs FP16)") gave the accuracy bare, the sentence a reader
    quotes; it now carries its sample size and Wilson interval, as the table above it and recommend do."""
    _, out, _ = report_at_80
    md = " ".join((out / "report.md").read_text().split())
    rows = json.loads((out / "report.json").read_text())["headline"]
    assert rows, rows
    for row in rows:
        low, high = row["accuracy_ci"]
        change = f"{100 * row['accuracy_change']:+.1f} pt"
        said = (f"(trial #{row['trial']}) cut H2D transfer by {100 * row['reduction_vs_baseline']:.1f}% vs FP16 "
                f"without a cache; accuracy {row['accuracy']:.3f} (measured, n=200, 95% CI {low:.3f}-{high:.3f}), "
                f"{change} vs FP16.")
        assert said in md, said


def test_report_says_when_the_studys_trials_ran(report_at_80):
    """The report dated its CPU expert times but not its trials: a reader of the example's report.md could not tell
    when its accuracies and bytes were measured. Its provenance now gives the first trial's start and the last
    one's end, as Optuna stored them, and report.json the same in `trials_ran`."""
    import sqlite3

    _, out, _ = report_at_80
    with sqlite3.connect(f"file:{EXAMPLE_DB}?mode=ro", uri=True) as con:
        first, last = con.execute("SELECT min(datetime_start), max(datetime_complete) FROM trials JOIN studies "
                                  "USING (study_id) WHERE study_name = 'bundled-example' AND state = 'COMPLETE'"
                                  ).fetchone()
    assert first[:10] == last[:10], (first, last)  # one day: the end gives its time only
    md = " ".join((out / "report.md").read_text().split())
    assert (f"Trials ran on: cpu, {first[:16]}-{last[11:16]} (the tuning host's clock, as Optuna stored it; an "
            "accuracy reused from the evaluation cache may have been measured earlier). This report's replays ran "
            "on: cpu.") in md, md
    ran = json.loads((out / "report.json").read_text())["trials_ran"]
    assert [t.replace("T", " ") for t in ran] == [first, last], ran


def _export_db(tmp_path: Path, model: str) -> str:
    """A database holding one point `q` of a tiny qwen3_moe-shaped model at `model` (no config.json there)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from recommend_helpers import make_db, model_meta, point

    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=32, inter=16)
    return make_db(tmp_path / "a.db", [point("q", 1, "default=int8;layers=1:bf16", [4, 2], acc=0.9, h2d=1,
                                             peak_gib=1, meta=meta, model=model)])


def _export_notes(url: str, target: str, columns: int) -> list[str]:
    from typer.testing import CliRunner

    from advisor.cli import app

    r = CliRunner().invoke(app, ["export", "q", "1", "--to", target, "--storage", url], env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    return r.stderr.splitlines()


def test_wrapped_lines_fit_the_terminal_in_cells_not_characters(tmp_path):
    """A CJK character (or an emoji) takes two terminal cells. Wrapping counted characters, so a note naming a
    model directory `/.../日本語のモデル` ran past a 60-column terminal's edge, the terminal then folding it
    mid-word. Lines fit in cells now (`rich.cells.cell_len`), with nothing lost."""
    from rich.cells import cell_len

    url = _export_db(tmp_path, "/data/日本語のモデル/大規模言語モデル重み")
    narrow, wide = _export_notes(url, "vllm", 60), _export_notes(url, "vllm", 1000)
    assert any("日本語のモデル" in ln for ln in narrow), narrow
    assert max(map(cell_len, narrow)) <= 60, [ln for ln in narrow if cell_len(ln) > 60]
    assert same_text(narrow, wide)


def test_a_quoted_command_in_a_note_is_never_broken(tmp_path):
    """export's notes quote commands to copy (`--to vllm`, `pip install "moe-advisor[hf]"`). At 73 columns the
    ktransformers note broke `--to vllm` between its words, so a copied line held half of it. A quoted span is
    one piece now: at any width, no line holds an unclosed backtick."""
    url = _export_db(tmp_path, "Qwen/x")
    wide = _export_notes(url, "ktransformers", 1000)
    assert any("`--to vllm`" in ln for ln in wide), wide
    for columns in range(50, 101):
        narrow = _export_notes(url, "ktransformers", columns)
        assert all(ln.count("`") % 2 == 0 for ln in narrow), (columns, narrow)
        assert same_text(narrow, wide)


def test_studies_silent_note_breaks_no_command_and_ends_no_line_in_a_space(tmp_path):
    """`advisor studies`' footnote on a silent trial (a running trial whose worker sent no heartbeat for 12
    minutes) was printed through rich: at 80 columns its lines ended in the space rich broke them at, and at 66
    the `advisor tune --study NAME` it quotes was broken after `advisor tune`. It is wrapped as every note is."""
    import contextlib
    import shutil
    import sqlite3

    from typer.testing import CliRunner

    from advisor.cli import app

    shutil.copy(EXAMPLE_DB, tmp_path / "s.db")
    with sqlite3.connect(tmp_path / "s.db") as con:  # a worker killed mid-trial 12 minutes ago (database clock)
        (study,) = con.execute("SELECT study_id FROM studies").fetchone()
        trial = con.execute("INSERT INTO trials (number, study_id, state, datetime_start) SELECT MAX(number) + 1, ?, "
                            "'RUNNING', datetime('now', '-12 minutes') FROM trials", (study,)).lastrowid
        con.execute("INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, datetime('now', '-12 minutes'))",
                    (trial,))
    note = ("silent: a running trial whose worker has sent no heartbeat for over 90 s (3 x the 30 s grace period "
            "of `advisor tune`'s default --heartbeat): that worker most likely died. The next `advisor tune --study "
            "bundled-example` on this storage fails it and queues it again")
    for columns in (66, 80):
        with contextlib.chdir(tmp_path):
            res = CliRunner(env={"COLUMNS": str(columns)}).invoke(app, ["studies", "--storage", "s.db"])
        assert res.exit_code == 0, res.output
        lines = res.stdout.splitlines()
        assert "running 1 (1 silent 12 min)" in res.stdout and note in " ".join(res.stdout.split()), res.stdout
        assert max(map(len, lines)) <= columns and not [ln for ln in lines if ln.endswith(" ")], (columns, lines)
        assert all(ln.count("`") % 2 == 0 for ln in lines), (columns, lines)
