"""New user 33's findings, through the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from tests.cli_helpers import advisor, advisor_in_process, one_error_line
from tests.tune_helpers import few_problems_quick_space

EXAMPLE_DB = Path(__file__).resolve().parent.parent / "studies" / "example" / "advisor.db"


def test_json_export_of_a_default_link_study_writes_no_memory_as_null(tmp_path):
    """The example was tuned without --gpu: its copies were priced on the default link, a profile that gives no
    memory. The export wrote `hardware.memory_bytes: 0`, which reads as a real value; it is null now."""
    r = advisor("export", "bundled-example", "129", "--storage", str(EXAMPLE_DB), "--to", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    hw = json.loads(r.stdout)["hardware"]
    assert hw["name"] == "default PCIe 4.0 x16 link" and hw["h2d_gbps_pinned"] == 25.0, hw
    assert "memory_bytes" in hw and hw["memory_bytes"] is None, hw


def test_tune_refuses_a_storage_file_in_a_missing_directory_as_export_o_does(tmp_path):
    """`tune --storage sqlite:///mistyped/dir/a.db` made the folders without a word; `export -o` refuses a missing
    folder. The tune refuses it too, in one line saying to create it, before the model loads, and makes nothing;
    the default database (`studies/advisor.db`) still has its folder made."""
    missing = tmp_path / "nonexistent" / "dir"
    r = advisor("tune", "--storage", f"sqlite:///{missing}/a.db", "--trials", "1", cwd=tmp_path)
    line = one_error_line(r, f"directory {missing} does not exist", f"mkdir -p {missing}")
    assert "--storage" in line and not (tmp_path / "nonexistent").exists(), line
    r = advisor("export", "bundled-example", "129", "--to", "json", "-o", str(missing / "x.json"), "--storage", str(EXAMPLE_DB),
                cwd=tmp_path)
    one_error_line(r, f"{missing} does not exist")
    (tmp_path / "quick.toml").write_text(few_problems_quick_space())  # quick's trials on fewer problems: ~2 s
    r = advisor_in_process("tune", "--space", "quick.toml", "--trials", "1", "--budget", "4MiB", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "studies" / "advisor.db").is_file(), r.stdout + r.stderr


def test_quant_report_takes_threads_as_eval_and_trace_do():
    """`quant-report` had no --threads while `eval` and `trace` take one: on a shared host it ran on every core.
    It takes the same option now and runs torch on that many threads."""
    import torch
    from typer.testing import CliRunner

    from advisor.cli import app

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        res = CliRunner().invoke(app, ["quant-report", "tiny:qwen3_moe", "--formats", "int8", "--samples", "2",
                                       "--layers", "0", "--max-experts", "1", "--threads", "1"])
        assert res.exit_code == 0, res.output
        assert "expert quantization quality" in res.output and torch.get_num_threads() == 1, res.output
    finally:
        torch.set_num_threads(before)


def test_vllm_export_of_diffusion_gemma_sets_the_decoding_in_the_command(tmp_path):
    """The note said to set vLLM's canvas_length and max_denoising_steps but not how; then it gave the flag in a
    note only, so the `vllm serve` line as written served vLLM's own decoding. The flag is in the command now
    (`--diffusion-config`, a JSON object: vLLM 0.33.0 vllm/engine/arg_utils.py, vllm/config/diffusion.py), with
    the study's values, one shell word that reads back as that object."""
    from recommend_helpers import make_db, model_meta, point

    dg = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128), "family": "diffusion_gemma",
          "is_diffusion": True}
    p = point("dg", 1, "int8", 8, acc=0.9, h2d=1, peak_gib=1, meta=dg, model="/models/dg")
    p.config["decoding"] = {"block_length": 32, "steps_per_block": 16, "generate": {"max_new_tokens": 64, "steps": 16}}
    url = make_db(tmp_path / "a.db", [p])
    r = advisor("export", "dg", "1", "--to", "vllm", "--storage", url, "-o", "serve.sh", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    command = shlex.split((tmp_path / "serve.sh").read_text().splitlines()[-1])
    assert command[:3] == ["vllm", "serve", "/models/dg"], command
    i = command.index("--diffusion-config")
    assert json.loads(command[i + 1]) == {"canvas_length": 32, "max_denoising_steps": 16}, command
    note = next(ln for ln in (tmp_path / "serve.sh").read_text().splitlines() if ln.startswith("# note: decoding:"))
    assert "the command sets them to the study's with --diffusion-config" in note, note


def test_tune_storage_with_a_tilde_the_shell_left_is_not_told_to_mkdir_a_directory_named_tilde(tmp_path):
    """`--storage=~/studies/a.db` (or quoted): the shell expands no '~' after '=' or in quotes, so the advisor got
    '~/studies/a.db', a directory named '~' here, and its refusal advised `mkdir -p '~'`, which makes ./~ (the tune
    then stores its study in it; `rm -rf ~` to clean it up removes the home directory). --storage expands the '~'
    now, as every path option does (`advisor.commands.user_path`): the refusal names the home's missing folder,
    whose mkdir is safe; a `~name` of no user is refused without the mkdir advice. Nothing is made."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {**os.environ, "HOME": str(home)}
    r = advisor("tune", "tiny:qwen3_moe", "--storage=~/studies/a.db", "--trials", "1", cwd=work, env=env)
    one_error_line(r, f"directory {home / 'studies'} does not exist", f"mkdir -p {home / 'studies'}")
    r = advisor("tune", "tiny:qwen3_moe", "--storage=~no-such-user-r34/a.db", "--trials", "1", cwd=work, env=env)
    line = one_error_line(r, "no directory named '~no-such-user-r34' here, and no user 'no-such-user-r34'")
    assert "mkdir" not in line, line
    assert list(work.iterdir()) == [] and list(home.iterdir()) == []
