"""Found by a new user (pass 11b) through the CLI (2026-12-06)."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import advisor, advisor_entry, advisor_in_process, one_error_line, said_lines

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DB = str(ROOT / "studies" / "example" / "advisor.db")


def test_a_broken_profile_file_blocks_only_its_own_gpu(tmp_path):
    """One broken JSON file in the profiles folder refused every `--gpu`, catalogue names included: it now
    blocks only the GPU it is named for (by its stored name, else its file name); another `--gpu` works and a
    one-line note names the broken file."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "old-card.json").write_text("{not json")
    good = {"name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 << 30, "h2d_gbps_pinned": 21.7,
            "h2d_gbps_pageable": 9.8, "copy_latency_us": 14.0, "source": "measured:2026-12-01"}
    (profiles / "rtx-4090.json").write_text(json.dumps(good))
    (profiles / "mycard.json").write_text(json.dumps({"name": "NVIDIA A10", "memory_bytes": "lots"}))
    for gpu, needle in (("H100", "H100"), ("RTX 4090", "measured:2026-12-01")):
        r = advisor("recommend", "--storage", EXAMPLE_DB, "--gpu", gpu, "--profiles-dir", str(profiles),
                    cwd=tmp_path, timeout=120)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert needle in r.stdout, r.stdout
        # one note naming both broken files, wrapped at the terminal's width (a long tmp path on a line of its own)
        notes = [ln for ln in said_lines(r.stderr) if "old-card.json" in ln]
        assert len(notes) == 1 and "mycard.json" in notes[0] and notes[0].startswith("note: skipped"), r.stderr
    # the broken files' own GPUs are refused with their error: by file name, and by the name stored in it
    one_error_line(advisor("recommend", "--storage", EXAMPLE_DB, "--gpu", "old card", "--profiles-dir",
                           str(profiles), cwd=tmp_path, timeout=120), "old-card.json is not valid JSON")
    one_error_line(advisor("recommend", "--storage", EXAMPLE_DB, "--gpu", "A10", "--profiles-dir", str(profiles),
                           cwd=tmp_path, timeout=120), "mycard.json", "lacks")


def test_a_cpu_profile_labels_its_copies_as_the_host_copy_it_measured(tmp_path):
    """`advisor profile --cpu` measures a host memory copy (no GPU), yet its figures were quoted as
    `pcie(bw=2.8GB/s,...)`, a host-to-device link it never measured; they now read `host-copy(...)`."""
    r = advisor("profile", "--cpu", "--repeats", "1", "--name", "my cpu", "--profiles-dir", "p", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = advisor("recommend", "--storage", EXAMPLE_DB, "--gpu", "my cpu", "--profiles-dir", "p", "--budget", "100MiB",
                cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())  # as one line: recommend wraps at the terminal's width
    assert text.count("transfer on target") == 1, r.stdout
    target = text.split("transfer on target")[1].split("Export it:")[0]
    assert "modelled:host-copy(bw=" in target and "pcie(" not in target, r.stdout


def test_several_space_values_over_the_model_say_exceed(tmp_path):
    """A space whose cache.slots_per_layer has several values above the model's experts said "65, 80 exceeds";
    plural now "exceed" (one value still "exceeds"), as `--budgets` says (tests/test_tune_baselines.py)."""
    for slots, said in (("[65, 80]", "65, 80 exceed the model's 64 experts per layer"),
                        ("[2, 65]", "65 exceeds the model's 64 experts per layer")):
        (tmp_path / "s.toml").write_text(f'[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = {slots}\n')
        # through the entry point in this process: the refusal comes once the model loads, and as a subprocess
        # each paid the torch/transformers import again
        one_error_line(advisor_entry("tune", "--space", "s.toml", "--trials", "1", "--storage", "x.db", cwd=tmp_path),
                       f"cache.slots_per_layer: {said}")


def test_read_only_commands_on_another_programs_database_say_so_as_tune_does(tmp_path):
    """`studies`, `recommend`, `pareto` and `report` on another program's SQLite file said "run `advisor tune`
    first", and `tune` on it refuses the file: they now say it is not an advisor study database, as tune does;
    an empty file still gets "run `advisor tune` first"."""
    import sqlite3

    app = tmp_path / "app.db"
    with sqlite3.connect(app) as con:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    said = f"{app} is another program's database (tables users), not an advisor study database"
    for args in (["studies"], ["recommend"], ["pareto", "s"], ["report", "s"]):
        line = one_error_line(advisor(*args, "--storage", str(app), cwd=tmp_path, timeout=120), said,
                              "give --storage the file `advisor tune` wrote")
        assert "run `advisor tune` first" not in line, line
    one_error_line(advisor("tune", "--trials", "1", "--storage", str(app), cwd=tmp_path, timeout=200), said)
    (tmp_path / "empty.db").touch()
    r = advisor("studies", "--storage", "empty.db", cwd=tmp_path)
    assert r.returncode == 0 and "run `advisor tune` first" in r.stdout, r.stdout + r.stderr


def test_a_tiny_model_over_its_budget_says_it_is_loaded_whole(tmp_path):
    """A `tiny:` model is built in memory and never loaded offloaded: over its budget it was loaded whole
    without a word, while a checkpoint over budget says "loading: offloaded ...". It now says so in one note
    line, with the counted bytes against the budget; under its budget nothing more is said."""
    def tune(budget: str, db: str) -> str:
        r = advisor_in_process("tune", "tiny:olmoe", "--budget", budget, "--trials", "1", "--storage", db, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        return " ".join(r.stdout.split())  # rich wraps at its own width

    over = tune("150KiB", "a.db")
    assert ("note: resident: the whole model on cpu, not offloaded: tiny:olmoe is built in memory, with no "
            "checkpoint for its experts to stream from (counted 187.00 KiB of parameters > --budget 150KiB = 150.00 KiB)") in over
    assert "not offloaded" not in tune("1MiB", "b.db")
