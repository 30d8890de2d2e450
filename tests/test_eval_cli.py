"""`advisor eval`: results with their sources, JSON output, one-line errors."""

from __future__ import annotations

import json
import os
import re

import pytest
from typer.testing import CliRunner

from advisor.cli import app
from tests.cli_helpers import advisor_entry
from tests.eval_helpers import tiny_toy_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_toy_model_dir(tmp_path_factory.mktemp("cli"))


def test_eval_with_precision_prints_accuracy_fidelity_and_sources(model_dir, tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, [
        "eval", str(model_dir), "--task", "toy", "--limit", "3", "--precision", "int4", "--fidelity-prompts", "2",
        "--json", str(out), "--no-progress", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    # a CPU time says how many threads computed it (--threads: a busy host's user picks fewer than every core)
    # the sources read as the README's "What every number means" names them, and as `tune` stores them
    text = " ".join(result.output.split())  # rich wraps long lines at the terminal width
    assert "[measured:exact-match:toy(n=3,cpu)]" in text and "measured:wall-clock(1 thread) (cpu)" in text
    assert "fidelity vs full precision" in text
    assert re.search(r"\[measured:logits-vs-fp32\(\d+ positions,2 prompts,cpu\)\]", text), result.output
    payload = json.loads(out.read_text())
    assert payload["n"] == 3 and payload["precision"] == "int4" and len(payload["per_example"]) == 3
    assert 0.0 <= payload["fidelity"]["fidelity_top1"] <= 1.0
    # the file's fidelity says where it came from, as the printed line does (it carried the values only)
    assert f"[{payload['fidelity']['source']}]" in text and payload["fidelity"]["source"].startswith("measured:logits")


def test_eval_names_the_device_of_its_fidelity_as_tune_does(model_dir, monkeypatch):
    """`eval --precision` labelled its fidelity `(..., cuda:0)` where its accuracy and `tune`'s fidelity said
    `cuda:0 (NVIDIA H200)`: both labels now take the device's name from `device_text`. (No GPU here: the name
    stands patched in, as a GPU's would be, where eval looks it up.)"""
    import advisor.eval.run
    import advisor.hardware.measure

    named = lambda device: "cpu (test card)"  # noqa: E731
    monkeypatch.setattr(advisor.hardware.measure, "device_text", named)
    monkeypatch.setattr(advisor.eval.run, "device_text", named)
    result = CliRunner().invoke(app, ["eval", str(model_dir), "--task", "toy", "--limit", "1", "--precision", "int4",
                                      "--fidelity-prompts", "1", "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "[measured:exact-match:toy(n=1,cpu (test card))]" in text, result.output
    assert re.search(r"\[measured:logits-vs-fp32\(\d+ positions,1 prompts,cpu \(test card\)\)\]", text), result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "bundled", "--task", "mmlu"], "unknown task"),
        (["eval", "bundled", "--limit", "0"], "--limit must be positive"),
        (["eval", "bundled", "--precision", "int99"], "int99"),
        (["eval", "bundled", "--task", "gsm8k", "--data", "/nonexistent/g.jsonl"], "does not exist"),
        # the fidelity reference is built before the evaluation: it needs the tokenizer too (it tracebacked)
        (["eval", "tiny:qwen3_moe", "--precision", "int8", "--limit", "1"], "has no tokenizer"),
        # both were silently ignored: no fidelity measured, the one prompt form used
        (["eval", "bundled", "--precision", "int8", "--fidelity-prompts", "-1"], "--fidelity-prompts"),
        (["eval", "bundled", "--style", "cot", "--limit", "1"], "--style applies to --task gsm8k"),
        (["eval", "bundled", "--task", "humaneval", "--style", "zero-shot"], "--style applies to --task gsm8k"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    """On a busy host too (forced here: 2 usable cores, 2 torch threads, load 64), where --threads 0 prints a note:
    bad input is refused before it (`--data /nonexistent` came after it, two lines, when CI was loaded). Through
    the console entry point in this process: as subprocesses the refusals after the model loads paid ~5 s of CPU
    each importing torch and transformers again."""
    import torch

    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    before = torch.get_num_threads()
    try:
        proc = advisor_entry(*args, cwd=tmp_path)
    finally:
        torch.set_num_threads(before)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
