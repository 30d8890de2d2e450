"""The README's answer for the bundled dLLM is the committed study's: every row read back from its database.

The table is the several-budgets table of `advisor report --memory 10%,25%,50%` (studies/example/report/):
each row must name a stored trial whose stored values print as the row does, be the trial the report's rule
picks at that budget (least time per token among the trials that fit: its best cache and miss policy), and
match the committed report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "studies" / "example"
STUDY = "bundled-example"


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The first Markdown table after `heading` whose header starts with 'GPU budget', as rows of cells."""
    part = text[text.index(heading):]
    lines = part.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| GPU budget"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def answer():
    from advisor.report.data import load_study_data

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### The answer for the bundled dLLM"):]
    section = section[:section.index("\n## ")]
    readme = _table_after(section, "### The answer for the bundled dLLM")
    report = _table_after((EXAMPLE / "report" / "report.md").read_text(), "# Headline")
    payload = json.loads((EXAMPLE / "report" / "report.json").read_text())
    data = load_study_data(STUDY, f"sqlite:///{EXAMPLE / 'advisor.db'}")
    return readme, report, payload, data, section


def test_readme_table_is_the_committed_reports(answer):
    from advisor.baselines import BASELINES, no_cache_label
    from advisor.report.document import BEST

    readme, report, _, _, _ = answer
    assert readme and readme == report
    assert list(dict.fromkeys(r[0] for r in readme)) == ["any", "10%", "25%", "50%"]
    assert [r[1] for r in readme if r[0] == "any"] == [no_cache_label("fp16")]  # the example's stored baseline: fp16
    for budget in ("10%", "25%", "50%"):
        rows = [r for r in readme if r[0] == budget]
        # the report's precisions, then every other format the study stored (int2), then no mixed plan (it has none)
        assert [r[2] for r in rows if r[1] == BEST] == ["fp16", "int8", "int4", "int2"]
        assert [r[1] for r in rows if r[1] != BEST] == [b.label for b in BASELINES]


def test_every_readme_number_is_a_stored_trial_value(answer):
    from advisor.report.document import _acc_text, _h2d, _ms, _pct, _pp, _slots_text
    from advisor.report.select import (
        _same_format,
        feasible_trials,
        stored_reference,
        uniform_precision,
    )
    from advisor.results.config_view import policy_text
    from advisor.units import h2d_unit

    readme, _, _, data, section = answer
    trials = {t.number: t for t in feasible_trials(data)}
    ref = stored_reference(list(trials.values()))
    assert ref is not None and ref.attrs["baseline"] == "no-cache"
    fp16_acc = next(t for t in sorted(trials.values(), key=lambda t: t.number)
                    if uniform_precision(t) in ("fp16", "bf16")).values["accuracy"]
    checked = 0
    for budget, _strategy, prec, trial, slots, policy, miss, h2d, cut, ms, time_cut, acc, dacc in readme:
        assert trial != "-", "every budget has a stored trial of every precision and strategy"
        t = trials[int(trial.lstrip("#"))]
        v = t.values
        ci = t.attrs["accuracy_detail"]
        # a row with no slot reads "none (0 slots)": its stored policy places nothing
        assert policy_text(t.config) == policy and t.config["miss_policy"] == miss
        assert _slots_text(t.config["slots_per_layer"]) == slots
        assert _h2d(v["h2d_bytes_per_token"], h2d_unit(ref.values["h2d_bytes_per_token"])) == h2d
        assert _pct(1 - v["h2d_bytes_per_token"] / ref.values["h2d_bytes_per_token"]) == cut
        assert _ms(v["time_per_token"]) == ms
        assert _pct(1 - v["time_per_token"] / ref.values["time_per_token"]) == time_cut
        assert _acc_text(v["accuracy"], (ci["accuracy_ci_low"], ci["accuracy_ci_high"])) == acc
        assert _pp(v["accuracy"] - fp16_acc) == dacc
        assert re.fullmatch(r"\d+%|any", budget) and _same_format(uniform_precision(t), prec)
        # every time number carries its source label: the stored one, verbatim, beside the table
        assert t.sources["time_per_token"] in section
        checked += 1
    assert checked == len(readme) >= 1 + 3 * 7


def test_each_row_is_the_best_stored_trial_at_its_budget(answer):
    """Precision rows: the fitting trial with the least time per token (its best cache and miss policy); baseline
    rows: the strategy's stored trials at that budget (TIDE: its best tau)."""
    from advisor.report.document import BEST
    from advisor.report.select import feasible_trials, rank, uniform_precision

    readme, _, payload, data, _ = answer
    trials = feasible_trials(data)
    for a in payload["answer_by_budget"]:
        fit = [t for t in trials if t.values["peak_gpu_bytes"] <= a["memory_bytes"]]
        for prec in ("fp16", "int8", "int4", "int2"):
            same = [t for t in fit if uniform_precision(t) == prec]
            quoted = next(r[3] for r in readme if r[0] == a["budget"] and r[1] == BEST and r[2] == prec)
            assert quoted == f"#{min(same, key=rank).number}"
        for row in a["baselines"]:
            runs = [t for t in trials if t.attrs.get("baseline_budget") == a["budget"]
                    and t.attrs.get("baseline") == data_name(row["strategy"])]
            assert runs and row["trial"] == min(runs, key=rank).number
            assert all(t.values["peak_gpu_bytes"] <= a["memory_bytes"] for t in runs)


def data_name(label: str) -> str:
    from advisor.baselines import BASELINES

    return next(b.name for b in BASELINES if b.label == label)


def test_every_figure_the_readme_names_opens():
    """Each image the README shows exists, is a PNG and decodes (matplotlib reads it back)."""
    from matplotlib.image import imread

    text = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert any("studies/example/report/figures/" in p for p in images)
    for rel in images:
        path = ROOT / rel
        assert path.is_file(), rel
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
        h, w = imread(path).shape[:2]
        assert h > 100 and w > 100, rel


def test_the_readings_numbers_are_the_stored_trials(answer):
    """The paragraph under the table ("Reading it: ...") quotes times, cuts, hit rates and ratios typed by hand
    from the study; each is recomputed here from the stored trials of the table's rows, so a regenerated example
    whose numbers moved fails until the prose follows."""
    from advisor.report.document import BEST

    readme, _, _, data, section = answer
    text = " ".join(section[section.index("Reading it:"):].split())
    trials = {t.number: t for t in data.trials}

    def row(budget: str, strategy: str, prec: str = "fp16") -> Any:
        r = next(r for r in readme if r[0] == budget and r[1] == strategy and r[2] == prec)
        return trials[int(r[3].lstrip("#"))].values

    def ms(v: dict) -> str:
        return f"{v['time_per_token']:.2f}"

    no_cache = next(trials[int(r[3].lstrip("#"))].values for r in readme if r[0] == "any")
    int2, int8, int4 = (row(b, BEST, "int2") for b in ("10%", "25%")), row("10%", BEST, "int8"), \
        [row(b, BEST, "int4") for b in ("25%", "50%")]
    int2_10, int2_25 = int2
    assert f"int2 ({ms(int2_10)} ms per token at 10%; from 25% every expert fits on the GPU: {ms(int2_25)} ms)" in text
    assert (f"int8 with FLRU hits {int8['hit_rate']:.0%} of its look-ups, copies {int8['copies_per_token']:.0f} "
            f"experts per token and computes the other misses on the CPU: {ms(int8)} ms per token, "
            f"{1 - int8['time_per_token'] / no_cache['time_per_token']:.0%} less than FP16 without cache") in text
    assert f"at 25% and 50%, int4: {ms(int4[0])} and {ms(int4[1])} ms)" in text
    gains = [1 - row(b, BEST)["time_per_token"] / row(b, "Mixtral-offloading-style")["time_per_token"]
             for b in ("10%", "25%", "50%")]
    assert (f"is {min(gains):.0%}-{max(gains):.0%} faster than Mixtral-offloading-style (every miss copied: "
            f"{ms(row('10%', 'Mixtral-offloading-style'))} vs {ms(row('10%', BEST))} ms at 10%)").replace("%-", "-") \
        in text
    slower = [row(b, s)["time_per_token"] / no_cache["time_per_token"] for b in ("10%", "25%", "50%")
              for s in ("Fiddler-style", "TIDE-style", "llama.cpp-style")]
    assert f"are {min(slower):.1f}-{max(slower):.1f} times slower than no cache at all" in text
