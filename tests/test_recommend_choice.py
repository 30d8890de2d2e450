"""`recommend`: the choice under budget + floor, its reasons, nothing-fits advice, bad databases, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import advisor_entry, flat
from recommend_helpers import GiB, make_db, model_meta, point, standard_front

from advisor.errors import UserError
from advisor.hardware.profiles import get_gpu
from advisor.recommend import Query, load_points, recommend, reference_point, render


def test_picks_lowest_transfer_that_fits_and_meets_relative_floor():
    rec = recommend(standard_front(), Query(budget_bytes=12 * GiB, max_accuracy_drop=0.02))
    assert rec.chosen.point.trial_number == 2  # int8, 4 slots: 9.1 GiB, 0.91 >= 0.92 - 0.02
    text = " | ".join(rec.reasons)
    assert "fits 12.00 GiB: uses 9.100 GiB (counted)" in text
    assert "accuracy 0.910 (measured) >= floor 0.900" in text and "trial #0" in text
    assert "among 3 feasible" in text and "next best s1#3 has 1.30x the transfer" in text
    assert "1 exceed memory" in text and "2 fall below the floor" in text


def test_reference_is_highest_precision_uniform_plan():
    pts = standard_front()
    ref = reference_point(pts)
    assert (ref.trial, ref.accuracy) == (0, 0.92) and "uniform bf16" in ref.how
    no_uniform = [p for p in pts if p.trial_number == 5]
    ref = reference_point(no_uniform)
    assert ref.trial == 5 and "most accurate point" in ref.how


def test_absolute_floor_and_preferences():
    pts = standard_front()
    assert recommend(pts, Query(budget_bytes=12 * GiB, min_accuracy=0.85)).chosen.point.trial_number == 5
    assert recommend(pts, Query(budget_bytes=12 * GiB, prefer="accuracy")).chosen.point.trial_number == 1
    assert recommend(pts, Query(budget_bytes=12 * GiB, prefer="latency", min_accuracy=0.0)).chosen.point.trial_number == 4
    assert recommend(pts, Query()).chosen.point.trial_number == 0  # no budget: memory not checked
    with pytest.raises(UserError, match="unknown preference"):
        recommend(pts, Query(prefer="speed"))
    with pytest.raises(UserError, match="between 0 and 1"):
        recommend(pts, Query(min_accuracy=91))


def test_an_accuracy_tie_goes_to_the_fastest_point():
    """Every point fits, so the most accurate wins; among equally accurate ones the lowest time per token, not
    the fewest H2D bytes (on the H200 this chose misses on the CPU at 123.5 ms/token over hybrid at 76.2)."""
    pts = standard_front()
    pts[1].values["time_per_token"], pts[0].values["time_per_token"] = 1.0, 3.0  # both bf16, accuracy 0.92
    rec = recommend(pts, Query(budget_bytes=40 * GiB))
    assert rec.chosen.point.trial_number == 1  # more H2D bytes than #0, but faster
    assert "ties: lowest time per token" in render(rec)
    assert "has the same accuracy 0.920 (measured) and 3.00x the time per token (source not recorded)" in render(rec)


def test_gpu_budget_and_modelled_transfer_on_target():
    gpu = get_gpu("RTX 3060 12GB", "/nonexistent")  # 12 GiB, PCIe 4.0 x16 nominal
    rec = recommend(standard_front(), Query(gpu=gpu, max_accuracy_drop=0.02))
    assert rec.chosen.point.trial_number == 2
    d = rec.to_dict()
    mt = d["chosen"]["modelled_on_target"]
    assert mt["transfer_ms_per_token"] == pytest.approx(20e6 / 25e9 * 1e3)
    assert "RTX 3060 12GB" in mt["source"] and "catalogue (nominal)" in mt["source"]
    out = render(rec)
    assert "[counted]" in out and "[measured:exact-match n=64]" in out and "transfer on target" in out


def test_nothing_fits_says_what_to_change():
    rec = recommend(standard_front(), Query(budget_bytes=4 * GiB, min_accuracy=0.9))
    assert rec.chosen is None
    text = " | ".join(rec.reasons)
    assert "more memory: s1#3 meets the accuracy floor with 6.000 GiB (counted; 2.000 GiB over the budget)" in text
    assert rec.closest[0]["change"] == "memory"
    rec = recommend(standard_front(), Query(budget_bytes=10 * GiB, min_accuracy=0.95))
    assert "lower floor: s1#2 fits with accuracy 0.910" in " | ".join(rec.reasons)


def test_filters_and_unmatched_filter_lists_what_exists():
    other = [point("s2", 0, "int8", 2, acc=0.5, h2d=1e6, peak_gib=1, task="gsm8k", model="other-model")]
    pts = standard_front() + other
    assert recommend(pts, Query(task="gsm8k")).chosen.point.study_name == "s2"
    assert recommend(pts, Query(model="tiny")).chosen.point.study_name == "s1"
    with pytest.raises(UserError, match="no front point matches task='humaneval'; stored models: other-model, tiny-llada"):
        recommend(pts, Query(task="humaneval"))


def test_load_points_errors(tmp_path):
    with pytest.raises(UserError, match="no advisor database at"):
        load_points(str(tmp_path / "missing.db"))
    (tmp_path / "junk.db").write_text("this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a readable advisor database"):
        load_points(str(tmp_path / "junk.db"))
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").execute("create table t(x)").connection.commit()
    with pytest.raises(UserError, match=r"empty\.db is another program's database \(tables t\), not an advisor"):
        load_points(str(tmp_path / "empty.db"))
    url = make_db(tmp_path / "ok.db", standard_front())
    assert len(load_points(url)) == 6 and len(load_points(url, "s1")) == 6
    # the same file as a plain path and with a SQLite query string (read-only mode) reads the same front
    assert len(load_points(str(tmp_path / "ok.db"))) == 6
    assert len(load_points(f"{url}?mode=ro")) == 6


def _process(*args):
    """`advisor ARGS` in a fresh process, for the exit codes a shell sees."""
    return subprocess.run([sys.executable, "-c", "from advisor.cli import run; run()", *args],
                          capture_output=True, text=True)


def _cli(*args, cwd=None):
    """`advisor ARGS` through the console entry point in this process (`advisor_entry`: a refusal is still its
    one `error:` line and exit 2): what these tests check is what recommend prints (a subprocess per call paid
    ~1 s of CPU for Python and the CLI's imports)."""
    return advisor_entry(*args, cwd=cwd or Path.cwd())


def test_cli_json_and_exit_codes(tmp_path):
    url = make_db(tmp_path / "a.db", standard_front())
    r = _process("recommend", "--storage", url, "--budget", "12GiB", "--max-accuracy-drop", "0.02", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["chosen"]["trial"] == 2 and d["chosen"]["sources"]["h2d_bytes_per_token"] == "counted"
    assert d["query"]["budget_bytes"] == 12 * GiB
    r = _process("recommend", "--storage", url, "--budget", "1GiB", "--min-accuracy", "0.9")
    assert r.returncode == 1 and "more memory" in r.stdout
    for args, msg in [(("--budget", "12 potatoes"), "is not a size"), (("--gpu", "RTX 9999"), "unknown GPU"),
                      (("--storage", str(tmp_path / "nope.db")), "no advisor database")]:
        r = _process("recommend", "--storage", url, *args) if args[0] != "--storage" else _process("recommend", *args)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_recommend_never_imports_torch(tmp_path):
    url = make_db(tmp_path / "a.db", standard_front(meta=model_meta("qwen3_moe")))
    code = ("import sys\nfrom advisor.cli import app\n"
            f"try:\n    app(['recommend', '--storage', {url!r}, '--budget', '12GiB'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers') if m in sys.modules))\n"
            "print('SQLALCHEMY', 'sqlalchemy' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Recommended" in r.stdout and "HEAVY []" in r.stdout, r.stdout + r.stderr
    assert "SQLALCHEMY False" in r.stdout, r.stdout[-500:]  # SQLite: the stdlib fast path (advisor.results.read)


def test_default_floor_is_one_point_below_the_highest_precision_point():
    rec = recommend(standard_front(), Query(budget_bytes=12 * GiB))  # no floor given; bf16 needs 20 GiB
    assert rec.chosen.point.trial_number == 2 and rec.query.prefer == "transfer"  # not int4 (0.80)
    text = " | ".join(rec.reasons)
    assert "no accuracy floor given: within 0.01 (1 accuracy point)" in text
    assert "accuracy 0.910 (measured) >= floor 0.910 (= 0.920 of trial #0, measured, minus 0.01; trial #0: uniform bf16" in text


def test_when_everything_fits_the_most_accurate_wins(tmp_path):
    rec = recommend(standard_front(), Query(gpu=get_gpu("RTX 4090", "/nonexistent")))  # 24 GiB: all fit
    assert rec.chosen.point.trial_number == 0  # bf16, 0.92, and of the two 0.92 points the one moving nothing
    assert "every configuration on the stored Pareto front fits" in rec.reasons[1] and "most accurate wins" in rec.reasons[1]
    url = make_db(tmp_path / "a.db", standard_front())
    r = subprocess.run([sys.executable, "-m", "advisor", "recommend", "--gpu", "RTX 4090", "--storage", url],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "trial #0" in r.stdout and "most accurate wins" in r.stdout, r.stdout + r.stderr
    rec = recommend(standard_front(), Query(gpu=get_gpu("RTX 4090", "/nonexistent"), prefer="transfer"))
    assert rec.chosen.point.trial_number == 0  # h2d 0 is also the lowest transfer


def test_reference_note_is_true_when_no_full_precision_point_is_on_the_front():
    pts = [p for p in standard_front() if p.trial_number in (2, 4)]
    ref = reference_point(pts)
    assert ref.trial == 2 and "no bf16/fp16/fp32 point on the stored Pareto front" in ref.how


def test_transfer_on_target_includes_the_per_copy_latency():
    p = point("s1", 7, "int8", 4, acc=0.91, h2d=20e6, peak_gib=9.0)
    p.values["transfer_ms_per_token"] = 20e6 / 25e9 * 1e3 + 100 * 10 / 1e3  # 100 copies/token at 10 us each
    gpu = get_gpu("RTX 4090", "/nonexistent")
    mt = recommend([p], Query(gpu=gpu)).to_dict()["chosen"]["modelled_on_target"]
    assert mt["copies_per_token"] == pytest.approx(100)
    assert mt["transfer_ms_per_token"] == pytest.approx(gpu.transfer_ms(20e6, copies=100))
    assert mt["transfer_ms_per_token"] > gpu.transfer_ms(20e6, copies=0) + 0.5 * 100 * gpu.copy_latency_us / 1e3
    p.values["copies_per_token"] = 40.0  # recorded by newer studies: used as is
    mt = recommend([p], Query(gpu=gpu)).to_dict()["chosen"]["modelled_on_target"]
    assert mt["transfer_ms_per_token"] == pytest.approx(gpu.transfer_ms(20e6, copies=40))


def test_latency_preference_ranks_by_time_per_token_and_shows_its_source():
    from advisor.recommend import render

    pts = [point("s", n, "int8", 4, acc=0.9, h2d=1e6, peak_gib=3, latency=5.0) for n in (1, 2)]
    for p, t in zip(pts, (0.8, 0.4), strict=True):  # trial 2 is faster per the time model
        p.values["time_per_token"] = t
        p.sources["time_per_token"] = "modelled:gpu=x;copies=y;cpu=measured:wall-clock(z)"
        p.config["miss_policy"] = "cpu"
    rec = recommend(pts, Query(budget_bytes=12 * GiB, prefer="latency"))
    assert rec.chosen.point.trial_number == 2
    text = render(rec)
    assert "2.00x the time per token" in text and "misses cpu" in text
    assert "time_per_token" in text and "modelled:gpu=x;copies=y;cpu=measured:wall-clock(z)" in text


def test_the_fast_sqlite_reader_reads_what_the_sqlalchemy_store_wrote(tmp_path):
    """`advisor.results.read` lists FrontRow's columns by hand (to stay off SQLAlchemy): both readers must give
    the same points, of one study and of all, on a database the store wrote and on the committed example."""
    from pathlib import Path

    from advisor.results.read import read_fronts
    from advisor.results.store import engine_for, load_fronts

    example = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    written = make_db(tmp_path / "a.db", standard_front())
    for url in (written, f"sqlite:///{example}"):
        engine = engine_for(url)
        for study in (None, load_fronts(engine)[0].study_name):
            slow = load_fronts(engine, study)
            assert slow and read_fronts(url, study) == slow
        engine.dispose()


def _fidelity_points(rows: list[tuple[float, float, float]]) -> list:
    """Points of a fidelity study "fid" (no task accuracy stored): (top-1 agreement, H2D bytes, peak GiB) each."""
    import dataclasses

    pts = []
    for trial, (top1, h2d, gib) in enumerate(rows):
        p = point("fid", trial, "int8", 4, acc=0.0, h2d=h2d, peak_gib=gib)
        values = {k: v for k, v in p.values.items() if k != "accuracy"} | {"fidelity_top1": top1}
        sources = {k: v for k, v in p.sources.items() if k != "accuracy"} | {"fidelity_top1": "measured:logits-vs-bf16"}
        pts.append(dataclasses.replace(p, values=values, sources=sources))
    return pts


def test_a_fidelity_study_ranks_by_top1_agreement_and_says_so(tmp_path):
    """A study of a checkpoint without a tokenizer stores fidelity, not accuracy: recommend ranks by top-1
    agreement with full precision, says that it does and that accuracy floors cannot apply, and names how far
    the next best point is (it printed "next best ... has " and nothing more, and "the most accurate wins")."""
    url = make_db(tmp_path / "f.db", _fidelity_points([(0.97, 40e6, 1.0), (0.97, 2e6, 1.0), (0.80, 1e6, 1.0)]))
    r = _cli("recommend", "--storage", url, "--budget", "2GiB")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trial #1" in r.stdout.splitlines()[0]  # as faithful as #0, moving 20x less
    text = " ".join(r.stdout.split())
    assert "top-1 agreement with full precision stands in for accuracy" in text
    assert "the most faithful wins" in text and "most accurate" not in text and "1 accuracy point" not in text
    assert "highest top-1 agreement with full precision among 3 feasible point(s)" in text
    assert "next best fid#0 has the same top-1 agreement 0.970 (measured) and 20.00x the transfer (counted)" in text
    r = _cli("recommend", "--storage", url, "--budget", "2GiB", "--min-accuracy", "0.5")
    assert r.returncode == 2 and "stores no task accuracy" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_fidelity_study_over_the_budget_names_no_accuracy_floor_for_more_memory(tmp_path):
    """`recommend --budget` on a fidelity study (no tokenizer) where nothing fits said "no accuracy floor
    applies" and then "more memory: ...#1 meets the accuracy floor with 1.5 GiB": a floor it had just said
    does not exist. It says what the point needs instead."""
    url = make_db(tmp_path / "f.db", _fidelity_points([(0.97, 1e6, 2.0), (0.80, 1e6, 1.5)]))
    r = _cli("recommend", "--storage", url, "--budget", "1GiB")
    assert r.returncode == 1, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert "no accuracy floor applies" in text and "accuracy floor with" not in text, text
    assert "more memory: fid#1 needs 1.500 GiB (counted; 512.000 MiB over the budget)" in text, text


def test_nothing_fits_a_budget_below_the_studys_says_a_study_at_that_budget_would_search_it(tmp_path):
    """`recommend --budget 10MiB` of a study tuned within 12 MiB (a GPU smaller than the one tuned for) said only
    "more memory: ... e.g. --budget 11.85MiB", which that GPU cannot take: the study's draws fill its own budget,
    so none within 10 MiB were stored. It now says so and that a study tuned at that budget searches within it;
    where a point fits, nothing of the kind is said."""
    import dataclasses

    pts = [dataclasses.replace(p, budget_bytes=2.0 * GiB)
           for p in _fidelity_points([(0.97, 1e6, 2.0), (0.80, 1e6, 1.9)])]
    url = make_db(tmp_path / "f.db", pts)
    r = _cli("recommend", "--storage", url, "--budget", "1GiB")
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("- the study was tuned within 2.00 GiB, more than the 1.00 GiB (--budget 1GiB) asked about: its "
            "configurations were drawn to fill that budget, and none stored fits 1.00 GiB; tune a study with that "
            "--budget (or --budgets) to search within it") in flat(r.stdout), r.stdout
    r = _cli("recommend", "--storage", url, "--budget", "1.95GiB")  # a point fits: nothing to say of the others
    assert r.returncode == 0 and "tuned within" not in r.stdout, r.stdout


def test_a_fidelity_study_where_nothing_fits_speaks_of_no_pick(tmp_path):
    """Where nothing fits, the no-floor reason still said "so the pick may agree with full precision far less
    than other points do - see its fidelity_top1": there is no pick. It says what having no floor meant for
    the points instead (none was excluded for its agreement); with a pick it keeps the warning."""
    url = make_db(tmp_path / "f.db", _fidelity_points([(0.97, 1e6, 2.0), (0.80, 1e6, 1.5)]))
    r = _cli("recommend", "--storage", url, "--budget", "1GiB")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "pick" not in r.stdout, r.stdout
    assert ("- no accuracy floor applies (not the default 1 point below the full-precision point: there is no "
            "task accuracy), so none was excluded for its top-1 agreement with full precision; --prefer accuracy "
            "ranks by top-1 agreement") in flat(r.stdout), r.stdout
    r = _cli("recommend", "--storage", url, "--budget", "1.5GiB")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "so the pick may agree with full precision far less than other points do" in flat(r.stdout), r.stdout


def test_fidelity_does_not_break_accuracy_ties_in_an_accuracy_study():
    """Accuracy studies store fidelity too (the fidelity stage runs first): equal accuracy still goes to the
    lowest H2D bytes, as "ties: lowest H2D bytes/token" says, not to the higher top-1 agreement."""
    import dataclasses

    pts = []
    for trial, (top1, h2d) in enumerate([(1.0, 40e6), (0.95, 2e6), (0.90, 1e6)]):
        p = point("acc", trial, "int8", 4, acc=0.90, h2d=h2d, peak_gib=1.0)
        pts.append(dataclasses.replace(p, values=p.values | {"fidelity_top1": top1}))
    rec = recommend(pts, Query(budget_bytes=2 * GiB))
    assert rec.query.prefer == "accuracy" and rec.chosen.point.trial_number == 2
    assert any("next best acc#1 has the same accuracy 0.900 (measured) and 2.00x the transfer (counted)" in r for r in rec.reasons)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_non_finite_value_is_stored_without_it_and_said_in_its_source(tmp_path, backend):
    """PostgreSQL's JSON has no NaN: a front holding one NaN measurement (a KL of a model that overflowed) was
    refused whole, so the tuner lost its front. Both backends now store the point without that value and its
    source says why; recommend reads it back."""
    import os
    import uuid

    from advisor.results.store import engine_for, load_fronts, save_front

    study = f"nan-{uuid.uuid4().hex[:8]}"
    front = standard_front(study)
    front[2].values["fidelity_kl"] = float("nan")
    front[2].sources["fidelity_kl"] = "measured:logits-vs-fp32"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'a.db'}"
    else:
        url = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    engine = engine_for(url)
    try:
        assert save_front(engine, study, front) == 6
        stored = {p.trial_number: p for p in load_fronts(engine, study)}
        assert "fidelity_kl" not in stored[2].values and stored[2].values["accuracy"] == 0.91
        assert stored[2].sources["fidelity_kl"] == "measured:logits-vs-fp32; not stored: nan is not a finite number"
        r = _cli("recommend", "--storage", url, "--study", study, "--budget", "12GiB", "--max-accuracy-drop", "0.02",
                 "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["chosen"]["trial"] == 2
        # the accuracy cache keeps no such measurement (the same plan is measured again), rather than failing
        from advisor.results.evalcache import CacheKey, EvalCache

        key = CacheKey(study, "toy", "plan0", "s", "fidelity")
        EvalCache(engine).put(key, {"fidelity_kl": float("inf")}, {}, device="cpu", seconds=1.0, study_name=study)
        assert EvalCache(engine).get(key) is None
    finally:
        save_front(engine, study, [])
        engine.dispose()


def test_a_nan_accuracy_in_a_stored_sqlite_front_reads_as_not_stored(tmp_path):
    """A SQLite front written before non-finite values were left out, or edited by hand, can hold a NaN accuracy
    (its JSON reads 'NaN' back): `recommend`, `pareto` and `report` crashed on it in the accuracy's interval
    (`round(nan)`), and without that recommend said 'accuracy nan (measured) >= floor' and recommended the point.
    A non-finite stored value now reads as not stored, its source saying so, as the writer stores it."""
    import shutil
    import sqlite3

    from example_study import EXAMPLE_DB

    db = tmp_path / "s.db"
    shutil.copy(EXAMPLE_DB, db)
    with sqlite3.connect(db) as con:
        best = json.loads(advisor_entry("recommend", "--storage", str(EXAMPLE_DB), "--json", cwd=tmp_path).stdout)
        number = best["chosen"]["trial"]
        (row, values), = con.execute('SELECT id, "values" FROM advisor_front WHERE trial_number = ?', (number,))
        con.execute('UPDATE advisor_front SET "values" = ? WHERE id = ?',
                    (json.dumps({**json.loads(values), "accuracy": float("nan")}), row))
    r = advisor_entry("recommend", "--storage", str(db), cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"trial #{number} " not in r.stdout and "accuracy nan" not in flat(r.stdout), r.stdout
    r = advisor_entry("recommend", "--storage", str(db), "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["chosen"]["trial"] != number, r.stdout
    r = advisor_entry("pareto", "bundled-example", "--storage", str(db), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "accuracy * -" in flat(r.stdout.split(f"trial {number}:")[1].split("trial ")[0]), r.stdout


def test_the_more_drop_it_suggests_admits_the_point(tmp_path):
    """`allow X more drop` is what a user adds to --max-accuracy-drop: it must admit the point it names
    (0.9375 under a 0.95875 floor is 0.0215 short; 0.021, rounded to nearest, still excluded it)."""
    m = model_meta()
    url = make_db(tmp_path / "a.db", [point("s1", 0, "bf16", 8, acc=0.96875, h2d=0.0, peak_gib=20.0, meta=m),
                                      point("s1", 1, "int4", 2, acc=0.9375, h2d=1e6, peak_gib=1.0, meta=m)])
    r = _cli("recommend", "--storage", url, "--budget", "2GiB", "--max-accuracy-drop", "0.01")
    assert r.returncode == 1, r.stdout + r.stderr
    extra = float(flat(r.stdout).split("allow ")[1].split(" more drop")[0])
    r = _cli("recommend", "--storage", url, "--budget", "2GiB", "--max-accuracy-drop", str(0.01 + extra), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["chosen"]["trial"] == 1


def test_a_small_transfer_is_shown_in_units_that_do_not_round_it_to_zero(tmp_path):
    """A tiny model moves hundreds of bytes per token: its stored value must not print as 0.000 MiB."""
    url = make_db(tmp_path / "a.db", [point("s1", 0, "bf16", 8, acc=0.9, h2d=512.0, peak_gib=1.0)])
    r = _cli("recommend", "--storage", url, "--budget", "2GiB")
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("h2d_bytes_per_token"))
    assert "512 B" in line and "0.000" not in line, line


def test_a_mistyped_study_names_the_studies_there(tmp_path):
    """`export bundled-toy-quik 3` (or `recommend --study` with a typo) said only "run `advisor tune` first",
    as if the database were empty; `pareto` lists the studies, and so do these now, in one line, exit 2."""
    url = make_db(tmp_path / "a.db", standard_front("bundled-toy-quick"))
    for args in (("export", "bundled-toy-quik", "3", "--to", "json"), ("recommend", "--study", "bundled-toy-quik")):
        r = _cli(*args, "--storage", url, cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "studies with a front there: bundled-toy-quick" in r.stderr and "run `advisor tune`" not in r.stderr


def test_a_floor_that_excludes_every_point_is_not_called_nothing_fits(tmp_path):
    """With every point within the budget and all below --min-accuracy, the first reason said "nothing fits",
    which reads as memory; it says the floor now (exit 1: the input was fine)."""
    url = make_db(tmp_path / "a.db", standard_front())
    r = _cli("recommend", "--storage", url, "--budget", "24GiB", "--min-accuracy", "0.99")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nothing fits" not in r.stdout, r.stdout
    assert "all 6 point(s) fall below the accuracy floor (every one fits the memory)" in r.stdout, r.stdout
    r = _cli("recommend", "--storage", url, "--budget", "1GiB", "--min-accuracy", "0.99")
    assert "(6 exceed the memory budget of 1.00 GiB (--budget 1GiB), 6 fall below the accuracy floor)" in flat(r.stdout), \
        r.stdout


def test_points_that_record_no_peak_are_not_said_to_exceed_the_budget(tmp_path):
    """A point that records no peak GPU memory is left out under a --budget (it cannot be compared), but the reason
    counted it among those that "exceed the memory budget", and with every recorded one fitting, said so of all of
    them; with the floor excluding the rest, "every one fits the memory". Each is counted as what it is now."""
    front = standard_front()
    for p in front[:2]:
        del p.values["peak_gpu_bytes"]
    url = make_db(tmp_path / "a.db", front)
    r = _cli("recommend", "--storage", url, "--budget", "1GiB", "--max-accuracy-drop", "0.5")
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("nothing fits: all 6 point(s) excluded (4 exceed the memory budget of 1.00 GiB (--budget 1GiB), 2 record no "
            "peak GPU memory to compare with it)") in flat(r.stdout), r.stdout
    r = _cli("recommend", "--storage", url, "--budget", "24GiB", "--min-accuracy", "0.99")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "every one fits the memory" not in flat(r.stdout), r.stdout
    assert "(2 record no peak GPU memory to compare with it, 6 fall below the accuracy floor)" in flat(r.stdout), r.stdout


def test_fronts_of_several_models_are_not_ranked_against_each_other(tmp_path):
    """The README's flow stores the bundled model's study and a tiny fidelity study in one database; `recommend
    --budget` then ranked the tiny random model's bytes against the bundled model's and recommended it (its
    points store no accuracy, so no floor applied). Now one line asks which model; an exact --model picks it
    even when it is part of another model's name."""
    import dataclasses

    tiny = [dataclasses.replace(p, study_name="t", model="tiny-llada-v2", values={**p.values, "h2d_bytes_per_token": 1.0})
            for p in standard_front("t")]
    url = make_db(tmp_path / "a.db", standard_front("s1") + tiny)
    r = _cli("recommend", "--storage", url, "--budget", "12GiB")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stdout + r.stderr
    assert "2 models (tiny-llada, tiny-llada-v2)" in r.stderr and "--model NAME or --study NAME" in r.stderr, r.stderr
    r = _cli("recommend", "--storage", url, "--budget", "12GiB", "--model", "tiny-llada", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chosen"]["study"] == "s1"


@pytest.mark.postgres
def test_the_printed_export_command_runs_as_printed_on_postgresql():
    """recommend's `Export it: advisor export ... --storage URL` showed the password as '***', which libpq then
    sent as the password: the command failed as printed on a server that checks passwords. The password is now
    left out of the URL (libpq reads PGPASSWORD or ~/.pgpass), and the printed command runs."""
    import os
    import shlex
    import uuid

    from advisor.results.store import engine_for, save_front

    url = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    password = url.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
    study = f"hint-{uuid.uuid4().hex[:8]}"
    engine = engine_for(url)
    try:
        save_front(engine, study, standard_front(study))
        r = _cli("recommend", "--storage", url, "--study", study, "--budget", "12GiB", "--max-accuracy-drop", "0.02")
        assert r.returncode == 0, r.stderr
        line = " ".join(r.stdout.split()).split("Export it: ")[1].split(" --to ")[0]
        assert "***" not in line and (not password or f":{password}@" not in line), line
        args = shlex.split(line)[1:] + ["--to", "json"]
        out = subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True,
                             env={**os.environ, "PGPASSWORD": password})
        assert out.returncode == 0 and json.loads(out.stdout)["source"]["study"] == study, out.stderr
    finally:
        save_front(engine, study, [])
        engine.dispose()


def test_a_relative_floor_below_zero_is_printed_as_zero(tmp_path):
    """A drop larger than the reference's accuracy (or a study whose every accuracy is 0, under the default drop)
    printed "floor -0.020" - no accuracy; the floor is 0 now, and the line says why."""
    m = model_meta()
    url = make_db(tmp_path / "a.db", [point("s1", 0, "bf16", 8, acc=0.03, h2d=0.0, peak_gib=2.0, meta=m),
                                      point("s1", 1, "int4", 2, acc=0.0, h2d=1e6, peak_gib=1.0, meta=m)])
    r = _cli("recommend", "--storage", url, "--budget", "1.5GiB", "--max-accuracy-drop", "0.05")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "accuracy 0.000 (measured) >= floor 0.000 (0.030 of trial #0, measured, minus 0.05 is below 0, so 0: no accuracy is " \
           "excluded; trial #0: uniform bf16 plan" in flat(r.stdout), r.stdout
    assert "floor -" not in r.stdout, r.stdout
    r = _cli("recommend", "--storage", url, "--budget", "1.5GiB", "--max-accuracy-drop", "0.05", "--json")
    assert json.loads(r.stdout)["chosen"]["accuracy_floor"] == 0.0, r.stdout
    zero = make_db(tmp_path / "z.db", [point("z", 0, "bf16", 8, acc=0.0, h2d=0.0, peak_gib=2.0, meta=m),
                                       point("z", 1, "int4", 2, acc=0.0, h2d=1e6, peak_gib=1.0, meta=m)])
    r = _cli("recommend", "--storage", zero, "--budget", "1.5GiB")  # the default drop, 0.01, below an accuracy of 0
    assert r.returncode == 0 and "floor 0.000 (0.000 of trial #0, measured, minus 0.01 is below 0" in flat(r.stdout), r.stdout


def test_whether_a_study_is_judged_by_fidelity_is_one_rule_for_recommend_and_the_report():
    """`advisor recommend` (its points) and `advisor report` (its trials) each wrote out the rule that a study
    storing no task accuracy but top-1 agreement (a model without a tokenizer) is judged by fidelity_top1: two
    copies free to drift, so the report could plot one quality and recommend rank by another. One helper in
    the results layer, below both, decides for both."""
    import importlib
    from types import SimpleNamespace as R

    front = importlib.import_module("advisor.results.front")
    users = [importlib.import_module(m) for m in ("advisor.recommend", "advisor.report.document",
                                                  "advisor.report.study")]
    assert all(m.quality_metric is front.quality_metric for m in users)
    assert not hasattr(importlib.import_module("advisor.report.select"), "quality_metric")
    judge = front.quality_metric
    assert judge([R(values={"fidelity_top1": 0.9}), R(values={"h2d_bytes_per_token": 1.0})]) == "fidelity_top1"
    assert judge([R(values={"fidelity_top1": 0.9}), R(values={"accuracy": 0.5})]) == "accuracy"
    assert judge([R(values={"h2d_bytes_per_token": 1.0})]) == judge([]) == "accuracy"


def test_recommend_budget_names_its_option_and_sends_a_share_to_report(tmp_path):
    """`recommend --budget 50%` said "budget '50%' is not a size": neither the option nor what takes a share
    (`report --memory`, of one study's model; recommend compares configurations of any model by their bytes)."""
    from typer.testing import CliRunner

    from advisor.cli import app

    url = make_db(tmp_path / "a.db", standard_front(meta=model_meta("qwen3_moe")))
    r = CliRunner().invoke(app, ["recommend", "--storage", url, "--budget", "50%"])
    assert isinstance(r.exception, UserError) and str(r.exception) == (
        "--budget takes a size (e.g. 24GiB), not a share: recommend compares stored configurations by their counted "
        "peak GPU bytes, of whatever model; for a share of one study's model, `advisor report STUDY --memory 50%`")
    r = CliRunner().invoke(app, ["recommend", "--storage", url, "--budget", "12 potatoes"])
    assert isinstance(r.exception, UserError) and str(r.exception).startswith("--budget '12 potatoes' is not a size")


def test_the_reference_is_the_studys_full_precision_format_as_report_names_it(tmp_path):
    """The floor was measured from the most accurate of the highest-precision uniform plans (bf16, fp16 alike;
    fp32 above them), while `report` measures every change from its baseline format's trial (the model's own
    16-bit format): a bf16 model's study read "vs BF16" in report but floored recommend at fp16's (or fp32's)
    accuracy. Both use `advisor.results.reference` now: the bf16 trial, named with its format, though fp16 and
    fp32 scored higher - so int4, within 0.05 of bf16, is no longer excluded."""
    m = model_meta()  # dtype bfloat16
    url = make_db(tmp_path / "a.db", [point("s1", 0, "fp16", 8, acc=0.70, h2d=0.0, peak_gib=2.0, meta=m),
                                      point("s1", 1, "bf16", 8, acc=0.60, h2d=0.0, peak_gib=2.0, meta=m),
                                      point("s1", 2, "int4", 2, acc=0.58, h2d=1e6, peak_gib=1.0, meta=m),
                                      point("s1", 3, "fp32", 8, acc=0.75, h2d=0.0, peak_gib=4.0, meta=m)])
    r = _cli("recommend", "--storage", url, "--budget", "1.5GiB", "--max-accuracy-drop", "0.05")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Recommended: study 's1', trial #2" in r.stdout, r.stdout
    assert ("floor 0.550 (= 0.600 of trial #1, measured, minus 0.05; trial #1: uniform bf16 plan (the study's "
            "full precision))") in flat(r.stdout), r.stdout


SCHEMA = Path(__file__).resolve().parents[1] / "advisor" / "export" / "SCHEMA.md"


def _documented_recommend_fields() -> set[str]:
    """The field names of SCHEMA.md's `advisor recommend --json` table (its first column, split at commas)."""
    text = SCHEMA.read_text()
    section = text.split("## `moe-advisor/recommendation@1`", 1)[1]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name.strip().strip("`") for row in rows for name in row.split(",")}


def test_every_field_recommend_json_prints_is_documented(tmp_path):
    """`recommend --json` printed fields (`references`, its `source`, ...) that nothing documented; SCHEMA.md now
    does, and a field added to the answer without a row there fails here: the top-level keys, the query's, each
    point's (a choice, with --gpu), a reference's, and a `closest` entry's (nothing fits)."""
    documented = _documented_recommend_fields()
    documented |= {name.split(".")[0] for name in documented}  # `counts`, documented by its fields
    url = make_db(tmp_path / "a.db", standard_front())
    r = _cli("recommend", "--storage", url, "--budget", "12GiB", "--gpu", "RTX 4090", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    chosen = json.loads(r.stdout)
    r = _cli("recommend", "--storage", url, "--budget", "1GiB", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    none = json.loads(r.stdout)
    assert chosen["references"] and chosen["chosen"]["modelled_on_target"] and none["closest"]
    printed = {*chosen, *none}
    printed |= {f"query.{k}" for k in chosen["query"]} | {f"counts.{k}" for k in chosen["counts"]}
    printed |= {f"point.{k}" for p in (chosen["chosen"], *chosen["alternatives"]) for k in p}
    printed |= {f"references.<study>.{k}" for ref in chosen["references"].values() for k in ref}
    missing = sorted(printed - documented)
    assert not missing, f"advisor/export/SCHEMA.md does not document {missing}"
    closest = next(line for line in SCHEMA.read_text().splitlines() if line.startswith("| `closest`"))
    assert all(k in closest for c in none["closest"] for k in c), none["closest"]  # its entries' fields, in words


def test_an_accuracy_says_its_interval_where_its_source_gives_the_sample_size():
    """The floor's line said 'accuracy 0.910 (measured) >= floor 0.900' whatever the sample: 0.91 of 64 examples
    is 0.81-0.96 (Wilson 95%), a floor passed by noise. Where the stored source names n and the accuracy is a
    count of it, the interval is said; an accuracy that is no count of n (an unbiased pass@1 over several
    samples) or a source without n gets none, rather than a made-up one."""
    pts = standard_front()
    for p in pts:
        p.sources["accuracy"] = "measured:exact-match:toy(n=64,cpu)"
    pts[2].values["accuracy"] = 58 / 64  # int8, 4 slots: the pick
    text = " | ".join(recommend(pts, Query(budget_bytes=12 * GiB, max_accuracy_drop=0.02)).reasons)
    assert "accuracy 0.906 (measured, n=64, 95% CI 0.810-0.956) >= floor 0.900" in text, text
    pts[2].values["accuracy"] = 0.9105  # 58.27 of 64: no count
    text = " | ".join(recommend(pts, Query(budget_bytes=12 * GiB, max_accuracy_drop=0.02)).reasons)
    assert "accuracy 0.910 (measured) >= floor 0.900" in text, text
