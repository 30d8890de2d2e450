"""What a new user met in pass 21: each test failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli_helpers import advisor_entry, flat, one_error_line

EXAMPLE_DB = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")


def test_an_output_linked_to_a_pipe_is_said_to_be_one_by_the_name_given(tmp_path):
    """`export ... -o /dev/stdout | jq .` (stdout a pipe) was "cannot write /proc/1234/fd/pipe:[56789]: No such
    file or directory" - the link resolved to the kernel's name for the pipe, no path at all - and `--json
    /dev/stdout` "... /proc/1234/fd does not take files". Both now say the path as given is a named pipe, as
    `-o FIFO` did. A link to this process's end of a pipe stands for /dev/stdout."""
    read_end, write_end = os.pipe()
    try:
        (tmp_path / "stdout").symlink_to(f"/proc/self/fd/{write_end}")
        for args, option in ((["export", "bundled-example", "8", "--to", "json", "--storage", EXAMPLE_DB,
                               "-o", "stdout"], "-o/--output"),
                             (["quant-report", "bundled", "--max-experts", "1", "--layers", "0", "--json", "stdout"],
                              "--json")):
            one_error_line(advisor_entry(*args, cwd=tmp_path), "cannot write stdout: it is a named pipe",
                           f"; give {option} another path")
        assert (tmp_path / "stdout").is_symlink()
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_dllm_fidelity_studys_json_export_does_not_call_its_predictions_next_token(tmp_path):
    """`export --to json` of a tokenizer-less LLaDA-MoE study said its quality was "top-1 agreement of next-token
    predictions with the full-precision model": a dLLM's fidelity compares the predictions at masked answer
    positions (`advisor.eval.fidelity`), no next token. It says so now; an autoregressive model's stays next-token."""
    import json

    from tests.cli_helpers import advisor_in_process

    for model, said in (("tiny:llada_moe", "top-1 agreement of the token predictions at masked answer positions"),
                        ("tiny:qwen3_moe", "top-1 agreement of next-token predictions")):
        study = model.split(":")[1]
        r = advisor_in_process("tune", model, "--space", "quick", "--trials", "1", "--storage", "t.db", "--study",
                               study, cwd=tmp_path, env={"COLUMNS": "200"})
        assert r.returncode == 0, r.stdout + r.stderr
        r = advisor_entry("export", study, "0", "--to", "json", "--storage", "t.db", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        meaning = json.loads(r.stdout)["source"]["quality"]["meaning"]
        assert meaning.startswith(f"{said} with the full-precision model (fp32), 0..1, not task accuracy"), meaning


def test_a_tune_with_nothing_to_run_does_not_say_it_is_starting(tmp_path):
    """`advisor tune` again on a study that already had its trials ended its live line on `starting`, a trial it
    never began: 'tuning 6/3 front 2 starting 0:00:00', then 'study ... already has 6 finished trials (--trials 3);
    nothing to run'. The line now says that no trial ran. (The full path, which loads the model: a study without
    a stored load record, as stored before records were; with one, no live line is shown: test_cli_bad_input's
    test_resume_with_nothing_to_run_answers_from_the_load_record_with_the_full_paths_checks.)"""
    import sqlite3

    from tests.cli_helpers import advisor_in_process

    args = ("tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1", "--storage", "t.db", "--study", "s")
    first = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert first.returncode == 0, first.stdout + first.stderr
    with sqlite3.connect(tmp_path / "t.db") as c:
        assert c.execute("DELETE FROM study_user_attributes WHERE key = 'load_record'").rowcount == 1
    c.close()
    again = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stdout + again.stderr
    live = [ln for ln in again.stdout.splitlines() if ln.startswith("tuning ")]
    assert live and all("starting" not in ln for ln in live) and "1/1 front 1 no trial run" in live[-1], live
    assert "already has 1 finished trial (--trials 1); nothing to run" in again.stdout, again.stdout


def test_an_offloaded_traces_read_note_ends_no_line_in_a_space(tmp_path):
    """`advisor trace MODEL --offload -o t.npz` piped at 80 columns printed its note on reading the experts from
    the checkpoint ('offloaded: 16 forwards read 94.08 MiB of routed experts from the checkpoint at ') with lines
    ending in the space rich leaves where it breaks one - 92c1da6 fixed trace's other notes, not this one."""
    r = advisor_entry("trace", "bundled", "--offload", "-o", "t.npz", "--limit", "1", "--threads", "1",
                      cwd=tmp_path, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stdout + r.stderr
    said = r.stdout + r.stderr
    assert "forwards read" in said and "--resident, when the model fits in memory, skips these reads" in said, said
    assert not [ln for ln in said.splitlines() if ln.endswith(" ")], said


def test_the_equal_memory_table_says_why_a_no_cache_bf16_headline_gives_no_cache_size(tmp_path):
    """`report` of a `--budgets 10%` study at whose budget no bf16 slot fits: its bf16 headline row is the no-cache
    baseline trial (0 slots), and the equal-memory table said "no BF16 trial in the headline: no reference cache
    size", above that very row. It now says the BF16 headline trial keeps no expert on the GPU."""
    import re

    from tests.cli_helpers import advisor_in_process

    r = advisor_in_process("tune", "tiny:qwen3_moe", "--space", "quick", "--budgets", "10%", "--trials", "11",
                           "--storage", "t.db", "--study", "b", cwd=tmp_path, env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stdout + r.stderr
    r = advisor_in_process("report", "b", "--storage", "t.db", "-o", "rep", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    row = re.search(r"^\| bf16 \| #(\d+) \| 0 \| 0 B \|", md, re.M)
    assert row, md
    assert "no BF16 trial in the headline" not in md, md
    assert (f"| - | - | - | - | the BF16 headline trial #{row[1]} keeps no expert on the GPU: no reference cache "
            "size | - |") in md, md


def test_quant_reports_loading_note_ends_no_line_in_a_space(tmp_path, monkeypatch):
    """`advisor quant-report MODEL` loading it offloaded (no room for it whole) printed its "loading: offloaded:
    routed experts stream from the checkpoint (counted ... of weights > free cpu memory ...)" note with rich's
    markup on, piped at 80 columns with lines ending in the space rich leaves where it breaks one - ce07074 fixed
    the same in trace. It is printed as eval's and trace's loading notes are."""
    from advisor.models import load

    monkeypatch.setattr(load, "device_free_bytes", lambda device: 1)  # no room here: it loads offloaded
    r = advisor_entry("quant-report", "bundled", "--layers", "0", "--max-experts", "1", "--samples", "8",
                      "--threads", "1", cwd=tmp_path, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "loading: offloaded: routed experts stream from the checkpoint (counted" in flat(r.stderr), r.stderr
    assert not [ln for ln in r.stderr.splitlines() if ln.endswith(" ")], r.stderr
