"""What a new user met trying `--budgets` studies and answers at other budgets (pass 9): each test failed before
its fix.

- `advisor tune --budgets 10%,25%,50%` on the bundled model's default space queued nothing of the space at 10%
  (int2 at 1 slot per layer, offloaded, needs 1.83 MiB of its 1.53), without a word: only the baselines ran
  there, and `advisor report --memory` answered "no trial of this precision fits" in every row of that budget;
- with `--budgets`, the `quick` space's front (H2D bytes, accuracy, memory; no time per token) filled with the
  baselines that compute every miss on the CPU, and `recommend` picked one at 10.5 ms per token, without a word;
- `advisor report --memory 80%` of a study tuned at 50% gave, as the answer at 80%, the study's best within 50%
  (bf16 with the 8 slots 50% holds), without saying that nothing was tuned with more memory.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner


def invoke(*args: str):
    from advisor.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def budgets_study(tmp_path_factory):
    """(storage URL, output) of a tiny Qwen3-MoE study tuned with --budgets 1%,90.5KiB,50% (its budget: 50%)."""
    import torch

    torch.set_num_threads(1)
    url = f"sqlite:///{tmp_path_factory.mktemp('budgets') / 's.db'}"
    r = invoke("tune", "tiny:qwen3_moe", "--space", "quick", "--budgets", "1%,90.5KiB,50%", "--trials", "1",
               "--storage", url, "--study", "b")
    assert r.exit_code == 0, r.output
    return url, r.output


LEAST = "even its least (the resident weights and one int2 expert per MoE layer) needs 92.00 KiB (counted)"
"""The tiny model's least configuration in the quick space, counted by `least_uniform_peak` as the report counts it."""


def test_tune_names_a_budgets_value_at_which_no_configuration_of_the_space_fits(budgets_study):
    text = " ".join(budgets_study[1].split())
    assert (f"note: at --budgets 1% (91.23 KiB) no configuration of the space fits: {LEAST}; only the baseline "
            "strategies run there") in text, text
    assert "at --budgets 50%" not in text, text
    # below the resident weights and the activations, no baseline fits either: "only the baselines run" was false
    assert (f"note: at --budgets 90.5KiB (90.50 KiB) no configuration of the space fits: {LEAST}; nor does any "
            "baseline strategy, so none is queued there") in text, text


def test_tune_queues_no_baseline_at_a_budget_it_cannot_fit_and_says_so_in_one_line(budgets_study):
    """At --budgets 90.5KiB every baseline strategy counts 90.75 KiB with no expert on the GPU: it was queued there
    all the same (here folded into the no-cache and 1% trials, measured for nothing; at the study's own budget
    recorded over budget without running), and nothing said so. Now none is queued there, and one line names
    them with the bytes counted against the budget."""
    import optuna

    from advisor.baselines import baseline_keys

    url, output = budgets_study
    text = " ".join(output.split())
    assert text.count("baselines not queued") == 1, output
    assert ("note: --budgets baselines not queued where they cannot fit at all, their counted peak GPU memory with no "
            "expert on the GPU over the budget: at 90.5KiB (90.50 KiB): Mixtral-offloading-style, Fiddler-style, "
            "TIDE-style and llama.cpp-style count 90.75 KiB note:") in text, output
    trials = optuna.load_study(study_name="b", storage=url).get_trials(deepcopy=False)
    budgets = {k[1] for t in trials for k in baseline_keys(t.user_attrs)}
    assert budgets == {"-", "1%", "50%"}, budgets  # 1%: every baseline fits with no expert on the GPU


def test_report_says_a_baseline_not_queued_at_a_budget_is_over_it(budgets_study, tmp_path):
    url, _ = budgets_study
    r = invoke("report", "b", "--storage", url, "--memory", "90.5KiB,50%", "--block-lengths", "", "-o",
               str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    rows = [ln for ln in (tmp_path / "r" / "report.md").read_text().splitlines() if ln.startswith("| 90.5KiB |")
            and "-style" in ln]
    note = ("over budget: not queued, counts 90.75 KiB > 90.5KiB (90.50 KiB); with no expert on the GPU it cannot fit "
            "there at all")
    assert [ln.split(" | ")[1] for ln in rows] == ["Mixtral-offloading-style", "Fiddler-style", "TIDE-style",
                                                   "llama.cpp-style"], rows
    assert all(ln.endswith(f"| {note} |") for ln in rows), rows


def test_tune_says_cpu_baselines_can_crowd_the_front_of_a_space_without_time_per_token(budgets_study):
    """`advisor tune --budgets 10%,25%,50%` (the default `quick` space) stored a front of nothing but the 0-slot,
    every-miss-on-the-CPU baselines (0 H2D bytes, 10.5 ms per token) and `recommend` picked one of them beside an
    int4 point at 0.16 ms, without a word at tune time."""
    text = " ".join(budgets_study[1].split())
    assert ("note: --budgets adds baselines whose misses compute on the CPU (Fiddler-, TIDE-, llama.cpp-style), "
            "which moves almost no bytes; the quick space minimises H2D bytes and not time per token, so they can "
            "crowd its front") in text, text


def test_report_says_a_memory_above_the_studys_budget_is_answered_within_it(budgets_study, tmp_path):
    url, _ = budgets_study
    r = invoke("report", "b", "--storage", url, "--memory", "50%,100%", "--block-lengths", "", "-o",
               str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    note = ("--memory 100% (138.75 KiB) is above the study's budget of 114.75 KiB: no trial was tuned with more memory, "
            "so the answer there is the study's best within its budget, not what that memory would hold")
    assert f"note: {note}" in " ".join(r.stderr.split()), r.stderr
    assert f"**Note:** {note}" in (tmp_path / "r" / "report.md").read_text()
    assert "50% (" not in r.stderr  # the study's own budget is no note


def test_a_resume_refused_for_another_budget_shows_two_budgets_that_differ(budgets_study):
    """A study tuned with --budgets 1%,50% (50%: 114.75 KiB) resumed with `--budget 114.751KiB` was refused for
    "another memory budget (114.75 KiB)": the budget just given, as far as the line showed. It now shows both, in
    bytes where two decimals print them alike."""
    url, _ = budgets_study
    r = invoke("tune", "tiny:qwen3_moe", "--space", "quick", "--budget", "114.751KiB", "--trials", "1",
               "--storage", url, "--study", "b")
    assert ("study 'b' was run with another memory budget (117504 bytes; this run's: 117505 bytes, both 114.75 KiB "
            "to two decimals)") in str(r.exception), r.output
    r = invoke("tune", "tiny:qwen3_moe", "--space", "quick", "--budget", "100KiB", "--trials", "1",
               "--storage", url, "--study", "b")
    assert "another memory budget (114.75 KiB; this run's: 100.00 KiB)" in str(r.exception), r.output


def test_a_resume_after_the_profile_was_measured_again_says_so(tmp_path, monkeypatch):
    """`advisor profile` run again under the name a study was tuned with (`--gpu host`) made the resume fail with
    "was run with GPU profile 'host' (SOURCE), not 'host' (SOURCE); use ... the same --gpu" - the same --gpu it
    had, and, measured the same day, the same source twice. It now says the profile was measured again since and
    which figures differ."""
    import json

    import torch

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    profile = tmp_path / "studies" / "profiles" / "host.json"
    profile.parent.mkdir(parents=True)
    fields = {"name": "host", "memory_bytes": 2**30, "h2d_gbps_pinned": 20.0, "h2d_gbps_pageable": 10.0,
              "copy_latency_us": 1.0, "source": "measured-cpu:2026-12-06 host memcpy"}
    profile.write_text(json.dumps(fields))
    args = ("tune", "tiny:qwen3_moe", "--space", "quick", "--gpu", "host", "--budget", "150KiB", "--trials", "1",
            "--storage", "s.db", "--study", "h")
    assert invoke(*args).exit_code == 0
    profile.write_text(json.dumps({**fields, "h2d_gbps_pinned": 5.0}))
    r = invoke(*args)
    assert ("study 'h' was run with GPU profile 'host' as measured then (measured-cpu:2026-12-06 host memcpy); it has "
            "been measured again since (measured-cpu:2026-12-06 host memcpy; other h2d_gbps_pinned), which would "
            "price new trials otherwise; use a new --study name, or restore the profile file the study was tuned "
            "with") in str(r.exception), r.output


def test_profile_says_one_thread_in_the_singular_when_it_drops_earlier_cpu_times(tmp_path):
    """`advisor profile --threads 2` over a profile measured with one thread said "measured on CPU with 1 threads"."""
    import torch

    base = ("profile", "--cpu", "--profiles-dir", str(tmp_path), "--name", "h", "--repeats", "1")
    threads = torch.get_num_threads()
    try:  # in-process, `--threads 2` sets torch's threads for whatever runs next in this worker
        assert invoke(*base, "--expert-shape", "8x8").exit_code == 0
        r = invoke(*base, "--expert-shape", "8x16", "--threads", "2")
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "were not kept: measured on" in text and "with 1 thread; this run:" in text and ", 2 threads" in text, text


def test_the_least_configuration_is_the_space_s_smallest_cache_not_one_slot(tmp_path):
    """A space whose cache sizes begin at 4 slots per layer: its least configuration holds 4 int2 experts per layer.
    Counted at one slot (92.00 KiB), the note at 93KiB would say that nothing fits what needs less than it."""
    import torch

    torch.set_num_threads(1)
    space = tmp_path / "four.toml"
    space.write_text('[precision]\nformats = ["int4", "int2"]\n[cache]\nslots_per_layer = { low = 4, high = "all" }\n'
                     'policies = ["lru"]\n[objectives]\nh2d_bytes_per_token = "minimize"\n'
                     'peak_gpu_bytes = "minimize"\n')
    r = invoke("tune", "tiny:qwen3_moe", "--space", str(space), "--budgets", "93KiB,50%", "--trials",
               "1", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--study", "four")
    assert r.exit_code == 0, r.output
    assert ("note: at --budgets 93KiB (93.00 KiB) no configuration of the space fits: even its least (the resident "
            "weights and 4 int2 experts per MoE layer) needs 95.75 KiB (counted)") in " ".join(r.output.split())


def test_report_counts_a_formats_least_configuration_at_the_space_s_smallest_cache(tmp_path):
    """The report's "cannot fit" row counted one slot per layer whatever the study's space: with caches from 4 slots
    per layer, bf16 "needed" 96.75 KiB, under a 100 KiB --memory, so its row did not say that no configuration of
    it fits. It counts the space's smallest cache now (`smallest_cache`), as tune's note does."""
    import torch

    torch.set_num_threads(1)
    space = tmp_path / "four.toml"
    space.write_text('[precision]\nformats = ["bf16", "int2"]\n[cache]\nslots_per_layer = { low = 4, high = "all" }\n'
                     'policies = ["lru"]\n[objectives]\nh2d_bytes_per_token = "minimize"\n'
                     'peak_gpu_bytes = "minimize"\n')
    storage = f"sqlite:///{tmp_path / 's.db'}"
    r = invoke("tune", "tiny:qwen3_moe", "--space", str(space), "--budget", "105KiB", "--trials", "2",
               "--storage", storage, "--study", "four")
    assert r.exit_code == 0 and "bf16 left out" in " ".join(r.output.split()), r.output
    r = invoke("report", "four", "--storage", storage, "-o", str(tmp_path / "rep"), "--block-lengths", "",
               "--memory", "100KiB")
    assert r.exit_code == 0, r.output
    assert ("fp16: cannot fit in 100.00 KiB: even its least configuration (the resident weights and 4 fp16 experts "
            "per MoE layer) needs 114.75 KiB (counted)") in " ".join(r.output.split()), r.output
