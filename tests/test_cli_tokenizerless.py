"""What a demanding new user met tuning a checkpoint without a tokenizer (a LLaDA-MoE-shaped one written in the official
key layout, as `benchmarks/big_model.py` writes them, or a `tiny:` model)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_tune_of_a_model_without_a_tokenizer_says_its_prompts_are_random_ids(tmp_path, monkeypatch):
    """The header said `task toy` and nothing else, while every trace and fidelity prompt was random token ids
    (`advisor trace` of the same model said so in a note). In this process (CliRunner): a subprocess paid ~8 s of
    CPU importing torch and transformers for nothing this test is about."""
    from advisor.tune.space import load_space

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "tiny.toml"
    space.write_text(load_space("quick").text.replace('accuracy = "maximize"', 'fidelity_top1 = "maximize"'))
    r = _cli("tune", "tiny:qwen3_moe", "--space", str(space), "--trials", "1")
    assert r.exit_code == 0, r.output[-4000:]
    out = " ".join(r.stdout.split())
    assert "| task toy (not run: no accuracy objective) |" in out, out  # as pareto heads it (test_cli_new_user14)
    assert ("note: tiny:qwen3_moe has no tokenizer: its traces, fidelity and live trials decode seeded random token "
            "ids (seed 0), not the toy task's prompts") in out, out


def _cli(*args: str):
    from typer.testing import CliRunner

    from advisor.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_a_shipped_space_tunes_a_model_without_a_tokenizer_as_fidelity_and_every_reader_says_so(shm_tmp_path,
                                                                                               monkeypatch):
    """Every shipped space has an `accuracy` objective, which a model without a tokenizer cannot measure, so
    `advisor tune tiny:qwen3_moe` (and a checkpoint without tokenizer files) was refused whatever --space named,
    and the README's way out was a `sed` of advisor/tune/spaces/quick.toml, a path a wheel install does not have.
    A shipped space now tunes its accuracy objective as fidelity_top1, with one note; the study resumes (the
    space named before the model loads, when whether it has a tokenizer is not known yet) and its readers name
    fidelity_top1, not accuracy (the report's Pareto section too)."""
    import json

    import optuna

    monkeypatch.chdir(shm_tmp_path)
    base = ("tune", "tiny:qwen3_moe", "--space", "quick", "--storage", "t.db", "--study", "s")
    r = _cli(*base, "--trials", "1")
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "objectives: h2d_bytes_per_token (min), fidelity_top1 (max), peak_gpu_bytes (min)" in out, out
    notes = [ln for ln in r.output.splitlines() if "tuned as fidelity_top1" in ln]
    assert len(notes) == 1 and notes[0].startswith("note: tiny:qwen3_moe has no tokenizer, so no task accuracy: "
                                                   "the quick space's accuracy objective is tuned as fidelity_top1"), \
        r.output

    again = _cli(*base, "--trials", "2")  # the same command resumes: no "another search space" or objectives
    assert again.exit_code == 0, again.output
    assert "2 finished trials" in " ".join(again.output.split()), again.output

    attrs = optuna.load_study(study_name="s", storage="sqlite:///t.db").user_attrs
    assert attrs["objectives"] == {"h2d_bytes_per_token": "minimize", "fidelity_top1": "maximize",
                                   "peak_gpu_bytes": "minimize"}, attrs
    assert "\nfidelity_top1 = " in attrs["space_toml"] and "\naccuracy = " not in attrs["space_toml"]

    front = _cli("pareto", "s", "--storage", "t.db", "--no-plots")
    assert front.exit_code == 0 and "top-1 agree *" in front.output and "accuracy" not in front.output, front.output
    floor = _cli("recommend", "--study", "s", "--storage", "t.db", "--budget", "1MiB", "--min-accuracy", "0.5")
    assert floor.exit_code != 0 and "no task accuracy" in str(floor.exception), floor.output
    drop = _cli("recommend", "--study", "s", "--storage", "t.db", "--budget", "1MiB", "--max-accuracy-drop", "0.02")
    assert drop.exit_code == 0 and "no accuracy floor applies (--max-accuracy-drop 0.02 is not applied: there is no task " \
        "accuracy)" in " ".join(drop.output.split()), drop.output
    assert "highest top-1 agreement with full precision" in drop.output, drop.output
    trial = json.loads(_cli("recommend", "--study", "s", "--storage", "t.db", "--budget", "1MiB",
                            "--json").output)["chosen"]["trial"]
    exported = _cli("export", "s", str(trial), "--storage", "t.db", "--to", "json", "-o", "r.json")
    assert exported.exit_code == 0, exported.output
    metrics = json.loads((shm_tmp_path / "r.json").read_text())["metrics"]
    assert "fidelity_top1" in metrics and "accuracy" not in metrics, metrics

    # the report's Pareto section plotted and tabulated accuracy (nothing: every point stores none) and said its
    # stars keep within --max-accuracy-drop 0.05 of full precision, a floor recommend does not apply here
    rep = _cli("report", "s", "--storage", "t.db", "-o", "rep")
    assert rep.exit_code == 0, rep.output
    md = (shm_tmp_path / "rep" / "report.md").read_text()
    section = md[md.index("## Pareto front"):]
    section = section[:section.index("\n## ", 1)]
    assert section.startswith("## Pareto front: transfer vs top-1 agreement vs memory"), section
    assert "--max-accuracy-drop" not in section and "no accuracy floor applies" in section, section
    assert "| budget | trial | H2D / token | top-1 agreement | peak GPU memory |" in section, section
    # its accuracy figure's caption said "Task accuracy with 95% confidence interval" of a study that scores no task,
    # and its block section hedged "autoregressive (or no block lengths were asked for)" where it knows which
    flat = " ".join(md.split())
    assert "Task accuracy: not measured (the study's model has no tokenizer, so its plans are judged by fidelity " \
        "alone)" in flat and "Task accuracy with 95% confidence" not in flat, flat
    assert "Not measured: the study's model is autoregressive - one forward per generated token" in flat, flat
    assert "or no block lengths were asked for" not in flat, flat
    # an autoregressive model has no denoising blocks: `--block-lengths` given for its report was ignored without
    # a word (the report said "Not measured"); it is refused in one line, before the model loads
    blocks = _cli("report", "s", "--storage", "t.db", "-o", "rep2", "--block-lengths", "8,16")
    assert blocks.exit_code != 0 and not (shm_tmp_path / "rep2").exists(), blocks.output
    assert str(blocks.exception) == ("--block-lengths 8,16: tiny:qwen3_moe (qwen3_moe) decodes autoregressively, one "
                                     "token per forward, with no denoising blocks; drop it (its report has no "
                                     "block-diffusion section)"), blocks.output


def test_a_space_file_with_accuracy_is_refused_for_a_model_without_a_tokenizer_saying_what_works(tmp_path):
    """A file the user wrote says what it tunes: its accuracy objective is not rewritten. The refusal said to
    "use a space whose [objectives] use fidelity_top1", which a wheel install had no file to copy for; it names
    the file's line and the one-step way now (leave --space out, or a shipped space)."""
    from advisor.tune.space import load_space

    (tmp_path / "mine.toml").write_text(load_space("quick").text)
    r = _cli("tune", "tiny:qwen3_moe", "--space", str(tmp_path / "mine.toml"), "--storage",
             f"sqlite:///{tmp_path}/t.db", "--trials", "1")
    msg = str(r.exception)
    assert r.exit_code != 0 and msg.startswith(f"{tmp_path / 'mine.toml'}:22: objectives.accuracy: tiny:qwen3_moe "
                                               "has no tokenizer"), r.output
    assert "leave --space out or give a shipped space" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("name", ["quick", "default", "dllm"])
def test_every_shipped_space_has_a_fidelity_form_with_the_same_other_settings(name):
    """A shipped space that could not be rewritten (a second accuracy line, a fidelity_floor, which needs the
    accuracy objective) would fail for every tokenizer-less model; the rewrite changes the objective only."""
    import dataclasses

    from advisor.tune.space import load_space

    space = load_space(name)
    fid = space.without_tokenizer("m")
    assert list(fid.objectives) == [("fidelity_top1" if m == "accuracy" else m) for m in space.objectives]
    assert fid.fingerprint != space.fingerprint and fid.shipped and fid.name == space.name
    assert "fidelity_top1" in fid.fidelity_note("m") and space.fidelity_note("m") == ""
    same = {f.name for f in dataclasses.fields(space)} - {"text", "objectives", "fidelity_for_accuracy"}
    assert all(getattr(fid, f) == getattr(space, f) for f in same)
    assert fid.without_tokenizer("m") is fid


def test_a_shipped_space_named_by_a_relative_path_through_the_search_spaces_link_is_shipped(tmp_path, monkeypatch):
    """Whether a space was shipped hung on how its path was typed (a prefix test against the package directory):
    `--space quick` was tuned as fidelity_top1 for a model without a tokenizer, `--space search_spaces/quick.toml`
    (the checkout's link to advisor/tune/spaces, which the README's layout names) was refused as the user's own
    file - the same file. A path that resolves to a shipped file is shipped; a copy elsewhere is not."""
    from advisor.tune.space import load_space

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    assert Path("search_spaces").is_symlink()
    r = _cli("tune", "tiny:qwen3_moe", "--space", "search_spaces/quick.toml", "--storage",
             f"sqlite:///{tmp_path}/t.db", "--study", "s", "--trials", "1")
    assert r.exit_code == 0, f"{r.output}\n{r.exception}"
    assert "the quick space's accuracy objective is tuned as fidelity_top1" in " ".join(r.output.split()), r.output
    for spelling in ("dllm", "search_spaces/dllm.toml", "advisor/tune/spaces/dllm.toml",
                     "advisor/tune/../tune/spaces/dllm.toml", str(repo / "search_spaces" / "dllm.toml")):
        assert load_space(spelling).shipped, spelling
    (tmp_path / "dllm.toml").write_text(load_space("dllm").text)
    assert not load_space(str(tmp_path / "dllm.toml")).shipped


def test_a_diffusion_gemma_study_with_the_old_step_count_is_not_resumed(shm_tmp_path, monkeypatch):
    """DiffusionGemma studies stored before 2026-12-05 counted the encoder pass that opens a canvas as a denoising
    step (steps per block S+1, now S): resumed, their trials and the new ones would mix two TIDE schedules in one
    front. The resume is refused in one line; the same study with today's count resumes."""
    import json
    import sqlite3

    monkeypatch.chdir(shm_tmp_path)
    base = ("tune", "tiny:diffusion_gemma", "--space", "quick", "--budget", "64MiB", "--storage", "t.db", "--study", "dg")
    r = _cli(*base, "--trials", "1")
    assert r.exit_code == 0, r.output
    r = _cli(*base, "--trials", "1")  # today's count: resumes
    assert r.exit_code == 0, r.output
    with sqlite3.connect("t.db") as c:  # one trial stored as before the fix: one step more per block
        ((tid, raw),) = c.execute("SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'config' "
                                  "ORDER BY trial_id LIMIT 1").fetchall()
        config = json.loads(raw)
        # the trials say how they counted (export and recommend note a DiffusionGemma study that does not)
        assert config["decoding"]["steps_per_block_counts"] == "denoising steps"
        del config["decoding"]["steps_per_block_counts"]
        steps = config["decoding"]["steps_per_block"]

        def store(decoding: dict) -> None:
            c.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'config'",
                      (json.dumps({**config, "decoding": decoding}), tid))
            c.commit()

        store({**config["decoding"], "steps_per_block": steps + 1})
        r = _cli(*base, "--trials", "1")
        line = str(r.exception)  # (the CLI's entry prints it as one error line, exit code 2)
        assert r.exit_code != 0 and "\n" not in line, r.output
        assert (f"study 'dg': its trials decoded {steps + 1} denoising steps per block, this run decodes {steps}"
                in line and "use a new --study name" in line), line
        # the same steps, but no mark of how they were counted: stored before block_aware and fidelity were fixed
        store(config["decoding"])
        r = _cli(*base, "--trials", "1")
        line = str(r.exception)
        assert r.exit_code != 0 and "\n" not in line, r.output
        assert ("its DiffusionGemma trials were stored before 2026-12-05" in line
                and "use a new --study name" in line), line


def test_every_export_header_and_recommend_json_say_the_task_was_not_run(shm_tmp_path, monkeypatch):
    """A study of a checkpoint without a tokenizer measured no task accuracy: pareto, studies, recommend and the
    report said 'toy (not run: no tokenizer; fidelity on random token ids)', but the header of every export
    (llama.cpp, hf, vLLM, KTransformers) and `recommend --json` said plain `task toy`. They say the same now;
    `recommend --json` keeps `task` the name (what --task matches) beside `task_text`."""
    import json

    import torch

    from advisor.models.tiny import build_tiny

    monkeypatch.chdir(shm_tmp_path)
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained("ck")  # no tokenizer files: a directory, so every
    r = _cli("tune", str(shm_tmp_path / "ck"), "--space", "quick", "--trials", "1", "--budget", "1MiB",  # target
             "--storage", "t.db", "--study", "s")                                                        # exports it
    assert r.exit_code == 0, r.output
    said = "toy (not run: no tokenizer; fidelity on random token ids)"
    for target in ("llama.cpp", "hf", "vllm", "ktransformers"):
        out = _cli("export", "s", "0", "--to", target, "--storage", "t.db")
        assert out.exit_code == 0, (target, out.output)
        head = next(ln for ln in out.output.splitlines() if "fingerprint" in ln)
        assert f"; task {said}; trial run on" in head, (target, head)
    rec = _cli("recommend", "--study", "s", "--storage", "t.db", "--budget", "1MiB", "--json")
    assert rec.exit_code == 0, rec.output
    chosen = json.loads(rec.output)["chosen"]
    assert chosen["task"] == "toy" and chosen["task_text"] == said, chosen
