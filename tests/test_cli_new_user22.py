"""What a new user met in pass 22: each test failed before its fix."""

from __future__ import annotations

import re

from tests.cli_helpers import advisor_entry, flat, one_error_line


def test_inspect_budget_names_what_tunes_default_space_needs_where_the_least_slot_is_below_it(tmp_path):
    """`advisor inspect bundled --budget 1MiB` said "one int2 slot per MoE layer needs 1.70 MiB: --budget 1.71MiB or
    more (misses computed on the CPU)", and nothing else; `advisor tune --budget 1.71MiB` then refused it: its
    default space, `quick`, copies every miss, so its least configuration stages the streamed experts (1.83 MiB).
    At a budget that holds one int2 slot, the table showed that slot and no word that `tune`'s default space (for
    a dLLM checkpoint, `dllm`: bf16, int8, int4) holds nothing there. The title now also says what `advisor
    tune`'s default space needs, the figure `tune` refuses below (here tiny:llada_moe, whose int2 slot fits 92KiB)."""
    r = advisor_entry("inspect", "tiny:llada_moe", "--budget", "92KiB", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    title = flat(r.stdout)
    m = re.search(r"left for expert slots; `advisor tune`'s default space dllm needs ([\d.]+) KiB: --budget "
                  r"([\d.]+)KiB or more;", title)
    assert m and 92 < float(m[1]) <= float(m[2]), title
    assert re.search(r"int2 .* 1 \(12%\)", title), title  # the int2 slot that fits, with no space of tune's
    said = one_error_line(advisor_entry("tune", "tiny:llada_moe", "--budget", "92KiB", "--trials", "1", "--storage",
                                        "sqlite:///s.db", cwd=tmp_path), "the smallest configuration needs ")
    assert f"needs {m[1]} KiB" in said, (said, title)


def test_threads_above_the_usable_cores_are_said_where_times_are_measured(tmp_path):
    """`--threads 16` on a 2-core host (the README's real-GPU commands pass 16) ran silently in `tune`, `eval` and
    `trace`, and stored CPU expert times measured oversubscribed, up to 29x one thread's; `profile` said "other
    work holds these cores". Each now says in a note that the threads exceed the cores this process may use."""
    import torch

    from advisor.commands import usable_cores

    n = usable_cores() + 1
    said = f"note: --threads {n} is more than the {n - 1} cores this process may use"
    before = torch.get_num_threads()
    try:
        runs = {
            "profile": advisor_entry("profile", "--cpu", "--expert-shape", "8x8", "--repeats", "1", "--threads",
                                     str(n), "--profiles-dir", "p", cwd=tmp_path),
            "trace": advisor_entry("trace", "tiny:llada_moe", "--threads", str(n), "--steps", "2", "-o", "t.npz",
                                   cwd=tmp_path),
            "tune": advisor_entry("tune", "tiny:llada_moe", "--threads", str(n), "--trials", "1", "--storage",
                                  "sqlite:///s.db", cwd=tmp_path),
        }
    finally:
        torch.set_num_threads(before)  # the commands ran in this process: its later tests keep their threads
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stdout + r.stderr)
        assert said in flat(r.stdout + r.stderr), (name, r.stdout + r.stderr)
    assert "other work holds these cores" not in flat(runs["profile"].stderr), runs["profile"].stderr


def test_recommend_over_studies_priced_differently_says_so(tmp_path):
    """The README tunes, then after `advisor profile` says to pass `--gpu`: a second study of the same model in the
    same database. `recommend` without --study ranked both studies' points by (or broke ties on) time per token
    modelled for different GPUs and links, and gave the next best's ratio across them, without a word."""
    for study, gpu in (("plain", []), ("on-4090", ["--gpu", "RTX 4090"])):
        r = advisor_entry("tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1", "--study", study,
                          "--storage", "sqlite:///s.db", *gpu, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    r = advisor_entry("recommend", "--storage", "s.db", "--prefer", "latency", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    said = flat(r.stdout)
    assert "time per token was obtained differently by study (modelled for H200 141GB (no --gpu at tune time) in " \
           "plain; modelled for RTX 4090 24GB in on-4090)" in said, said
    assert "--study NAME ranks one study's points" in said, said
    r = advisor_entry("recommend", "--storage", "s.db", "--prefer", "latency", "--study", "plain", cwd=tmp_path)
    assert r.returncode == 0 and "obtained differently" not in flat(r.stdout), r.stdout


def test_pareto_plots_line_wraps_under_itself(tmp_path):
    """`advisor pareto STUDY` ended with `plots: A.png  B.html` printed as rich markup at the terminal's width: where
    both did not fit, the first line kept its two trailing spaces and the second path began at column 0, read as
    something other than a plot (the study `tiny:qwen3_moe-toy-quick` at 80 columns did this with the default -o).
    It wraps as the tool's other long lines do, the second path under the first."""
    import shutil
    from pathlib import Path

    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", tmp_path / "a.db")
    r = advisor_entry("pareto", "bundled-example", "--storage", "a.db", "-o", "plots-for-the-worked-example",
                      cwd=tmp_path, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stdout + r.stderr
    tail = r.stdout.rstrip("\n").splitlines()[-2:]
    assert tail == ["plots: plots-for-the-worked-example/bundled-example.png",
                    "       plots-for-the-worked-example/bundled-example.html"], tail
