"""`recommend`'s accuracy reference is `report`'s: read from all the study's trials, not its stored front alone."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from cli_helpers import advisor, flat
from recommend_helpers import model_meta, point

from advisor.results.store import engine_for, save_front

OBJECTIVES = {"h2d_bytes_per_token": "minimize", "accuracy": "maximize", "peak_gpu_bytes": "minimize"}


def _study(db: Path | str, trials: list[tuple], front: list[int], baseline: dict[int, str] | None = None,
           dtype: str = "bfloat16") -> str:
    """An Optuna study as `advisor tune` stores it (config, values and sources as trial attributes), of `trials`
    (number, plan, slots, accuracy, H2D bytes, peak GiB), and a stored front of the trials `front` numbers; in the
    SQLite file `db`, or at the storage URL `db`."""
    import optuna

    from advisor.results.urls import normalize_url

    meta = {**model_meta(), "dtype": dtype}
    url = f"sqlite:///{db}" if isinstance(db, Path) else db
    study = optuna.create_study(study_name="s", storage=normalize_url(url), directions=[OBJECTIVES[m] for m in OBJECTIVES])
    with warnings.catch_warnings():  # Optuna calls set_metric_names experimental; the tuner sets it so too
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    for k, v in {"model": "tiny-llada", "model_fingerprint": "fp0", "task": "toy", "model_meta": meta,
                 "objectives": OBJECTIVES, "hardware": {"name": "default"}, "space": "quick"}.items():
        study.set_user_attr(k, v)
    points = []
    for n, plan, slots, acc, h2d, peak in trials:
        p = point("s", n, plan, slots, acc=acc, h2d=h2d, peak_gib=peak, meta=meta)
        attrs = {"config": p.config, "values": p.values, "sources": p.sources, "device": "cpu", "feasible": True}
        if n in (baseline or {}):
            attrs["baseline"] = baseline[n]
        study.add_trial(optuna.trial.create_trial(values=[p.values[m] for m in OBJECTIVES], user_attrs=attrs))
        points.append(p)
    save_front(engine_for(url), "s", [p for p in points if p.trial_number in front])
    return url


def _report_reference(url: str) -> int:
    """The trial `report` measures every accuracy change from (its baseline format, its accuracy reference)."""
    from advisor.report.data import load_study_data
    from advisor.report.select import accuracy_reference, feasible_trials
    from advisor.report.study import baseline_format

    data = load_study_data("s", url)
    trials = feasible_trials(data)
    ref, _ = accuracy_reference(trials, full=baseline_format(data, trials))
    assert ref is not None
    return ref.number


DOMINATED_BF16 = [(0, "bf16", 8, 0.95, 40e6, 20.0), (1, "default=int8;layers=0-1:bf16", 6, 0.95, 30e6, 12.0),
                  (2, "int8", 4, 0.90, 20e6, 9.0), (3, "int4", 4, 0.80, 10e6, 7.0)]
FLOOR_OF_0 = "floor 0.940 (= 0.950 of trial #0, measured, minus 0.01; trial #0: uniform bf16 plan (the study's full " \
             "precision))"


def test_a_dominated_full_precision_trial_is_recommends_reference_as_it_is_reports(tmp_path):
    """The bf16 trial #0 is dominated (a mixed plan is as accurate, with fewer bytes and less memory), so it is not
    on the stored front. `recommend` took its reference from the front alone: the int8 #2 there, "not full
    precision", a floor 0.05 lower, and picked int8 under it, while `report` measured every change from #0. Both
    now name #0, and `export --from-recommend` exports what recommend picks under it."""
    url = _study(tmp_path / "s.db", DOMINATED_BF16, front=[1, 2, 3])
    assert _report_reference(url) == 0
    args = ["--storage", url, "--budget", "40GiB", "--prefer", "transfer"]
    r = advisor("recommend", *args, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = flat(r.stdout)
    assert "Recommended: study 's', trial #1 " in out, out
    assert FLOOR_OF_0 in out, out
    assert "not full precision" not in out, out
    r = advisor("recommend", *args, "--json", cwd=tmp_path, timeout=120)
    ref = json.loads(r.stdout)["references"]["s"]
    assert (ref["trial"], ref["source"]) == (0, "measured:exact-match n=64"), ref
    r = advisor("export", "--from-recommend", *args, "--to", "json", cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["source"]["trial"] == 1, r.stdout + r.stderr


def test_the_16_bit_format_is_the_no_cache_baselines_as_report_takes_it(tmp_path):
    """A space of both fp16 and bf16 on an fp16 model, whose no-cache baseline ran at bf16: `report` measures from
    the bf16 plan (#1), while `recommend` read the format from the front's points (both formats: neither, so the
    model's fp16) and named the fp16 #0."""
    url = _study(tmp_path / "s.db", [(0, "fp16", 8, 0.93, 0.0, 20.0), (1, "bf16", 0, 0.94, 80e6, 2.0),
                                     (2, "int8", 4, 0.93, 20e6, 9.0)],
                 front=[0, 1, 2], baseline={1: "no-cache"}, dtype="float16")
    assert _report_reference(url) == 1
    r = advisor("recommend", "--storage", url, "--budget", "40GiB", cwd=tmp_path, timeout=120)
    out = flat(r.stdout)
    assert r.returncode == 0 and "= 0.940 of trial #1, measured, minus 0.01; trial #1: uniform bf16 plan (the " \
        "study's full precision)" in out, out


def test_the_reference_off_the_front_is_read_from_postgresql_too(tmp_path, pg_schema_url):
    """The trials are read by plain SQL through SQLAlchemy off SQLite, without optuna."""
    url = _study(pg_schema_url, DOMINATED_BF16, front=[1, 2, 3])
    r = advisor("recommend", "--storage", url, "--budget", "40GiB", "--prefer", "transfer", cwd=tmp_path, timeout=120)
    out = flat(r.stdout)
    assert r.returncode == 0 and "Recommended: study 's', trial #1 " in out and FLOOR_OF_0 in out, out + r.stderr
