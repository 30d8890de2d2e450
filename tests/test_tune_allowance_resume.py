"""A study stores the activation allowance its counted peak GPU bytes include (an offloaded model's probe); a resume
whose probe counts another one (another advisor version, another device) says so in one `note:` line, instead of
silently mixing trials whose peaks used different allowances. An unchanged resume says nothing."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from advisor.cli import app
from advisor.models import signature
from advisor.tune.model_backend import ModelBackend
from advisor.units import format_bytes
from tests.test_offload_loading import SPACE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from advisor.models import tiny

    out = tmp_path_factory.mktemp("allowance") / "llada_moe"
    tiny.build_tiny("llada_moe").save_pretrained(str(out))
    return out


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVISOR_CACHE_DIR", str(tmp_path / "cache"))


def _tune(checkpoint, tmp_path) -> str:
    (tmp_path / "s.toml").write_text(SPACE)
    r = CliRunner().invoke(app, ["tune", str(checkpoint), "--offload", "--space", str(tmp_path / "s.toml"), "--trials",
                                 "1", "--storage", f"sqlite:///{tmp_path}/a.db", "--study", "a"], terminal_width=2000)
    assert r.exit_code == 0, (r.output, r.exception)
    return " ".join(r.output.split())


def test_a_resume_counting_another_activation_allowance_says_so(checkpoint, tmp_path, monkeypatch):
    first = _tune(checkpoint, tmp_path)
    assert "activation allowance" in first and "note: the study's earlier" not in first, first
    db = sqlite3.connect(tmp_path / "a.db")
    (stored,) = db.execute("select value_json from study_user_attributes where key = 'activation_allowance'").fetchone()
    again = _tune(checkpoint, tmp_path)  # the same probe: nothing to say
    assert "allowance of" not in again and "predates" not in again, again

    probe = ModelBackend._probe_activation

    def wider(self):
        act, _ = probe(self)
        return act + 2048, "measured:elsewhere"

    monkeypatch.setattr(ModelBackend, "_probe_activation", wider)
    # another advisor version: the study's stored load record (`advisor.tune.shortcut`) is not this run's, so the
    # model loads and is probed (with the same code, a finished study is answered from the record, unprobed)
    monkeypatch.setattr(signature, "_CODE", ["another advisor version"])
    changed = _tune(checkpoint, tmp_path)
    was = json.loads(stored)
    assert (f"note: the study's earlier trials' peak GPU bytes counted an activation allowance of "
            f"{format_bytes(was['bytes'])} ({was['source']}); this run counts {format_bytes(was['bytes'] + 2048)} "
            "(measured:elsewhere): next to this run's, the earlier trials' peaks are low by 2.0 KiB (one that fit the "
            "budget by less may not fit it now)") in changed, changed
    # the study keeps the allowance its first trials were counted with
    assert db.execute("select value_json from study_user_attributes where key = 'activation_allowance'").fetchone() \
        == (stored,)

    # a study stored before allowances were: unknown, said once
    with db:
        db.execute("delete from study_user_attributes where key = 'activation_allowance'")
    monkeypatch.setattr(ModelBackend, "_probe_activation", probe)
    old = _tune(checkpoint, tmp_path)
    assert old.count("note: this study predates storing the activation allowance") == 1, old
    assert "allowance its earlier trials' peak GPU bytes counted is unknown" in old, old


def test_the_readme_quotes_the_resume_note_as_it_is_printed():
    """README's "Device memory is bounded" bullet quotes the resume note; its start is what `allowance_note` says."""
    from pathlib import Path
    from types import SimpleNamespace

    from advisor.tune.study import allowance_note

    backend = SimpleNamespace(offloaded=True, shape=SimpleNamespace(activation_bytes=4096), activation_source="B-SRC")
    note = allowance_note({"activation_allowance": {"bytes": 2048, "source": "A-SRC"}}, backend)
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    quoted = ("note: the study's earlier trials' peak GPU bytes counted an activation allowance of A (SOURCE); this run "
              "counts B (SOURCE): next to this run's, the earlier trials' peaks are low by")
    assert f"`{quoted} ...`" in readme
    assert note.startswith(quoted.replace("A (SOURCE)", "2.0 KiB (A-SRC)").replace("B (SOURCE)", "4.0 KiB (B-SRC)")), note
