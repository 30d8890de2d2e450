"""Leftovers of new user 16's pass, through the CLI as a user runs it: each test failed before its fix."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("import sys\nfrom advisor.cli import run\nsys.argv = ['advisor', *sys.argv[1:]]\ntry:\n    run()\n"
         "except SystemExit as e:\n"
         "    print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers', 'sqlalchemy') if m in sys.modules), 'exit', e.code)\n")


def _heavy(*args: str, cwd) -> subprocess.CompletedProcess:
    """`advisor ARGS` through the entry point in a fresh process, printing which heavy modules it imported."""
    return subprocess.run([sys.executable, "-c", HEAVY, *args], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})


def test_tune_of_a_mistyped_model_is_refused_before_the_storage_opens(tmp_path):
    """`advisor tune bundeld` / `tune tiny:llada` took 1.3-2.1 s to say the MODEL was wrong: the storage was
    checked first (optuna and SQLAlchemy imported). The spec is now checked first, importing neither."""
    for args, said in ((("tune", "bundeld"), "did you mean 'bundled'"),
                       (("tune", "tiny:llada"), "unknown tiny family 'llada'")):
        p = _heavy(*args, cwd=tmp_path)
        assert said in p.stderr and "HEAVY [] exit 2" in p.stdout, p.stdout + p.stderr
        assert not (tmp_path / "advisor.db").exists() and not list(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_a_dense_model_directory_is_refused_in_one_line_before_transformers(tmp_path):
    """A model directory of a dense model (config.json model_type bert) printed transformers' `If you want to use
    BertLMHeadModel as a standalone ...` warning before the one-line error, after 8 s of loading it. Its config
    names no experts: it is refused as no MoE model, in one line, before torch or transformers import."""
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64)
    BertModel(config).save_pretrained(tmp_path / "m")
    for args in (("inspect", "m"), ("tune", "m", "--trials", "1")):
        p = _heavy(*args, cwd=tmp_path)
        assert p.stderr.splitlines() == [p.stderr.strip()] and p.stderr.startswith(
            "error: m: model type 'bert' is no MoE model (its config.json names no experts); supported: "), p.stderr
        assert "HEAVY [] exit 2" in p.stdout, p.stdout


def test_tune_and_simulate_read_a_profile_from_profiles_dir(tmp_path):
    """A profile measured with `profile --profiles-dir lab` was usable by recommend and export (--profiles-dir) but
    by tune and simulate only through $ADVISOR_PROFILES_DIR: `--profiles-dir` was "No such option". Both take it
    now, as recommend does (and refuse it without --gpu, as recommend does)."""
    import json

    from typer.testing import CliRunner

    from advisor.hardware.profiles import HardwareProfile, save_profile
    from tests.cli_helpers import advisor_entry
    from tests.offload_helpers import cli_trace

    save_profile(HardwareProfile("Lab Card 7", 2**30, 3.0, 2.0, 12.0, "measured:2026-12-06", "PCIe 3.0 x4"),
                 tmp_path / "lab")
    gpu = ("--gpu", "Lab Card 7", "--profiles-dir", "lab")
    r = advisor_entry("tune", "tiny:qwen3_moe", *gpu, "--budget", "2GiB", cwd=tmp_path)  # the card's 1 GiB, from lab
    assert r.returncode == 2 and "more than the Lab Card 7's memory (1.00 GiB, measured:2026-12-06)" in r.stderr, r.stderr
    r = advisor_entry("tune", "tiny:qwen3_moe", "--profiles-dir", "lab", cwd=tmp_path)
    assert r.returncode == 2 and "--profiles-dir needs --gpu NAME" in r.stderr, r.stderr
    cli_trace(CliRunner(), tmp_path / "t.npz")
    r = advisor_entry("simulate", "t.npz", *gpu, "--policy", "lru", "--json", "o.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    link = json.loads((tmp_path / "o.json").read_text())["link"]
    assert link == {"name": "Lab Card 7", "source": "measured:2026-12-06"}, link


def test_profile_list_says_a_cpu_profiles_memory_is_host_ram(tmp_path):
    """`profile --list` showed a `profile --cpu` profile as "cpu x86_64 vm: 23.6 GiB, pinned ..." as if a GPU had
    that memory; it is the host's RAM (`--gpu` of it budgets nothing), and the line says so. A GPU's stays bare."""
    import json

    from tests.cli_helpers import advisor_entry, flat

    cpu = {"name": "cpu x86_64 vm", "memory_bytes": int(23.6 * 2**30), "h2d_gbps_pinned": 2.8,
           "h2d_gbps_pageable": 2.8, "copy_latency_us": 3.0, "source": "measured-cpu:2026-12-06"}
    gpu = {"name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 << 30, "h2d_gbps_pinned": 21.7,
           "h2d_gbps_pageable": 9.8, "copy_latency_us": 14.0, "source": "measured:2026-12-01"}
    (tmp_path / "p").mkdir()
    for d in (cpu, gpu):
        (tmp_path / "p" / f"{d['name'].split()[-1]}.json").write_text(json.dumps(d))
    r = advisor_entry("profile", "--list", "--profiles-dir", "p", cwd=tmp_path, env={"COLUMNS": "200"})
    out = flat(r.stdout)
    assert r.returncode == 0 and "cpu x86_64 vm: 23.60 GiB host RAM, pinned 2.8 GB/s" in out, r.stdout
    assert "NVIDIA GeForce RTX 4090: 24.00 GiB, pinned 21.7 GB/s" in out, r.stdout


def test_inspect_piped_ends_no_line_with_spaces(tmp_path):
    """`advisor inspect MODEL --budget B | less` padded the summary paragraph and the fit table's title and caption
    with spaces to 80 columns (rich's wrapping of them); each is now wrapped as every other paragraph is."""
    from tests.cli_helpers import advisor_in_process

    # piped, through the CLI in this process (CliRunner's output is no terminal): as a subprocess it imported torch again
    r = advisor_in_process("inspect", "tiny:qwen3_moe", "--budget", "200KiB", cwd=tmp_path, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "routed expert weights (counted);" in r.stdout and "counted bytes (payload + scales)" in r.stdout, r.stdout
    assert [ln for ln in lines if ln != ln.rstrip()] == [] and max(map(len, lines)) <= 80, r.stdout


def test_pareto_and_tune_titles_count_the_same_things(tmp_path, monkeypatch):
    """tune's front title read "(9 points; 20 finished trials, 0 over budget, 0 failed)", pareto's "(13 points; 23
    finished trials, 0 failed)": pareto did not count the trials stored over budget. Both titles are now one text
    (`front_counts`), so pareto of the study a tune just ran repeats its counts."""
    import re

    from tune_helpers import over_budget_study

    from advisor.cli import app

    run, r = over_budget_study(tmp_path, monkeypatch, columns=250)  # some trials stored over budget
    counts = re.compile(r"\((\d+ points?; \d+ finished trials?, (\d+) over budget, \d+ failed)\)")
    tuned = counts.search(" ".join(r.output.split()))
    assert tuned and int(tuned[2]) > 0, r.output
    p = run.invoke(app, ["pareto", "s", "--storage", "t.db", "--no-plots"])
    assert p.exit_code == 0, p.output
    shown = counts.search(" ".join(p.output.split()))
    assert shown and shown[1] == tuned[1], (tuned[1], p.output)


def test_readme_says_which_json_options_take_a_file():
    """The README said "`--json=~/r.json` writes $HOME/r.json" of every `--json`, yet on recommend and export it is a
    flag (JSON on stdout: `recommend --json=~/r.json` is refused) while eval, simulate and quant-report take a file.
    The README names each kind, and the CLI's options are what it says."""
    import typer

    from advisor.cli import app
    from tests.test_readme_examples import README

    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}
    kinds = {name: next(p for p in commands[name].params if "--json" in p.opts).is_flag
             for name in ("recommend", "export", "eval", "simulate", "quant-report")}
    assert kinds == {"recommend": True, "export": True, "eval": False, "simulate": False, "quant-report": False}
    text = " ".join(README.read_text().split())
    assert ("on `eval`, `simulate` and `quant-report` it names a file the results are also written to (`--json "
            "FILE`); on `recommend` and `export` it is a flag that prints the answer as JSON on stdout") in text
    assert "`simulate t.npz --json=~/r.json` writes `$HOME/r.json`" in text
