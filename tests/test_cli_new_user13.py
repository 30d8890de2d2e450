"""New user 13's findings, through the CLI as a user runs it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from advisor.models.tiny import build_tiny
from tests.cli_helpers import advisor, advisor_entry, advisor_in_process, flat, one_error_line, said_lines


@pytest.fixture(scope="module")
def moved_study(tmp_path_factory):
    """A study tuned on a local checkpoint directory that was then moved (as to another machine's path)."""
    root = tmp_path_factory.mktemp("moved")
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(root / "ckpt")
    r = advisor_in_process("tune", "./ckpt", "--space", "quick", "--budget", "80KiB", "--trials", "2", "--storage", "s.db",
                           "--study", "s", cwd=root)
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
    line = one_error_line(advisor_entry(*base, "-o", "r", cwd=root), str(root / "ckpt"), "--model")
    assert "hf download" not in line
    assert not (root / "r").exists()
    r = advisor_entry(*base, "-o", "r", "--model", "elsewhere/ckpt", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    payload = json.loads((root / "r" / "report.json").read_text())
    assert payload["study"] == "s"


def test_report_of_a_study_whose_relative_directory_moved_with_it_loads_it_without_model(moved_study):
    """A study tuned on `./ckpt`, run again from a directory that holds `ckpt` (the project moved, or another
    machine with the same layout): the report loaded it by the relative name it ran as (fingerprint-checked) until
    e1c348b, which refused it for --model because the absolute directory recorded at tune time is gone."""
    root = moved_study
    r = advisor_entry("report", "s", "--storage", "../s.db", "--block-lengths", "", "-o", "r3", cwd=root / "elsewhere")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((root / "elsewhere" / "r3" / "report.json").read_text())["study"] == "s"


def test_report_of_another_checkpoint_under_the_relative_name_says_to_pass_model(moved_study):
    """Where the recorded directory is gone, the report loads the name the study ran as (`ckpt`) if it is a directory
    here; when that holds another checkpoint the line said "model 'ckpt' has changed since study 's' ran" and no
    more: it names the directory loaded and --model now."""
    root = moved_study
    build_tiny("qwen3_moe", seed=1, dtype=torch.bfloat16).save_pretrained(root / "another" / "ckpt")
    r = advisor_entry("report", "s", "--storage", "../s.db", "--block-lengths", "", "-o", "r4", cwd=root / "another")
    one_error_line(r, f"model {root / 'another' / 'ckpt'} is not the one study 's' ran", "fingerprint",
                   "pass --model with where the study's checkpoint is")
    assert not (root / "another" / "r4").exists()


def test_report_model_that_is_another_checkpoint_is_one_line(moved_study):
    root = moved_study
    build_tiny("qwen3_moe", seed=1, dtype=torch.bfloat16).save_pretrained(root / "other")
    r = advisor_entry("report", "s", "--storage", "s.db", "--block-lengths", "", "-o", "r2", "--model", "other", cwd=root)
    one_error_line(r, "--model other is not the model study 's' ran", "fingerprint")
    assert not (root / "r2").exists()


def test_ktransformers_llamafile_weights_for_llada2_do_not_point_to_the_refused_llamacpp_export(tmp_path):
    """An int2 LLaDA2 point runs kt-kernel's LLAMAFILE method, whose --kt-weight-path note said 'a GGUF directory
    quantized with `advisor export ... --to llama.cpp`' - an export that refuses LLaDA2 in one line, so the user was
    sent to a dead end. It then sent them to llama.cpp's own convert_hf_to_gguf.py, which has no LLaDA2MoeModelLM
    either; now it says neither writes one, and why."""
    build_tiny("llada2", dtype=torch.bfloat16).save_pretrained(tmp_path / "l2")
    (tmp_path / "int2.toml").write_text(
        'name = "int2"\n[precision]\nformats = ["int2"]\n[cache]\nslots_per_layer = { low = 1, high = "all" }\n'
        'policies = ["lru"]\n[objectives]\nh2d_bytes_per_token = "minimize"\nfidelity_top1 = "maximize"\n'
        '[evaluation]\ntrace_prompts = 2\nfidelity_prompts = 2\n')
    r = advisor_in_process("tune", "./l2", "--space", "int2.toml", "--budget", "110KiB", "--trials", "1", "--storage",
                           "s.db", "--study", "l2", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # the header's size (parameters) and the loading line's (every checkpoint tensor, LLaDA2's expert_bias buffer
    # too) were both just "counted": two sizes of one model. Each now says what it counts (numbers unchanged).
    out = flat(r.stdout)
    assert "(2 MoE layers x 8 experts, 117.53 KiB of parameters counted)" in out, out
    assert "(counted 117.56 KiB of checkpoint tensors > --budget 110KiB = 110.00 KiB)" in out, out
    refused = advisor("export", "l2", "0", "--storage", "s.db", "--to", "llama.cpp", cwd=tmp_path)
    one_error_line(refused, "LLaDA2")
    r = advisor("export", "l2", "0", "--storage", "s.db", "--to", "ktransformers", "-o", "kt.sh", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    script = (tmp_path / "kt.sh").read_text()
    assert "--kt-method LLAMAFILE" in script
    note = next(ln for ln in said_lines(r.stderr) if "--kt-weight-path is a placeholder" in ln)
    assert "--to llama.cpp`" not in note.replace("`advisor export --to llama.cpp` writes no script", "")
    assert "no diffusion path for LLaDA2" in note and "convert_hf_to_gguf.py has no LLaDA2MoeModelLM" in note, note
    # llama.cpp's converter stops at LLaDA2MoeModelLM ('Model LLaDA2MoeModelLM is not supported', 0c1e570): the note
    # sent the user to make the GGUF with it
    assert "made with llama.cpp's own convert_hf_to_gguf.py" not in note, note


def test_an_export_of_a_study_whose_directory_moved_says_the_path_it_names_is_not_here(moved_study):
    """The exports name the directory the study loaded (`vllm serve /old/path`), without a word that it is gone."""
    root = moved_study
    r = advisor("export", "s", "0", "--storage", "s.db", "--to", "vllm", "-o", "serve.sh", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"vllm serve {root / 'ckpt'}" in (root / "serve.sh").read_text()
    assert f"note: the study loaded its model from the directory {root / 'ckpt'}, which is not here" in flat(r.stderr)
    shutil.copytree(root / "elsewhere" / "ckpt", root / "ckpt")  # back where the study loaded it: no such note
    r = advisor("export", "s", "0", "--storage", "s.db", "--to", "json", cwd=root)
    assert r.returncode == 0 and "is not here" not in r.stderr, r.stderr
    shutil.rmtree(root / "ckpt")


def test_the_moved_directory_note_is_in_the_exported_file_too(moved_study):
    """The note that the directory an export names is gone was printed but left out of the file it is about: the
    script's or recipe's `# note:` comments (the vllm export is its notes as comments and one command) held the
    target's own notes only, so whoever runs the file later is not told (new user 23)."""
    root = moved_study
    for target, out in (("vllm", "n.sh"), ("hf", "n.py"), ("llama.cpp", "n2.sh")):
        r = advisor("export", "s", "0", "--storage", "s.db", "--to", target, "-o", out, cwd=root)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = (root / out).read_text().splitlines()
        note = f"# note: the study loaded its model from the directory {root / 'ckpt'}, which is not here"
        at = next(i for i, line in enumerate(lines) if line.startswith(note))
        assert all(line.startswith("#") for line in lines[:at]), lines[:at + 1]  # in the opening comments


def test_an_export_of_a_study_tuned_on_a_relative_directory_names_it_where_the_report_loads_it(moved_study):
    """A study tuned on `./ckpt`, exported from a directory that holds `ckpt`: the report loads that one (cc9839b),
    the exports named the recorded directory, gone, and said to change it. They name the same directory as the
    report now (`recorded_model`), absolute, with a note that the export does not check its fingerprint."""
    root = moved_study
    r = advisor("export", "s", "0", "--storage", "../s.db", "--to", "vllm", "-o", "serve.sh", cwd=root / "elsewhere")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"vllm serve {root / 'elsewhere' / 'ckpt'}" in (root / "elsewhere" / "serve.sh").read_text()
    said = flat(r.stderr)
    assert (f"note: the study loaded its model from the directory {root / 'ckpt'}, which is not here: the export "
            f"names {root / 'elsewhere' / 'ckpt'}, the directory here of the name it ran as") in said, said
    assert "change it to where the checkpoint is" not in said, said


def test_a_path_longer_than_the_terminal_is_printed_whole_in_a_wrapped_note(tmp_path):
    """A Hugging Face cache path runs past 80 columns; the note's wrap folded it at the edge, so the path a user
    copies from the note had a line break and an indent inside it. Now it stays whole on a line of its own."""
    deep = tmp_path / "models--inclusionAI--LLaDA-MoE-7B-A1B-Instruct" / "snapshots" / ("0123456789abcdef" * 3)
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(deep)
    r = advisor_in_process("tune", str(deep), "--space", "quick", "--budget", "80KiB", "--trials", "1", "--storage",
                           "s.db", "--study", "s", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(tmp_path / "models--inclusionAI--LLaDA-MoE-7B-A1B-Instruct")
    r = advisor("export", "s", "0", "--storage", "s.db", "--to", "vllm", "-o", "serve.sh", cwd=tmp_path)
    assert r.returncode == 0 and len(str(deep)) > 80, r.stderr
    assert str(deep) in [ln.strip().rstrip(",") for ln in r.stderr.splitlines()], r.stderr


def test_the_default_budget_of_a_saved_tiny_model_holds_it_as_it_runs_offloaded(tmp_path):
    """The quick space's default budget, 0.6 x a saved tiny Qwen3-MoE's 93.38 KiB = 56.02 KiB, loads it offloaded,
    whose activation allowance and staging buffers put its least configuration at 64.45 KiB: `advisor tune DIR
    --space quick` refused the budget it had chosen itself (`tiny:qwen3_moe`, built in memory and never offloaded,
    ran). The default is now 0.6 of the way from that least configuration to the model, and the header says so."""
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(tmp_path / "ck")
    r = advisor_in_process("tune", "./ck", "--space", "quick", "--trials", "1", "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = flat(r.stdout)
    assert ("budget: 81.80 KiB (quick space default: 0.6 of the way from its least configuration as the model runs, "
            "64.45 KiB, to the model's counted 93.38 KiB; 0.6 x the model's, 56.02 KiB, cannot hold that "
            "configuration)") in out, out
    assert "loading: offloaded" in out and "1 finished trial, 0 over budget" in out, out
