"""What a third new-user pass met through the commands (each test failed before its fix):

- `advisor report --memory a,b` of a study whose trials all have hot/cold plans said "no stored trial fits" though
  they fit: the answer compared uniform fp16/int8/int4 plans only;
- `advisor trace bundled --steps 5` decoded 6 steps and `--block-length 5` decoded 20 tokens for 16, without a
  word (LLaDA-MoE decodes whole blocks of equal steps; `eval --max-new-tokens 20` rounded alike);
- `peak_gpu_bytes` was labelled `+staging` for trials whose misses compute on the CPU, whose counted peak holds
  no staging buffers;
- a study of one trial printed "1 points; 1 finished trials", "1 for 1 distinct precision plans" and its report
  "1 finished trials", "1 examples", "fidelity on 1 prompts";
- `advisor report` printed its headline lines with the labels right-aligned to 5 characters, so an `int4:g64` row
  (or a mixed plan's) put its values in another column than the fp16/int8/int4 rows';
- `advisor export --help` described `--profiles-dir` as "Measured hardware profiles", though only
  `--from-recommend --gpu` reads it (STUDY TRIAL refuses it).
"""

from __future__ import annotations

import json
import re

import pytest
from tune_helpers import MIXED_CPU_MISS_SPACE as SPACE
from typer.testing import CliRunner

STUDY = "bundled-toy-mx"


def invoke(*args: str):
    from advisor.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """(storage URL, the tune's output, its directory)."""
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("mixed")
    (tmp / "mx.toml").write_text(SPACE)
    url = f"sqlite:///{tmp / 'mx.db'}"
    res = invoke("tune", "bundled", "--space", str(tmp / "mx.toml"), "--trials", "1", "--storage", url)
    assert res.exit_code == 0, res.output
    return url, res.output, tmp


@pytest.fixture(scope="module")
def mixed_report(mixed):
    """The report at two memories the trial fits (its peak, 3.15 MiB with the 478 KiB activation allowance, passes
    60%: 3.0 MiB)."""
    url, _, tmp = mixed
    res = invoke("report", STUDY, "--storage", url, "-o", str(tmp / "rep"), "--memory", "70%,100%",
                 "--block-lengths", "")
    assert res.exit_code == 0, res.output
    return res.stdout, json.loads((tmp / "rep" / "report.json").read_text()), (tmp / "rep" / "report.md").read_text()


def test_report_answers_from_the_mixed_plans_that_fit(mixed_report):
    out, payload, _ = mixed_report
    (mixed,) = [r for r in payload["headline"] if r["trial"] is not None]
    assert mixed["precision"] == "int4:g64 (+hot bf16 x16/layer)" and mixed["trial"] == 0, payload["headline"]
    assert mixed["replayed_bytes_per_token"] == pytest.approx(mixed["h2d_bytes_per_token"], rel=1e-12)
    assert "no stored trial fits" not in out, out
    for a in payload["answer_by_budget"]:
        assert [r["trial"] for r in a["rows"] if r["trial"] is not None] == [0], a
        assert f"at {a['budget']} (" in out and "int4:g64 (+hot bf16 x16/layer) #0: transfer cut" in out, out


def test_trace_says_what_llada_moe_decodes_where_it_is_not_what_was_asked(tmp_path):
    """The same rounding as `eval` and `tune` (one definition, `advisor.models.generate`), now said in a note."""
    from advisor.offload.trace import RoutingTrace

    out = tmp_path / "t.npz"
    res = invoke("trace", "bundled", "-o", str(out), "--limit", "1", "--max-new-tokens", "8", "--block-length", "3",
                 "--steps", "4", "--threads", "1")
    assert res.exit_code == 0, res.output
    note = " ".join(res.output.split())
    assert ("note: bundled decodes as llada_moe: 8 new tokens at block length 3 decode 3 whole blocks (9 tokens, "
            "cut to 8); 6 denoising steps, not 4: every block takes the same number (2), so the steps are rounded "
            "up to a multiple of the 3 blocks") in note, res.output
    rounded = RoutingTrace.load(out)
    assert rounded.n_forwards == 6  # what the note says ran, and what its meta records (not the 4 asked)
    assert (rounded.meta["steps"], rounded.meta["steps_per_block"]) == (6, 2), rounded.meta
    exact = invoke("trace", "bundled", "-o", str(out), "--limit", "1", "--max-new-tokens", "8", "--block-length", "4",
                   "--steps", "4", "--threads", "1")
    assert exact.exit_code == 0 and "note:" not in exact.output, exact.output


def test_eval_says_it_alike():
    res = invoke("eval", "bundled", "--limit", "1", "--max-new-tokens", "12", "--no-progress", "--threads", "1")
    assert res.exit_code == 0, res.output
    assert "note: bundled decodes as llada_moe: 12 new tokens at block length 8 decode 2 whole blocks (16 tokens, " \
           "cut to 12)" in " ".join(res.output.split()), res.output


def test_tune_says_it_alike_once(tmp_path):
    """A space's max_new_tokens that the task's block length does not divide: tune decodes whole blocks too, and
    its header says so in eval's words (it used to round silently)."""
    (tmp_path / "nt.toml").write_text('name = "nt"\n[precision]\nformats = ["int8"]\n[cache]\n'
                                      'slots_per_layer = { low = 1, high = "all" }\npolicies = ["lru"]\n'
                                      '[objectives]\nh2d_bytes_per_token = "minimize"\naccuracy = "maximize"\n'
                                      '[evaluation]\nlimit = 1\ntrace_prompts = 1\nfidelity_prompts = 1\n'
                                      'max_new_tokens = 12\n')
    res = invoke("tune", "bundled", "--space", str(tmp_path / "nt.toml"), "--trials", "1", "--storage",
                 f"sqlite:///{tmp_path / 'nt.db'}")
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    note = ("note: bundled decodes as llada_moe: 12 new tokens at block length 8 decode 2 whole blocks (16 tokens, "
            "cut to 12)")
    assert out.count(note) == 1, res.output


def test_the_peak_of_a_cpu_miss_trial_is_labelled_without_staging(mixed):
    from advisor.report.data import load_study_data
    from advisor.tune.config import counted_peak_bytes, peak_source
    from advisor.tune.model_backend import model_shape

    url, out, _ = mixed
    (t,) = load_study_data(STUDY, url).trials
    assert t.config["miss_policy"] == "cpu"
    label = "counted:resident-weights+slots*expert-bytes+activation-allowance"  # offloaded: its activations
    assert t.sources["peak_gpu_bytes"] == label and label in "".join(out.split()), out
    # what the label says is what was counted: copied misses of the same plan with fewer slots stage experts
    from advisor.models.load import load_model
    from advisor.tune.config import TrialConfig

    shape = model_shape(load_model("bundled"))
    shape = type(shape)(**{**shape.__dict__, "staging": True})
    plan, slots = TrialConfig.from_json(t.config, shape.num_experts).plan, (8, 8, 8, 8)
    assert counted_peak_bytes(shape, plan, slots, miss="copy") > counted_peak_bytes(shape, plan, slots, miss="cpu")
    assert "+staging" in peak_source(shape, miss="copy") and "+staging" not in peak_source(shape, miss="cpu")


def test_a_count_of_one_is_singular(mixed, mixed_report):
    _, out, _ = mixed
    text = " ".join(out.split())
    assert "Pareto front of study bundled-toy-mx (1 point; 1 finished trial, 0 over budget" in text, text
    assert "accuracy evaluations this run: 1 for 1 distinct precision plan in the study" in text, text
    md = " ".join(mixed_report[2].split())
    assert "1 finished trial (1 within the memory budget)" in md and "task toy, 1 example, seed 0" in md, md
    assert "fidelity on 1 prompt." in md, md
    # source labels keep their fixed form ("(11 positions,1 prompts,cpu)"): stored with trials, read by scripts
    assert not re.search(r"\b1 (points|trials|examples|plans)\b|\b1 prompts[^,]", text + md), text + md


def test_report_lines_align_for_a_long_format_name(mixed_report):
    """The values stand in one column. A mixed plan's label too long to leave them room at 80 columns (its values
    were a 46-column strip beside it; a 42-character label left 30) heads its row on a line of its own, its values
    below it in that column. In a study of hot/cold plans only, the fp16 row (its hot format) said "no trial of this
    precision" and the mixed row "accuracy change -" without why (report.md's answer: "accuracy change not
    measured", of a measured accuracy): both say what the study holds instead."""
    out = mixed_report[0].splitlines()
    start = next(i for i, line in enumerate(out) if "without cache:" in line)  # the heading's last line
    end = next((i for i in range(start + 1, len(out)) if out[i].startswith("  at ")), len(out))
    rows = out[start + 1:end]
    assert all(len(line) <= 80 for line in rows), "\n".join(rows)
    labels = [m[1] for line in rows if (m := re.match(r"  (\S.*?):(?: |$)", line))]
    assert labels == ["fp16", "int8", "int4", "int4:g64 (+hot bf16 x16/layer)"], out
    assert "  int4:g64 (+hot bf16 x16/layer):" in rows, "\n".join(rows)  # the label alone on its line
    # one column for the values: after a short label's ": ", and under each row's first line
    assert {line.index(": ") + 2 for line in rows if re.match(r"  \S.*: ", line)} == {8}, "\n".join(rows)
    assert {len(line) - len(line.lstrip()) for line in rows if not re.match(r"  \S", line)} == {8}, "\n".join(rows)
    text = " ".join(" ".join(rows).split())
    assert "fp16: no uniform trial in the study; trials mixing it with other formats are in the mixed-plan row" in text
    assert "int4: no trial of this precision in the study" in text, text  # int4:g64 is not int4
    assert "accuracy change -" not in text and re.search(
        r"accuracy [01]\.\d{3} \(measured(, n=\d+, 95% CI [01]\.\d{3}-[01]\.\d{3})?\); no 16- or 32-bit plan in the "
        r"study: accuracy change not available", text), text
    md = " ".join(mixed_report[2].split())  # report.md's answer said "accuracy change not measured" of a measured one
    assert "accuracy change not measured" not in md and re.search(
        r"cache; accuracy [01]\.\d{3} \(measured(, n=\d+, 95% CI [01]\.\d{3}-[01]\.\d{3})?\); no 16- or 32-bit plan in "
        r"the study: accuracy change not available\.", md), md


def test_export_help_says_profiles_dir_is_for_from_recommend():
    from advisor.cli import app

    res = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "--profiles-dir" in line)
    assert "(--from-recommend) where --gpu's measured hardware profiles are" in row, row
    refused = invoke("export", "bundled-example", "1", "--to", "json", "--profiles-dir", "p")  # what the help says
    assert "--profiles-dir only chooses what --from-recommend exports" in str(refused.exception), refused.output
