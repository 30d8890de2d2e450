"""A model directory that names its own Python code (`auto_map`) for a model or tokenizer transformers does not
build itself: transformers asked "Do you wish to run the custom code? [y/N]" on the terminal (and ran the
directory's files on a "y"), then raised an error asking for `trust_remote_code=True`, which advisor has no
option for. advisor never runs that code: one line, no prompt."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.cli_helpers import advisor_entry, one_error_line


@pytest.mark.parametrize(("what", "file", "changes"), [
    ("model", "config.json", {"model_type": "acme_moe",
                              "auto_map": {"AutoConfig": "configuration_acme.AcmeConfig",
                                           "AutoModelForCausalLM": "modeling_acme.AcmeForCausalLM"}}),
    ("tokenizer", "tokenizer_config.json", {"tokenizer_class": "AcmeTokenizer",
                                            "auto_map": {"AutoTokenizer": ["tokenization_acme.AcmeTokenizer", None]}}),
])
def test_a_model_or_tokenizer_of_its_own_code_is_refused_without_a_prompt(tmp_path, what, file, changes):
    from advisor.models import BUNDLED_DIR

    model = tmp_path / "m"
    shutil.copytree(BUNDLED_DIR, model)
    settings = json.loads((model / file).read_text())
    (model / file).write_text(json.dumps({**settings, **changes}))
    (model / f"{'modeling' if what == 'model' else 'tokenization'}_acme.py").write_text(
        "raise SystemExit('the model directory\\'s own code ran')\n")
    r = advisor_entry("inspect", "m", cwd=tmp_path)
    one_error_line(r, f"error: m: its {what} needs the Python code in the model's own files (auto_map), which "
                      "advisor never runs")
    assert "[y/N]" not in r.stdout + r.stderr and not r.stdout.strip(), r.stdout


@pytest.mark.parametrize(("model_type", "said"), [
    ("acme_moe", "config.json: model_type 'acme_moe' is not one transformers "),
    ("vit", "config.json: model_type 'vit' is no language model transformers "),
])
def test_a_model_type_transformers_does_not_build_as_a_language_model_is_one_short_line(tmp_path, model_type, said):
    """transformers' own messages, quoted whole, ran to ~700 characters (pip commands) for a model_type it does not
    know and to ~3,500 (every config class AutoModelForCausalLM takes) for one that is no causal LM, then said
    'fix that field or re-download the model'."""
    from advisor.models import BUNDLED_DIR

    model = tmp_path / "m"
    shutil.copytree(BUNDLED_DIR, model)
    settings = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**settings, "model_type": model_type}))
    line = one_error_line(advisor_entry("inspect", "m", cwd=tmp_path), f"error: {model.name}/{said}")
    assert len(line) < 300 and "fix that field" not in line, line
