"""New user 16's findings, through the CLI as a user runs it."""

from __future__ import annotations

from tests.cli_helpers import advisor, advisor_entry, advisor_in_process, flat, one_error_line


def test_tune_of_a_fidelity_study_counts_fidelity_not_accuracy(tmp_path):
    """A model without a tokenizer tunes fidelity_top1 in place of accuracy, yet tune's summary said `accuracy
    evaluations this run: 0 for 3 distinct precision plans in the study (0 reused from the cache, 0 skipped ...)`:
    numbers that added up to nothing. It now says no task accuracy is measured and counts the fidelity runs."""
    args = ("tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "2", "--storage", "s.db", "--study", "f")
    r = advisor_in_process(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    text = flat(r.stdout)
    assert "accuracy evaluations this run" not in text, text
    assert "no task accuracy in this study's objectives; fidelity evaluations this run: 2 for 2 distinct " \
           "precision plans in the study (0 reused from the cache)" in text, text
    r = advisor_in_process(*args[:4], "--more", "1", *args[6:], cwd=tmp_path)  # a resume: earlier plans are reused
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fidelity evaluations this run: " in flat(r.stdout), r.stdout


def test_pareto_into_a_file_is_refused_before_the_plots_in_profiles_words(tmp_path):
    """`pareto s -o afile` (a file where the plots' folder goes) drew the plots (3 s: matplotlib) and then said
    `cannot write afile/s.png: cannot create directory afile (File exists)`; `profile --profiles-dir afile` said
    it at once, in other words. Both now say it before the work, in one wording, and write nothing."""
    from recommend_helpers import make_db, point

    url = make_db(tmp_path / "a.db", [point("s", 1, "int4", 4, acc=0.9, h2d=1, peak_gib=1)])
    (tmp_path / "afile").write_text("mine\n")
    line = one_error_line(advisor_entry("pareto", "s", "--storage", url, "-o", "afile", cwd=tmp_path), "-o/--output afile")
    assert line == "error: -o/--output afile is a file, not a directory; give a directory", line
    line = one_error_line(advisor_entry("profile", "--cpu", "--profiles-dir", "afile", cwd=tmp_path))
    assert line == "error: --profiles-dir afile is a file, not a directory; give a directory", line
    assert (tmp_path / "afile").read_text() == "mine\n"
    assert advisor_entry("pareto", "s", "--storage", url, "-o", "plots", cwd=tmp_path).returncode == 0
    assert (tmp_path / "plots" / "s.png").is_file()


def test_a_mistyped_expert_shape_is_refused_before_torch_imports(tmp_path):
    """`profile --expert-shape 2048x` answered `no CUDA device here` after importing torch (4.1 s), and with --cpu
    refused the shape only then (2.9 s): the shape is text, read now before torch, as a mistyped --model is."""
    from tests.test_cli_new_user14 import _refused_light

    for extra in ([], ["--cpu"]):
        said = _refused_light(tmp_path, "profile", *extra, "--expert-shape", "2048x", "--profiles-dir", "p")
        assert said == "error: bad --expert-shape '2048x'; give HIDDENxFFN, e.g. 2048x1024", said
    said = _refused_light(tmp_path, "profile", "--cpu", "--expert-shape", "0x1024", "--profiles-dir", "p")
    assert said == "error: bad --expert-shape '0x1024': both sizes must be positive, e.g. 2048x1024", said
    assert list(tmp_path.iterdir()) == []


def test_a_model_directory_no_loader_can_read_is_refused_before_torch_imports(tmp_path):
    """A directory with no config.json, a config.json that is no JSON, or no weight file at all was refused only
    once torch and transformers had imported (5-8 s on 2 shared cores); the last as transformers' `cannot load
    model type 'llada' from bad: Error no file named model.safetensors, or pytorch_model.bin, found in directory
    bad.`, which says nothing to do. All three are file-system facts, now read before torch, as a mistyped
    directory name is."""
    from tests.test_cli_new_user14 import _refused_light

    (tmp_path / "noconfig").mkdir()
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "config.json").write_text("{broken")
    (tmp_path / "badjson" / "model.safetensors").write_bytes(b"")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text('{"model_type": "llada"}')
    for command in (["inspect"], ["tune", "--storage", "s.db", "--trials", "1"]):
        assert _refused_light(tmp_path, command[0], "noconfig", *command[1:]) == (
            "error: noconfig has no config.json; point at a model directory (config.json + *.safetensors)")
        assert _refused_light(tmp_path, command[0], "badjson", *command[1:]).startswith(
            "error: badjson/config.json is not valid JSON (Expecting property name")
    # `inspect noweights` counts from config.json alone (test_inspect_config_only): only tune is refused
    assert _refused_light(tmp_path, "tune", "noweights", "--storage", "s.db", "--trials", "1") == (
        "error: noweights holds no weights (no *.safetensors, model.safetensors.index.json, pytorch_model.bin, "
        "pytorch_model.bin.index.json); point at the model's directory, or re-download the model (`advisor "
        "inspect noweights --budget SIZE` counts its sizes, and what fits, from config.json alone)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["badjson", "noconfig", "noweights"]  # no database


def test_a_budget_just_below_the_least_configuration_does_not_read_as_equal(tmp_path):
    """`tune bundled --budgets 10%,20%` refused 'a budget of 1.83 MiB ... the smallest configuration needs 1.83
    MiB': the two sizes round to one text at two decimals, so the refusal read as a fit. They are now shown with
    the decimals that tell them apart (as recommend's 'fits 1.970 MiB ...: uses 1.963 MiB' does)."""
    import re

    line = one_error_line(advisor_entry("tune", "bundled", "--budgets", "20%", "--storage", "s.db", cwd=tmp_path),
                          "the smallest configuration needs")
    budget, need = re.match(r"error: a budget of ([\d.]+ \w+) ", line)[1], re.search(r"needs ([\d.]+ \w+)\)", line)[1]
    assert (budget, need) == ("1.8271 MiB", "1.8326 MiB"), line  # 1.83 and 1.83 at two decimals


def test_a_live_tune_counts_its_live_runs(tmp_path):
    """`tune --mode live` ended with 'routing traces recorded: 0; cache configs by replay: 0': every trial ran
    the offload runtime, and the summary counted nothing of it."""
    r = advisor_in_process("tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "2", "--mode", "live",
                           "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    text = flat(r.stdout)
    assert "cache configs run live (offload runtime): 2;" in text and "by replay" not in text, text


def test_an_output_file_typed_with_a_trailing_slash_is_refused_not_written_as_a_file(tmp_path):
    """`export ... -o out/` wrote a file named `out` and said `wrote out/`: Path('out/') is Path('out'). A name
    ending in '/' names a directory: refused in one line, by every file option (`trace -o` before torch imports,
    where a directory given as `-o` was refused only once torch had: 10 s under load)."""
    from recommend_helpers import make_db, point

    from tests.test_cli_new_user14 import _refused_light

    url = make_db(tmp_path / "a.db", [point("s", 1, "int4", 4, acc=0.9, h2d=1, peak_gib=1)])
    one_error_line(advisor_entry("export", "s", "1", "--storage", url, "--to", "json", "-o", "out/", cwd=tmp_path),
                   "cannot write out/: a name ending in '/' names a directory; give a file name")
    assert _refused_light(tmp_path, "trace", "bundled", "-o", "t/") == (
        "error: cannot write t/: a name ending in '/' names a directory; give a file name")
    assert _refused_light(tmp_path, "trace", "bundled", "-o", str(tmp_path)) == (
        f"error: cannot write {tmp_path}: it is a directory; give -o/--output another path")
    assert _refused_light(tmp_path, "eval", "bundled", "--json", "r/") == (
        "error: cannot write r/: a name ending in '/' names a directory; give a file name")
    assert not {"out", "t", "r"} & {p.name for p in tmp_path.iterdir()}


def test_inspect_gives_expert_bytes_in_the_unit_they_fill(tmp_path):
    """`inspect tiny:qwen3_moe` gave its 6 KiB experts as `MiB/expert 0.01 · MiB/layer 0.05` and '0.09 MiB of
    routed expert weights': one significant digit, where the budget table beside it says 12.00 KiB. Each size is
    now in the unit it fills, as every other byte count the tool prints."""
    r = advisor_entry("inspect", "tiny:qwen3_moe", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    text = flat(r.stdout)
    assert "MiB/expert" not in text and text.count("per expert 6.00 KiB · per layer 48.00 KiB") == 2, text
    assert "96.00 KiB of routed expert weights (counted)" in text, text


def test_max_accuracy_drop_help_names_the_point_it_is_measured_from_and_its_default(tmp_path):
    """--max-accuracy-drop's help said 'vs the study's full-precision point', but the floor is taken from the
    study's highest-precision point (int4 in a quick study whose front has no bf16 point, as recommend's own reason
    then says), and its 0.01 default went unsaid."""
    for command in ("recommend", "export"):
        r = advisor_entry(command, "--help", cwd=tmp_path, env={"COLUMNS": "400"})
        line = next(ln for ln in r.stdout.splitlines() if "--max-accuracy-drop" in ln)
        assert "highest-precision point" in line and "0.01" in line and "full precision" not in line, line


def test_an_option_missing_its_value_points_to_its_commands_help(tmp_path):
    """`advisor tune --trials` (no value) said "Option '--trials' requires an argument. (see `advisor --help`)":
    the top-level help, which lists commands, not tune's options, and a stray '.' before the bracket.
    Under `python -m advisor` it said `advisor tune --help` where every other usage error says `python -m advisor
    tune --help`: the program is named as click names it, for both."""
    missing, unknown = (one_error_line(advisor(*args, cwd=tmp_path)) for args in
                        (("tune", "M", "--budget"), ("tune", "M", "--trails", "2")))
    assert missing == "error: Option '--budget' requires an argument (see `python -m advisor tune --help`)", missing
    assert unknown.endswith("(see `python -m advisor tune --help`)"), unknown
    line = one_error_line(advisor_entry("quant-report", "bundled", "--formats", cwd=tmp_path))
    assert line.startswith("error: Option '--formats' requires an argument (see `"), line
    assert line.endswith(" quant-report --help`)"), line  # (in process: the test runner's program name)


def test_quant_report_says_what_its_captured_activations_were_captured_on(tmp_path):
    """`quant-report --activations captured` captured the hidden states of one forward over seeded random token ids
    (also for a model with a tokenizer), but said only 'measured:captured-activations', which read as the model's
    own text; the help said 'hidden states of one forward'. Both now name the input, as does each JSON row."""
    import json

    r = advisor_entry("quant-report", "tiny:qwen3_moe", "--activations", "captured", "--formats", "int8",
                      "--threads", "1", "--json", "q.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    said = "measured:captured-activations(one forward over 64 random token ids, seed 0)"
    assert said in flat(r.stdout), r.stdout
    rows = json.loads((tmp_path / "q.json").read_text())["rows"]
    assert {row["error_source"] for row in rows} == {said}
    r = advisor_entry("quant-report", "--help", cwd=tmp_path, env={"COLUMNS": "400"})
    assert "over seeded random token ids" in r.stdout, r.stdout


def test_an_unknown_gpu_with_no_close_match_names_where_profiles_are_read_not_the_whole_catalogue(tmp_path):
    """`tune --gpu host-t1` for a profile measured with `profile --profiles-dir elsewhere` listed all 43 catalogue
    GPUs in one line (`known: A10 24GB, ...`) and never said where measured profiles are looked for. With no close
    match the line now names that folder instead; `advisor profile --list` still lists them all."""
    from recommend_helpers import make_db, point

    url = make_db(tmp_path / "a.db", [point("s", 1, "int4", 4, acc=0.9, h2d=1, peak_gib=1)])
    line = one_error_line(advisor_entry("recommend", "--storage", url, "--gpu", "host-t1", cwd=tmp_path))
    assert line.startswith("error: unknown GPU 'host-t1'; no catalogue GPU, and no profile measured in "
                           "studies/profiles, has that name (all: `advisor profile --list`)"), line
    assert "RTX 3060" not in line and len(line) < 300, line
    line = one_error_line(advisor_entry("recommend", "--storage", url, "--gpu", "RTX 9090", cwd=tmp_path))
    assert "close matches: RTX 5090 32GB" in line, line  # a near miss still gets its neighbours


def test_report_into_a_file_is_refused_in_paretos_words(tmp_path):
    """`report STUDY -o afile` said "/abs/path/afile exists and is not a directory; give -o/--output another path"
    (the resolved path, in words of its own) where `pareto -o afile` says "-o/--output afile is a file, not a
    directory": one refusal, in one wording (`check_folder`), with the path as typed; the file is left as it was."""
    from tests.test_cli_new_user16 import EXAMPLE_DB

    (tmp_path / "afile").write_text("mine\n")
    for command in ("report", "pareto"):
        line = one_error_line(advisor_entry(command, "bundled-example", "--storage", EXAMPLE_DB, "-o", "afile",
                                            cwd=tmp_path))
        assert line == "error: -o/--output afile is a file, not a directory; give a directory", (command, line)
    assert (tmp_path / "afile").read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_default_output_folder_that_is_a_file_is_not_said_as_typed(tmp_path):
    """With no -o, a file at the default reports/STUDY or studies/plots was refused as "-o/--output reports/STUDY
    is a file", an option the user had not given; the line names it as the option's default now."""
    from tests.test_cli_new_user16 import EXAMPLE_DB

    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "bundled-example").write_text("mine\n")
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "plots").write_text("mine\n")
    for command, folder in (("report", "reports/bundled-example"), ("pareto", "studies/plots")):
        line = one_error_line(advisor_entry(command, "bundled-example", "--storage", EXAMPLE_DB, cwd=tmp_path))
        assert line == (f"error: {folder} (where -o/--output writes by default) is a file, not a directory; move it "
                        "or give -o/--output a directory"), (command, line)
        assert (tmp_path / folder).read_text() == "mine\n"


def test_profiles_default_store_or_variable_that_is_a_file_is_not_said_as_typed(tmp_path):
    """`profile --cpu` with no --profiles-dir, where studies/profiles (the default store) or the directory
    $ADVISOR_PROFILES_DIR names is a file, said "--profiles-dir studies/profiles is a file", an option the user had
    not given (0500512 fixed report's and pareto's -o, not this). It names the default, or the variable."""
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "profiles").write_text("mine\n")
    (tmp_path / "pfile").write_text("mine\n")
    line = one_error_line(advisor_entry("profile", "--cpu", cwd=tmp_path, env={"ADVISOR_PROFILES_DIR": None}))
    assert line == ("error: studies/profiles (where --profiles-dir writes by default) is a file, not a directory; "
                    "move it or give --profiles-dir a directory"), line
    line = one_error_line(advisor_entry("profile", "--cpu", cwd=tmp_path, env={"ADVISOR_PROFILES_DIR": "pfile"}))
    assert line == "error: $ADVISOR_PROFILES_DIR pfile is a file, not a directory; give a directory", line
    assert (tmp_path / "pfile").read_text() == (tmp_path / "studies" / "profiles").read_text() == "mine\n"


def test_an_unknown_gpu_points_to_the_profiles_dir_it_was_looked_for_in(tmp_path):
    """`--gpu host-t1 --profiles-dir lab` said "(all: `advisor profile --list`); or measure it with `advisor
    profile`": both read and write studies/profiles, not lab, so the listing lacked the profiles looked for and a
    profile measured as told was not found by the same command again. The commands named carry --profiles-dir."""
    from recommend_helpers import make_db, point

    url = make_db(tmp_path / "a.db", [point("s", 1, "int4", 4, acc=0.9, h2d=1, peak_gib=1)])
    (tmp_path / "my lab").mkdir()
    for command in (["recommend", "--storage", url], ["tune", "--storage", "s.db"]):
        line = one_error_line(advisor_entry(*command, "--gpu", "host-t1", "--profiles-dir", "my lab", cwd=tmp_path))
        assert ("no profile measured in my lab, has that name (all: `advisor profile --list --profiles-dir 'my "
                "lab'`); or measure it with `advisor profile --profiles-dir 'my lab'`") in line, line
    line = one_error_line(advisor_entry("recommend", "--storage", url, "--gpu", "host-t1", cwd=tmp_path))
    assert "(all: `advisor profile --list`); or measure it with `advisor profile`;" in line, line  # the default's
    assert not (tmp_path / "s.db").exists() and list((tmp_path / "my lab").iterdir()) == []
