"""Review 53's findings, through the CLI as a user runs it."""

from __future__ import annotations

import json
import sqlite3

from tests.cli_helpers import advisor_entry, advisor_in_process, flat
from tests.test_cli_new_user24 import BF16_ONLY


def test_a_study_from_before_the_reference_mark_resumed_once_is_resumed_again(tmp_path):
    """A study stored before 'fidelity_reference' was whose trials had not finished (its first run interrupted or
    failed) is resumed: nothing in it compared with the old reference. The trials that resume finishes compare
    with the seam's - but the study stayed unmarked, so its next resume was refused for them ("its trials'
    fidelity ... compared with a full-precision reference computed by transformers' default experts kernel").
    A finished trial over budget holds placeholder fidelity ("not-run:..."), measured against nothing: it was
    refused for that at once."""
    import torch

    from advisor.models.tiny import build_tiny

    build_tiny("diffusion_gemma", dtype=torch.bfloat16).save_pretrained(tmp_path / "dg")
    (tmp_path / "s.toml").write_text(BF16_ONLY)
    tune = ("tune", "dg", "--space", "s.toml", "--resident", "--storage", "s.db", "--study", "old")
    r = advisor_in_process(*tune, "--trials", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    db = sqlite3.connect(tmp_path / "s.db")  # as stored before the mark: trial 0 cut short, trial 1 over budget
    with db:
        db.execute("DELETE FROM study_user_attributes WHERE key = 'fidelity_reference'")
        db.execute("UPDATE trials SET state = 'FAIL' WHERE number = 0")
        [(trial, sources)] = db.execute("SELECT trial_id, value_json FROM trial_user_attributes JOIN trials "
                                        "USING (trial_id) WHERE number = 1 AND key = 'sources'").fetchall()
        placeholder = {k: "not-run:infeasible(placeholder)" if k.startswith("fidelity") else v
                       for k, v in json.loads(sources).items()}
        db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'sources'",
                   (json.dumps(placeholder), trial))
    db.close()
    for _ in range(2):
        r = advisor_entry(*tune, "--more", "1", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr


def test_an_offloaded_study_from_before_the_allowance_was_stored_is_resumed(tmp_path):
    """An offloaded study's fidelity reference computed through the seam already, so `_check_reference` lets it
    resume - but it told one by the activation allowance the study stores, which studies from before 2026-12-05
    lack: such an offloaded study of a fused-experts model was refused, though a resume of it is meant to go on
    with a note that its allowance is unknown. Its trials' peak sources say they ran offloaded."""
    import torch

    from advisor.models.tiny import build_tiny

    build_tiny("diffusion_gemma", dtype=torch.bfloat16).save_pretrained(tmp_path / "dg")
    (tmp_path / "s.toml").write_text(BF16_ONLY)
    tune = ("tune", "dg", "--space", "s.toml", "--offload", "--storage", "s.db", "--study", "old")
    r = advisor_in_process(*tune, "--trials", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    db = sqlite3.connect(tmp_path / "s.db")  # as stored on 2026-12-04: neither the mark nor the allowance
    with db:
        db.execute("DELETE FROM study_user_attributes WHERE key IN ('fidelity_reference', 'activation_allowance')")
    db.close()
    r = advisor_entry(*tune, "--more", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "predates storing the activation allowance" in flat(r.stdout + r.stderr)
