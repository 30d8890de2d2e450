"""ADVISOR_* path variables read a leading '~' as every path option does (`advisor.files.home_path`): quoted,
the shell leaves it, and the variable named a directory '~' under the working directory."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_helpers import advisor_in_process, flat

EXAMPLE = Path(__file__).parent.parent / "studies" / "example" / "advisor.db"


def test_profiles_dir_variable_expands_home(tmp_path):
    """`ADVISOR_PROFILES_DIR='~/p'`: recommend --gpu reads the measured profile under $HOME/p."""
    home, cwd = tmp_path / "home", tmp_path / "work"
    (home / "p").mkdir(parents=True)
    cwd.mkdir()
    measured = {"name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 << 30, "h2d_gbps_pinned": 21.7,
                "h2d_gbps_pageable": 9.8, "copy_latency_us": 14.0, "source": "measured:2026-12-01"}
    (home / "p" / "rtx-4090.json").write_text(json.dumps(measured))
    r = advisor_in_process("recommend", "--storage", str(EXAMPLE), "--gpu", "RTX 4090", cwd=cwd,
                           env={"HOME": str(home), "ADVISOR_PROFILES_DIR": "~/p", "COLUMNS": "400"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "measured:2026-12-01" in flat(r.stdout + r.stderr), r.stdout + r.stderr


def test_an_empty_profiles_dir_variable_is_read_as_unset(tmp_path):
    """`ADVISOR_PROFILES_DIR=` (empty) read and wrote measured profiles in the working directory ('.'); an empty
    directory variable means unset here, as $ADVISOR_CACHE_DIR is read: the default store, studies/profiles."""
    (tmp_path / "rtx-4090.json").write_text(json.dumps({
        "name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 << 30, "h2d_gbps_pinned": 21.7,
        "h2d_gbps_pageable": 9.8, "copy_latency_us": 14.0, "source": "measured:2026-12-01"}))
    r = advisor_in_process("profile", "--list", cwd=tmp_path, env={"ADVISOR_PROFILES_DIR": "", "COLUMNS": "400"})
    assert r.returncode == 0 and "measured:2026-12-01" not in r.stdout, r.stdout + r.stderr
    r = advisor_in_process("profile", "--cpu", "--repeats", "1", "--name", "x", cwd=tmp_path,
                           env={"ADVISOR_PROFILES_DIR": "", "COLUMNS": "400"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "studies" / "profiles" / "x.json").is_file() and not (tmp_path / "x.json").exists()


def test_cache_dir_variable_expands_home(tmp_path):
    """`ADVISOR_CACHE_DIR='~/c'`: an offloaded eval keeps its full-precision reference under $HOME/c."""
    from tests.eval_helpers import tiny_toy_model_dir

    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    model_dir = tiny_toy_model_dir(tmp_path)
    r = advisor_in_process("eval", str(model_dir), "--task", "toy", "--limit", "2", "--precision", "int4",
                           "--fidelity-prompts", "2", "--offload", "--no-progress", cwd=cwd,
                           env={"HOME": str(home), "ADVISOR_CACHE_DIR": "~/c"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert list((home / "c" / "reference").glob("*.pt")), list(home.rglob("*"))
    assert not (cwd / "~").exists()
