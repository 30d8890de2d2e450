"""New user 13's findings, through the CLI as a user runs it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from advisor.models.tiny import build_tiny
from tests.cli_helpers import advisor, one_error_line


@pytest.fixture(scope="module")
def moved_study(tmp_path_factory):
    """A study tuned on a local checkpoint directory that was then moved (as to another machine's path)."""
    root = tmp_path_factory.mktemp("moved")
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(root / "ckpt")
    r = advisor("tune", "./ckpt", "--space", "quick", "--budget", "80KiB", "--trials", "2", "--storage", "s.db", "--study", "s", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    (root / "elsewhere").mkdir()
    shutil.move(root / "ckpt", root / "elsewhere" / "ckpt")
    return root


def test_report_of_a_study_whose_directory_moved_names_it_and_takes_model(moved_study):
    """The stored directory gone, `report` read the study's name ('ckpt') as a hub id and advised `hf download
    ckpt`; there was no way to say where the checkpoint is now. Now one line names the directory and --model, and
    --model reports on the moved checkpoint."""
    root = moved_study
    base = ["report", "s", "--storage", "s.db", "--block-lengths", ""]
    line = one_error_line(advisor(*base, "-o", "r", cwd=root), str(root / "ckpt"), "--model")
    assert "hf download" not in line
    assert not (root / "r").exists()
    r = advisor(*base, "-o", "r", "--model", "elsewhere/ckpt", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    payload = json.loads((root / "r" / "report.json").read_text())
    assert payload["study"] == "s"


def test_report_model_that_is_another_checkpoint_is_one_line(moved_study):
    root = moved_study
    build_tiny("qwen3_moe", seed=1, dtype=torch.bfloat16).save_pretrained(root / "other")
    r = advisor("report", "s", "--storage", "s.db", "--block-lengths", "", "-o", "r2", "--model", "other", cwd=root)
    one_error_line(r, "--model other is not the model study 's' ran", "fingerprint")
    assert not (root / "r2").exists()
