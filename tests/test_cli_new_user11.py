"""Found by a new user (pass 11) trying less-travelled options and error paths through the CLI (2026-12-06)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_helpers import advisor, advisor_entry, advisor_in_process, one_error_line
from typer.testing import CliRunner

from advisor.cli import app


def test_a_share_over_100_percent_given_to_budget_is_not_sent_to_budgets(tmp_path):
    """`tune --budget 150%` answered "for 150% of the model give --budgets 150%", and `--budgets 150%` is refused
    ("a share must be between 0% and 100%"): the advice led to a second error. It now says what --budgets takes;
    a share --budgets does take is still handed over as before."""
    r = advisor("tune", "--budget", "150%", "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    line = one_error_line(r, "--budget takes a size (e.g. 12GiB), not a share",
                          "--budgets takes shares between 0% and 100%")
    assert "--budgets 150%" not in line, line
    assert not (tmp_path / "s.db").exists()
    ok = advisor("tune", "--budget", "40%", "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    one_error_line(ok, "give --budgets 40%: a budget of the resident weights + 40% of the FP16 expert bytes")


def test_host_memory_on_a_tiny_model_gives_advice_that_runs(tmp_path):
    """`tune tiny:qwen3_moe --host-memory 1KiB` said "add --offload", which a tiny model refuses ("--offload reads
    experts from a checkpoint directory"); it now names --mode live, whose store the cap limits. In --mode live a
    cap no store fits stopped the first trial with "choose a smaller format (int4, int3)", though none fits: it is
    now checked once the model loads, naming the formats whose store fits (none), before any trial or database.
    Through the entry point in this process: as subprocesses the two refusals paid ~9 s of CPU importing torch."""
    db = tmp_path / "s.db"
    base = ("tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1", "--storage", str(db))
    r = advisor_entry(*base, "--host-memory", "1KiB", cwd=tmp_path)
    line = one_error_line(r, "tiny:qwen3_moe is loaded whole", "use --mode live")
    assert "--offload" not in line.split("replay packs no store")[1], line
    live = advisor_entry(*base, "--mode", "live", "--host-memory", "1KiB", cwd=tmp_path)
    line = one_error_line(live, "1.00 KiB is allowed (--host-memory)", "no format's store fits; raise --host-memory")
    assert "choose a smaller format" not in line and "tuning" not in live.stdout, live.stdout + line
    assert not db.exists()


def test_report_at_a_memory_that_holds_no_trial_is_refused_before_the_work(tmp_path):
    """`report --memory 1KiB` traced, replayed and drew for a minute, then wrote a report whose every row said
    "no trial of this precision fits". A size no stored trial fits is refused at once (before the model loads),
    with the least peak the study holds and a --memory that holds it; nothing is written."""
    import shutil

    db = tmp_path / "advisor.db"
    shutil.copy(Path(__file__).parent.parent / "studies" / "example" / "advisor.db", db)
    out = tmp_path / "rep"
    r = advisor("report", "bundled-example", "--storage", str(db), "--memory", "1KiB", "-o", str(out), cwd=tmp_path)
    line = one_error_line(r, "--memory 1KiB (1.00 KiB): no stored trial fits it",
                          "the least peak GPU memory among the study's trials is")
    assert " (counted, trial #" in line, line  # the number's source, as the stored peak is labelled elsewhere
    assert "loading the study's model" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert not out.exists()
    given = line.split("give --memory ")[1].split(" or more")[0]  # one word to paste, in the unit of the line
    from advisor.hardware.profiles import parse_budget
    from advisor.report.data import load_study_data
    from advisor.report.select import feasible_trials
    from advisor.units import size_argument

    peaks = [t.values["peak_gpu_bytes"] for t in feasible_trials(load_study_data("bundled-example", str(db)))]
    assert given == size_argument(min(peaks)) and " " not in given, given
    assert min(peaks) <= parse_budget(given) < min(peaks) * 1.01, (given, min(peaks))


def test_report_at_a_share_that_holds_no_trial_is_refused_before_the_model_loads(tmp_path):
    """A --memory share (of the FP16 expert bytes on top of the resident weights) that no stored trial fits was
    refused only after "[1] loading the study's model", which its resident bytes were taken from: they are counted
    from the stored trials' counted peaks now (`stored_shape`), so it is refused before the load, in the same
    line. The example study without its zero-slot trials (whose peak is the resident weights alone)."""
    import json
    import shutil
    import sqlite3

    db = tmp_path / "advisor.db"
    shutil.copy(Path(__file__).parent.parent / "studies" / "example" / "advisor.db", db)
    with sqlite3.connect(db) as c:
        configs = c.execute("SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'config'").fetchall()
        zero = [(i,) for i, v in configs if min(json.loads(v)["slots_per_layer"]) == 0]
        assert zero
        c.executemany("UPDATE trials SET state = 'FAIL' WHERE trial_id = ?", zero)
    r = advisor("report", "bundled-example", "--storage", str(db), "--memory", "0.001%", "-o", "rep", cwd=tmp_path)
    line = one_error_line(r, "--memory 0.001% (1.23 MiB): no stored trial fits it",
                          "the least peak GPU memory among the study's trials is")
    assert " MiB (counted, trial #" in line, line
    assert "loading" not in r.stdout + r.stderr and not (tmp_path / "rep").exists(), r.stdout + r.stderr


def test_the_recipe_of_a_model_without_tokenizer_says_it_does_not_use_the_prompt(tmp_path, monkeypatch):
    """`python recipe.py "hello"` for a model without a tokenizer (a tiny:* model, a checkpoint without one)
    decoded seeded random ids and printed their continuation as if it answered "hello". It now says on stderr
    that the prompt is not used; without a prompt it stays quiet. The study is tuned in this process (CliRunner):
    a subprocess paid ~8 s of CPU importing torch and transformers; the export and the recipe run as a user's."""
    db = tmp_path / "s.db"
    monkeypatch.chdir(tmp_path)
    t = CliRunner().invoke(app, ["tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1", "--storage", str(db),
                                 "--study", "q"])
    assert t.exit_code == 0, t.output
    recipe = tmp_path / "recipe.py"
    r = advisor("export", "q", "0", "--to", "hf", "-o", str(recipe), "--storage", str(db), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = subprocess.run([sys.executable, str(recipe), "hello"], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "expert cache: hit rate" in run.stdout, run.stdout
    assert "note: the model has no tokenizer, so the prompt is not used" in run.stderr, run.stderr
    quiet = subprocess.run([sys.executable, str(recipe)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert quiet.returncode == 0 and "prompt is not used" not in quiet.stderr, quiet.stderr


def test_export_from_recommend_with_nothing_to_export_leads_with_why(tmp_path):
    """`export --from-recommend --budget 1KiB` said "error: nothing to export: no accuracy floor given: within
    0.01 ...", as if the missing floor were the cause; the cause (nothing fits, what more memory would hold) was
    at the end of a 600-character line. It leads now; the defaults recommend assumed follow."""
    example = Path(__file__).parent.parent / "studies" / "example" / "advisor.db"
    r = advisor("export", "--from-recommend", "--to", "json", "--budget", "1KiB", "--storage", str(example),
                cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # the input was fine: as `recommend` answers it (test_cli_new_user17)
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: nothing to export: nothing fits: all "), line
    assert "no accuracy floor given" in line and "Traceback" not in r.stderr, r.stderr
    assert line.index("more memory:") < line.index("no accuracy floor given"), line


def test_a_cpu_profile_given_as_gpu_budgets_no_gpu_memory_with_the_hosts_ram(tmp_path, monkeypatch):
    """`advisor profile --cpu --name myhost` stores the host's RAM as the profile's memory (there is no GPU);
    `tune --gpu myhost` (the README's way to use a measured link) then tuned under a "GPU budget" of the host's
    23.59 GiB, where every configuration fits, and `recommend --gpu myhost` checked memory against it. The RAM is
    no GPU budget: tune keeps the space's default budget and says why, recommend says memory was not checked."""
    import os
    import re

    pp = tmp_path / "pp"
    r = advisor_in_process("profile", "--cpu", "--repeats", "1", "--profiles-dir", str(pp), "--name", "myhost",
                           cwd=tmp_path)  # in this process, as the tune below: a subprocess imported torch again
    assert r.returncode == 0, r.stdout + r.stderr
    env = {**os.environ, "ADVISOR_PROFILES_DIR": str(pp), "COLUMNS": "400"}
    monkeypatch.chdir(tmp_path)  # the tune in this process (CliRunner): a subprocess paid ~8 s importing torch
    run = CliRunner(env={"ADVISOR_PROFILES_DIR": str(pp), "COLUMNS": "400"}).invoke(
        app, ["tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1", "--gpu", "myhost", "--storage",
              str(tmp_path / "s.db"), "--study", "g"])
    assert run.exit_code == 0, run.output
    text = " ".join(run.stdout.split())
    assert "budget: 112.05 KiB (0.6 x the model's counted bytes, quick space default)" in text, text
    note = re.compile(r"note: --gpu myhost is a CPU profile \(`advisor profile --cpu`: a host memcpy, no GPU\): its "
                      r"link and CPU expert times price the study, but its [\d.]+ GiB is this host's RAM")
    assert note.search(text), text
    again = CliRunner(env={"ADVISOR_PROFILES_DIR": str(pp), "COLUMNS": "400"}).invoke(  # the short path says it too
        app, ["tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1", "--gpu", "myhost", "--storage",
              str(tmp_path / "s.db"), "--study", "g"])
    text = " ".join(again.stdout.split())
    assert again.exit_code == 0 and "nothing to run" in text and "loading" not in text and note.search(text), text
    shares = CliRunner(env={"ADVISOR_PROFILES_DIR": str(pp), "COLUMNS": "400"}).invoke(  # --budgets set the budget:
        app, ["tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1", "--gpu", "myhost", "--budgets", "50%",
              "--storage", str(tmp_path / "s.db"), "--study", "b"])  # no note asking for --budget
    text = " ".join(shares.stdout.split())
    assert shares.exit_code == 0 and "(the largest of --budgets)" in text and "CPU profile" not in text, text
    example = Path(__file__).parent.parent / "studies" / "example" / "advisor.db"
    rec = subprocess.run([sys.executable, "-m", "advisor", "recommend", "--storage", str(example), "--gpu", "myhost"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    text = " ".join(rec.stdout.split())
    assert "--gpu myhost is a CPU profile" in text and "memory not checked" in text, text
    assert "Pareto front fits" not in text and not re.search(r"fits [\d.]+ GiB", text), text


def test_a_budget_above_the_named_gpus_memory_is_refused(tmp_path):
    """`recommend --gpu 'RTX 4090' --budget 30GiB` answered "every stored configuration fits 30.0 GiB" for a
    24 GiB card, and `tune` took the same pair; a typo in the budget went unnoticed. Both refuse it in one line
    (tune before the model loads); a budget within the card is taken as before."""
    example = Path(__file__).parent.parent / "studies" / "example" / "advisor.db"
    for cmd in (("recommend", "--storage", str(example)), ("tune", "--storage", str(tmp_path / "s.db"))):
        r = advisor(*cmd, "--gpu", "RTX 4090", "--budget", "30GiB", cwd=tmp_path)
        one_error_line(r, "30.00 GiB (--budget 30GiB) is more than the RTX 4090 24GB's memory (24.00 GiB, "
                       "catalogue")
        assert "advisor tune" not in r.stdout
    assert not (tmp_path / "s.db").exists()
    ok = advisor("recommend", "--storage", str(example), "--gpu", "RTX 4090", "--budget", "2MiB", cwd=tmp_path)
    assert ok.returncode == 0 and "fits 2.00 MiB" in ok.stdout, ok.stdout + ok.stderr
