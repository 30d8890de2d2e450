"""Read-side wording found by a new-user pass (recommend, report, pareto, studies): one text per idea."""

from __future__ import annotations

import re
from pathlib import Path

from cli_helpers import advisor_in_process, flat

EXAMPLE = Path(__file__).parent.parent / "studies" / "example" / "advisor.db"


def test_recommend_reasons_give_a_points_size_as_its_stored_values_do(tmp_path):
    """`recommend --budget 1.5MiB` said "uses 1.4 MiB" above a stored peak_gpu_bytes of 1.369 MiB, and "more
    memory: ... with 1.2 MiB" for a point whose stored value reads 1.227 MiB: a configuration's bytes now read as its
    stored values (3 decimals), a budget as `tune` heads it (2 decimals). (The regenerated example picks int8 with 1
    slot/layer there, 1.253 MiB: 1.25 or 1.3 read otherwise.)"""
    out = flat(advisor_in_process("recommend", "--storage", str(EXAMPLE), "--budget", "1.5MiB", cwd=tmp_path).stdout)
    stored = re.search(r"peak_gpu_bytes ([\d.]+ MiB)", out)
    assert stored and stored.group(1) == "1.253 MiB", out
    assert f"- fits 1.50 MiB (--budget 1.5MiB): uses {stored.group(1)} (counted)" in out, out
    r = advisor_in_process("recommend", "--storage", str(EXAMPLE), "--budget", "1MiB", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "meets the accuracy floor with 1.227 MiB (counted; 232.500 KiB over the budget)" in flat(r.stdout), r.stdout
    assert "exceed the memory budget of 1.00 MiB (--budget 1MiB)" in flat(r.stdout), r.stdout


def test_tune_and_recommend_name_a_gpu_and_a_cpu_profiles_memory_alike(tmp_path):
    """`tune --gpu 'RTX 4090'` headed its budget "24.00 GiB (--gpu RTX 4090)" while `recommend --gpu 'RTX 4090'` said
    "24.0 GiB (--gpu RTX 4090 24GB)" of the same profile; a CPU profile's RAM read 23.59 GiB in tune's note and
    23.6 GiB in `profile --list` and recommend's reason. One text each: the profile's name, 2 decimals."""
    import json

    from typer.testing import CliRunner

    from advisor.cli import app
    from tests.test_device_roofline import SPACE

    (tmp_path / "space.toml").write_text(SPACE)
    url = f"sqlite:///{tmp_path}/d.db"
    tune = CliRunner().invoke(app, ["tune", "bundled", "--space", str(tmp_path / "space.toml"), "--gpu", "RTX 4090",
                                    "--trials", "1", "--storage", url, "--study", "g"])
    assert tune.exit_code == 0, tune.output
    assert "budget: 24.00 GiB (--gpu RTX 4090 24GB, catalogue (nominal))" in flat(tune.output), tune.output
    rec = flat(advisor_in_process("recommend", "--storage", url, "--gpu", "RTX 4090", cwd=tmp_path).stdout)
    assert "fits 24.00 GiB (--gpu RTX 4090 24GB, catalogue (nominal))" in rec, rec

    cpu = {"name": "cpu vm", "memory_bytes": int(23.59 * 2**30), "h2d_gbps_pinned": 2.8, "h2d_gbps_pageable": 2.8,
           "copy_latency_us": 3.0, "source": "measured-cpu:2026-12-06"}
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "vm.json").write_text(json.dumps(cpu))
    listed = flat(advisor_in_process("profile", "--list", "--profiles-dir", "p", cwd=tmp_path).stdout)
    assert "cpu vm: 23.59 GiB host RAM" in listed, listed
    rec = flat(advisor_in_process("recommend", "--storage", str(EXAMPLE), "--gpu", "cpu vm", "--profiles-dir", "p",
                                  cwd=tmp_path).stdout)
    assert "whose 23.59 GiB is host RAM, not a GPU budget" in rec, rec


def test_a_fidelity_studys_report_and_recommend_say_its_fidelity_and_its_floor_in_one_wording(shm_tmp_path,
                                                                                              monkeypatch):
    """A study of a model without a tokenizer stores top-1 agreement, no task accuracy. `report` printed "accuracy
    change -" for each plan, not the agreement it has; `recommend --max-accuracy-drop 0.02` said "no accuracy
    stored in this study: relative floor not applied" where without the option it said "no accuracy floor applies
    (not the default ...)". Now the report's lines give the top-1 agreement (and how it was obtained), and both
    recommend cases say "no accuracy floor applies (<which>: there is no task accuracy)"."""
    from typer.testing import CliRunner

    from advisor.cli import app

    def cli(*args: str):
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})

    monkeypatch.chdir(shm_tmp_path)
    tuned = cli("tune", "tiny:qwen3_moe", "--space", "quick", "--storage", "t.db", "--study", "s", "--trials", "3")
    assert tuned.exit_code == 0, tuned.output
    q = ("recommend", "--study", "s", "--storage", "t.db", "--budget", "1MiB", "--prefer", "transfer")
    default, given = cli(*q), cli(*q, "--max-accuracy-drop", "0.02")
    assert default.exit_code == 0 and given.exit_code == 0, default.output + given.output
    assert "- no accuracy floor applies (not the default 1 point below the full-precision point: there is no task " \
           "accuracy), so" in flat(default.output), default.output
    assert "- no accuracy floor applies (--max-accuracy-drop 0.02 is not applied: there is no task accuracy), so" \
           in flat(given.output), given.output
    assert "relative floor not applied" not in given.output, given.output
    rep = cli("report", "s", "--storage", "t.db", "-o", "rep")
    assert rep.exit_code == 0, rep.output
    plans = [ln for ln in rep.stdout.splitlines() if ": trial #" in ln]
    assert plans and all(re.search(r"top-1 agreement [01]\.\d{3} \(measured\)$", ln) for ln in plans), rep.stdout
    assert "accuracy change" not in rep.stdout, rep.stdout


def test_recommends_more_memory_hint_is_in_proportion_to_the_need(tmp_path):
    """Nothing fitting `--budget 1MiB`, the hint named "e.g. RTX 3060 Ti 8GB, RTX 3070 8GB, RTX 4060 8GB" for a
    configuration that needs 1.227 MiB. It now names the --budget that holds the need and, where the budget was a
    GPU's, the one smallest catalogued GPU that holds it."""
    from recommend_helpers import make_db, point

    r = advisor_in_process("recommend", "--storage", str(EXAMPLE), "--budget", "1MiB", cwd=tmp_path)
    out = flat(r.stdout)
    assert r.returncode == 1 and "over the budget); e.g. --budget 1.23MiB" in out and "GB" not in out, r.stdout
    url = make_db(tmp_path / "big.db", [point("s", 1, "bf16", 8, acc=0.9, h2d=1e6, peak_gib=30)])
    r = advisor_in_process("recommend", "--storage", url, "--gpu", "RTX 4090", cwd=tmp_path)
    assert r.returncode == 1 and ("over the budget); e.g. --budget 30.00GiB, or --gpu 'RTX 5090 32GB', the smallest "
                                  "catalogued GPU that holds it") in flat(r.stdout), r.stdout


def test_reports_tables_give_a_precision_that_cannot_fit_its_note_in_a_column_of_its_own(tmp_path):
    """At a --memory below a precision's least configuration the report's tables put "cannot fit in 1.20 MiB: ..."
    in the accuracy-change column. Such a row now reads "-" there, the note in a last "note" column (only
    where a row has one: the README's table of the example study keeps its columns)."""
    import shutil

    shutil.copy(EXAMPLE, tmp_path / "a.db")
    r = advisor_in_process("report", "bundled-example", "--storage", "a.db", "--memory", "1.2MiB,10%", "-o", "rep",
                           "--block-lengths", "", cwd=tmp_path)  # no block-length section: not what is checked
    assert r.returncode == 0, r.stdout + r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    tables = [block for block in md.split("\n\n") if block.startswith("| precision | trial") or
              block.startswith("| GPU budget")]
    assert len(tables) == 2, md
    for table in tables:
        header, _, *rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines()]
        assert header[-1] == "note" and "accuracy change" in header, header
        unfit = [row for row in rows if "cannot fit in 1.20 MiB" in "|".join(row)]
        assert unfit, table
        for row in unfit:
            assert len(row) == len(header) and row[-1].startswith("cannot fit in 1.20 MiB: even its least "), row
            assert row[header.index("accuracy change")] == "-", row


def test_a_budget_past_a_tebibyte_reads_alike_in_pareto_and_recommend(tmp_path):
    """pareto's title (and studies' budget column, the front's byte cells) printed sizes with a loop of their own
    that stopped at GiB: a study tuned within 2 TiB read "2048.00 GiB" there and "2.00 TiB" in recommend's reasons,
    one budget in two spellings. Every command prints it as `format_bytes` does."""
    import dataclasses

    from recommend_helpers import make_db, point

    url = make_db(tmp_path / "big.db", [dataclasses.replace(
        point("big", 1, "bf16", 8, acc=0.9, h2d=1e6, peak_gib=1500), budget_bytes=2 * 2**40)])
    front = flat(advisor_in_process("pareto", "big", "--storage", url, "--no-plots", cwd=tmp_path).stdout)
    rec = flat(advisor_in_process("recommend", "--storage", url, "--budget", "3TiB", cwd=tmp_path).stdout)
    assert "budget 2.00 TiB, gpu default (1 point)" in front, front  # (the helper's points: a profile "default")
    assert "the study was tuned within 2.00 TiB, less than" in rec, rec
    assert "GiB" not in front + rec, front + rec
