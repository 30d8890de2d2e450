"""What a new user met in pass 20: each test failed before its fix."""

from __future__ import annotations

import json

from advisor.hardware.profiles import get_gpu, save_profile
from tests.cli_helpers import advisor_entry, one_error_line


def test_a_profiles_dir_that_is_a_file_is_refused_where_profiles_are_read(tmp_path):
    """`--profiles-dir studies/profiles/host.json` (the profile's own file, not its folder) read as a folder with no
    profile in it: `profile --list` said "0 measured profile(s) in .../host.json", and `--gpu host` was an unknown
    GPU whose line offered `advisor profile --profiles-dir .../host.json`, which that command then refused as a
    file. Every reader of the folder now refuses it in one line, as `profile` (the writer) did."""
    saved = save_profile(get_gpu("RTX 4090"), tmp_path / "p")
    given = str(saved.relative_to(tmp_path))
    said = f"--profiles-dir {given} is a file, not a directory; give a directory"
    for args in (["profile", "--list"], ["recommend", "--gpu", "RTX 4090 24GB"],
                 ["tune", "--gpu", "RTX 4090 24GB"], ["profile", "--cpu"]):
        one_error_line(advisor_entry(*args, "--profiles-dir", given, cwd=tmp_path), said)
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "profiles").write_text(json.dumps({}))
    one_error_line(advisor_entry("profile", "--list", cwd=tmp_path),
                   "studies/profiles (where --profiles-dir writes by default) is a file, not a directory")
    one_error_line(advisor_entry("profile", "--list", cwd=tmp_path, env={"ADVISOR_PROFILES_DIR": given}),
                   f"$ADVISOR_PROFILES_DIR {given} is a file, not a directory")


def test_a_precision_plan_that_names_a_directory_says_it_is_one(tmp_path):
    """`--precision plans/` (a folder of plans) was "unknown precision format 'plans/'" and `--precision plan.json`
    where plan.json is a folder "no such file", though it is there. Both now say it is a directory; a format name
    that is also a folder here (an export's `int8/`) is still the format."""
    for name in ("plans", "plan.json", "int8"):
        (tmp_path / name).mkdir()
    for given in ("plans/", "plan.json"):
        r = advisor_entry("eval", "--precision", given, "--limit", "1", cwd=tmp_path)
        one_error_line(r, f"bad precision plan '{given}': it is a directory, not a plan's .json file")
        assert "bundled" not in r.stdout, r.stdout  # refused before the model loads
    import contextlib

    from advisor.quant.plan import PrecisionPlan

    with contextlib.chdir(tmp_path):
        assert PrecisionPlan.parse("int8").default == "int8"


def test_a_flag_and_its_opposite_together_are_said_to_contradict(tmp_path):
    """`tune --offload --resident` said "--offload/--resident is given 2 times; give it once", though the user typed
    each once: two flags that contradict each other, which the line now says, naming both as typed."""
    for args, on, off in ((["tune", "--resident", "--offload"], "--offload", "--resident"),
                          (["eval", "bundled", "--offload", "--resident"], "--offload", "--resident"),
                          (["pareto", "s", "--no-plots", "--plots"], "--plots", "--no-plots")):
        one_error_line(advisor_entry(*args, cwd=tmp_path),
                       f"error: {on} and {off} are both given, which contradict each other; give one of them")
    one_error_line(advisor_entry("tune", "--offload", "--offload", cwd=tmp_path),
                   "--offload/--resident is given 2 times; give it once")
    assert not list(tmp_path.iterdir())  # refused before any work


def test_evals_task_line_counts_one_problem_in_the_singular(tmp_path):
    """`eval --task gsm8k --data one.jsonl` headed its result "bundled on GSM8K (1 problems)"."""
    from tests.cli_helpers import advisor_in_process

    (tmp_path / "one.jsonl").write_text('{"question": "What is 2+3?", "answer": "2+3=5 #### 5"}\n')
    r = advisor_in_process("eval", "bundled", "--task", "gsm8k", "--data", "one.jsonl", "--max-new-tokens", "8",
                           "--threads", "1", cwd=tmp_path, env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bundled on GSM8K (1 problem), few-shot prompt" in r.stdout, r.stdout


def test_report_names_an_output_folder_holding_other_files_as_typed(tmp_path):
    """`report STUDY -o adir`, adir holding the user's files, said "/abs/path/adir holds other files" where every
    other refusal of -o names the path as typed; the directory it resolves to is added only where the typed path
    does not name it (`-o .`, a link)."""
    from tests.test_cli_new_user16 import EXAMPLE_DB

    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "notes.txt").write_text("mine\n")
    (tmp_path / "alink").symlink_to("adir")
    real = (tmp_path / "adir").resolve()
    for given, named, cwd in (("adir", "adir", tmp_path), ("alink", f"alink ({real})", tmp_path),
                              (".", f". ({real})", tmp_path / "adir")):
        line = one_error_line(advisor_entry("report", "bundled-example", "--storage", EXAMPLE_DB, "-o", given, cwd=cwd))
        assert line.startswith(f"error: {named} holds other files (notes.txt), which writing there would delete"), line
    assert sorted(p.name for p in (tmp_path / "adir").iterdir()) == ["notes.txt"]


def test_a_timeout_that_is_not_positive_is_echoed_as_typed(tmp_path):
    """`tune --timeout 0` said "--timeout 0.0 must be positive", a value the user did not type (click's float);
    `-1e3` was then said as -1000, and `abc` as "Input should be a valid number", naming neither value nor form."""
    for typed in ("0", "-5", "nan", "-1e3"):
        one_error_line(advisor_entry("tune", "--timeout", typed, cwd=tmp_path),
                       f"error: --timeout {typed} must be positive (seconds)")
    one_error_line(advisor_entry("tune", "--timeout", "abc", cwd=tmp_path),
                   "error: Invalid value for '--timeout': 'abc' is not a number of seconds (e.g. 600 or 1.5e3)")
    assert not list(tmp_path.iterdir())
