"""The README's answer for the bundled dLLM is the committed study's: every row read back from its database.

The table is the several-budgets table of `advisor report --memory 10%,25%,50%` (studies/example/report/):
each row must name a stored trial whose stored values print as the row does, be the trial the report's rule
picks at that budget (fewest H2D bytes per token among the trials that fit), and match the committed report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

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

    readme = _table_after((ROOT / "README.md").read_text(), "### The answer for the bundled dLLM")
    report = _table_after((EXAMPLE / "report" / "report.md").read_text(), "# Headline")
    payload = json.loads((EXAMPLE / "report" / "report.json").read_text())
    data = load_study_data(STUDY, f"sqlite:///{EXAMPLE / 'advisor.db'}")
    return readme, report, payload, data


def test_readme_table_is_the_committed_reports(answer):
    readme, report, _, _ = answer
    assert readme and readme == report
    budgets = list(dict.fromkeys(r[0] for r in readme))
    assert budgets == ["10%", "25%", "50%"]
    assert {r[1] for r in readme} >= {"fp16", "int8", "int4"}


def test_every_readme_number_is_a_stored_trial_value(answer):
    from advisor.report.document import _acc_text, _kib, _pct, _pp, _slots_text
    from advisor.report.select import _same_format, feasible_trials, uniform_precision

    readme, _, payload, data = answer
    trials = {t.number: t for t in feasible_trials(data)}
    base_bytes = payload["baseline"]["h2d_bytes_per_token"]
    fp16_acc = payload["answer_by_budget"][0]["rows"]
    ref_acc = next(r["accuracy"] - r["accuracy_change"] for r in fp16_acc if r["accuracy_change"] is not None)
    checked = 0
    for budget, prec, trial, slots, policy, h2d, cut, _ms, _time_cut, acc, dacc in readme:
        if trial == "-":
            continue
        t = trials[int(trial.lstrip("#"))]
        v = t.values
        ci = t.attrs["accuracy_detail"]
        assert t.config["policy"] == policy and _slots_text(t.config["slots_per_layer"]) == slots
        assert _kib(v["h2d_bytes_per_token"]) == h2d
        assert _pct(1 - v["h2d_bytes_per_token"] / base_bytes) == cut
        assert _acc_text(v["accuracy"], (ci["accuracy_ci_low"], ci["accuracy_ci_high"])) == acc
        assert _pp(v["accuracy"] - ref_acc) == dacc
        assert re.fullmatch(r"\d+%", budget) and _same_format(uniform_precision(t), prec)
        checked += 1
    assert checked >= 6


def test_each_row_is_the_best_fitting_trial_at_its_budget(answer):
    from advisor.report.select import feasible_trials, headline_rows

    readme, _, payload, data = answer
    trials = feasible_trials(data)
    expert_bytes = payload["sweep"]["expert_bytes"]
    for a in payload["answer_by_budget"]:
        rows = headline_rows(trials, a["memory_bytes"], payload["baseline"]["h2d_bytes_per_token"], expert_bytes)
        picked = {r.precision: r.trial for r in rows}
        quoted = {r[1]: (int(r[2].lstrip("#")) if r[2] != "-" else None) for r in readme if r[0] == a["budget"]}
        assert quoted == picked
