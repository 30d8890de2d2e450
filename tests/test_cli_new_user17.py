"""What a new user met following the README on 2026-12-06 (newuser17), each through the command they ran."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
from cli_helpers import advisor_in_process

EXAMPLE = Path(__file__).parent.parent / "studies" / "example" / "advisor.db"


def _pareto_figure(monkeypatch, tmp_path: Path, *args: str):
    """`advisor pareto ARGS -o tmp_path/plots` in this process: the PNG's figure (kept as it is saved) and the
    HTML plot's text."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    drawn = []
    real = Figure.savefig

    def keep(self, *a, **kw):
        drawn.append(self)
        return real(self, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", keep)
    r = advisor_in_process("pareto", *args, "-o", str(tmp_path / "plots"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (fig,) = drawn
    return fig, (tmp_path / "plots" / f"{args[0]}.html").read_text()


def _inside(fig, *texts) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # pyplot closed the figure once it was saved
    for text in texts:
        box, inside = text.get_window_extent(renderer), fig.bbox
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, text


def test_pareto_plots_say_the_unit_and_source_of_every_axis_and_keep_the_title_inside(tmp_path, monkeypatch):
    """`advisor pareto STUDY` drew H2D bytes per token as raw numbers (ticks 200000 ... 800000, no unit) beside a
    colour bar in MiB, and its one-line title ran past both edges of the PNG ("ndled-toy-quick: ... 0 over
    budget,"). The axes now carry the unit the tables print and how the values were obtained, the colour bar
    whether it is counted, and the title wraps inside the figure; the HTML plot's axes say the same."""
    from tune_helpers import tiny_fidelity_study

    tiny_fidelity_study(tmp_path, monkeypatch)  # objectives: H2D bytes, fidelity, peak memory
    fig, html = _pareto_figure(monkeypatch, tmp_path, "s", "--storage", "t.db")
    ax, bar = fig.axes
    assert ax.get_xlabel() == "h2d_bytes_per_token, KiB [counted:trace-replay]", ax.get_xlabel()
    assert max(abs(x) for x, _ in ax.collections[0].get_offsets()) < 1024  # in KiB, not bytes
    assert ax.get_ylabel() == "fidelity_top1 [measured:logits-vs-fp32]", ax.get_ylabel()
    assert bar.get_ylabel() == "peak_gpu_bytes, KiB [counted]", bar.get_ylabel()
    _inside(fig, ax.title, bar.yaxis.label)
    assert "Pareto front of s: tiny:qwen3_moe" in ax.get_title().replace("\n", " ")
    assert re.search(r'"xaxis":\{"title":\{"text":"h2d_bytes_per_token, KiB \[counted:trace-replay\]"', html)


def test_pareto_plot_of_a_study_tuned_for_time_per_token_draws_its_front_against_time(tmp_path, monkeypatch):
    """The committed example was tuned for time per token, accuracy and memory, but its Pareto plot put H2D bytes
    on the x axis: front points sat right of and below others, looking dominated. The x axis is now the study's own objective, time per token in ms (modelled)."""
    fig, html = _pareto_figure(monkeypatch, tmp_path, "bundled-example", "--storage", str(EXAMPLE))
    ax, bar = fig.axes
    assert ax.get_xlabel() == "time_per_token, ms [modelled]", ax.get_xlabel()
    assert ax.get_ylabel() == "accuracy [measured:exact-match:toy]", ax.get_ylabel()
    assert bar.get_ylabel() == "peak_gpu_bytes, MiB [counted]", bar.get_ylabel()
    assert max(x for x, _ in ax.collections[0].get_offsets()) < 3  # ms: 2.72 at most on this front
    _inside(fig, ax.title, bar.yaxis.label, ax.xaxis.label)
    assert '"xaxis":{"title":{"text":"time_per_token, ms [modelled]"' in html


def test_simulate_names_the_traced_precision_as_every_other_command_does(tmp_path):
    """`advisor simulate t.npz` without --precision headed its table "precision float32" (the trace's torch dtype
    name) and wrote it so in --json, where `inspect`, `tune`, `recommend` and `--precision` itself name formats
    fp32, bf16, int8; it says fp32 now."""
    import json

    from offload_helpers import cli_trace
    from typer.testing import CliRunner

    from advisor.cli import app

    runner = CliRunner(env={"COLUMNS": "100"})
    trace = tmp_path / "t.npz"
    cli_trace(runner, trace)
    r = runner.invoke(app, ["simulate", str(trace), "--policy", "lru", "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert "precision fp32," in r.stdout and "float32" not in r.stdout, r.stdout
    assert json.loads((tmp_path / "r.json").read_text())["precision"] == "fp32"


def test_export_from_recommend_with_nothing_to_pick_exits_as_recommend_does(tmp_path):
    """`advisor recommend --budget 1KiB` exits 1 when no stored point fits ("not 2: the input was fine", as the
    README's command table says), but `advisor export --from-recommend` with the same query exited 2, the code of
    a mistyped option: a script could not tell the two apart. It exits 1 too, with its one `error:` line."""
    from cli_helpers import advisor_entry

    query = ["--budget", "1KiB", "--storage", str(EXAMPLE)]
    rec = advisor_entry("recommend", *query, cwd=tmp_path)
    assert rec.returncode == 1 and "No stored configuration meets the requirements." in rec.stdout, rec.stdout
    exp = advisor_entry("export", "--from-recommend", "--to", "json", *query, cwd=tmp_path)
    assert exp.returncode == 1, exp.stderr
    assert exp.stdout == "" and "Traceback" not in exp.stderr, exp.stderr
    assert exp.stderr.splitlines()[-1].startswith("error: nothing to export: nothing fits: "), exp.stderr
    typo = advisor_entry("export", "--from-recommend", "--to", "json", "--budget", "1 potato", "--storage",
                         str(EXAMPLE), cwd=tmp_path)
    assert typo.returncode == 2, typo.stderr  # bad input stays 2


def test_every_storage_option_says_a_sqlite_path_is_taken_and_the_commands_take_it(tmp_path):
    """`--storage` read "SQLAlchemy URL of the study database." in `pareto --help` and `studies --help` and
    "SQLAlchemy URL (sqlite:///..., postgresql://...)." in `tune --help`, while `recommend`'s and `export`'s said
    "(or SQLite path)" and `report`'s "SQLAlchemy URL or SQLite path.": every one takes a plain path (the README
    itself writes `--storage studies/example/advisor.db`). One help text now, and the path works in each."""
    import shutil

    from typer.testing import CliRunner

    from advisor.cli import app

    helps = {}
    for cmd in ("tune", "studies", "pareto", "recommend", "export", "report"):
        r = CliRunner(env={"COLUMNS": "400"}).invoke(app, [cmd, "--help"])
        (row,) = [ln for ln in r.stdout.splitlines() if "--storage" in ln]
        helps[cmd] = " ".join(row.strip("│ ").split()[2:])
    assert len(set(helps.values())) == 1, helps
    assert "SQLite file's path" in helps["tune"] and "postgresql://" in helps["tune"], helps
    shutil.copy(EXAMPLE, tmp_path / "copy.db")
    for args in (["studies"], ["pareto", "bundled-example", "--no-plots"], ["recommend"]):
        r = advisor_in_process(*args, "--storage", "copy.db", cwd=tmp_path)
        assert r.returncode == 0 and "bundled-example" in r.stdout, (args, r.stderr)


def test_report_of_a_fidelity_study_claims_no_accuracy_change_for_its_baseline(tmp_path, monkeypatch):
    """A study of a model without a tokenizer stores no task accuracy: the report's headline rows said accuracy
    change "-", but its baseline row (full precision without cache) said "0 pt", an accuracy change nothing
    measured. Its quality columns are top-1 agreement and top-1 change now (gaps38): the baseline row has the
    16-bit plan's stored top-1 agreement and 0 pt where the study stores one, "-" where it does not; never an
    accuracy."""
    from tune_helpers import tiny_fidelity_study

    tiny_fidelity_study(tmp_path, monkeypatch)
    r = advisor_in_process("report", "s", "--storage", "t.db", "-o", "rep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    (base,) = [ln for ln in md.splitlines() if "no cache (baseline) |" in ln]
    (header,) = [ln for ln in md.splitlines() if ln.startswith("| precision | trial |")]
    assert [c.strip() for c in header.strip("|").split("|")][8:10] == ["top-1 agreement", "top-1 change"], header
    cells = [c.strip() for c in base.strip("|").split("|")]
    top1 = [t["fidelity_top1"] for t in json.loads((tmp_path / "rep" / "report.json").read_text())["headline"]
            if t["trial"] is not None and t["precision"] in ("fp16", "bf16")]
    assert cells[8:10] == ([f"{top1[0]:.3f}", "0 pt"] if top1 else ["-", "-"]), base


def test_the_loading_line_compares_the_model_with_the_budget_the_header_gives(tmp_path):
    """`advisor tune tiny:diffusion_gemma --space quick` headed its run "budget: 1.46 MiB (quick space default:
    0.6 of the way from its least configuration ...; 0.6 x the model's, 918.52 KiB, cannot hold that
    configuration)", then said the model was "counted 1.49 MiB of weights > 918.52 KiB (0.6 x them, quick space
    default)": a budget the header had just said was not the study's. The line names the study's budget."""
    from cli_helpers import flat

    r = advisor_in_process("tune", "tiny:diffusion_gemma", "--space", "quick", "--trials", "1", "--storage", "s.db",
                           cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = flat(r.stdout)
    assert "budget: 1.46 MiB (quick space default: 0.6 of the way from its least configuration" in out, out
    assert ("with no checkpoint for its experts to stream from (counted 1.49 MiB of parameters > the study's budget, "
            "1.46 MiB)") in out, out
    assert "918.52 KiB (0.6 x them" not in out, out


def test_profile_help_names_the_profiles_directory_it_uses(tmp_path):
    """`advisor profile --help` said --profiles-dir defaults to studies/profiles, but profile (measuring and
    --list) uses $ADVISOR_PROFILES_DIR first, as every --gpu command's help says: a user who set it and read the
    help looked in the wrong place. The help says both, and --list reads the variable's directory."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.hardware.profiles import PROFILES_DIR_ENV

    r = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["profile", "--help"])
    (row,) = [ln for ln in r.stdout.splitlines() if "--profiles-dir" in ln]
    assert f"(default ${PROFILES_DIR_ENV}, else studies/profiles)" in row, row
    listed = CliRunner(env={"COLUMNS": "400", PROFILES_DIR_ENV: str(tmp_path / "p")}).invoke(app, ["profile", "--list"])
    assert listed.exit_code == 0 and f"0 measured profile(s) in {tmp_path / 'p'} " in listed.stdout, listed.stdout


def test_studies_and_pareto_say_a_failed_trial_was_queued_again_not_that_it_ran_again(tmp_path, monkeypatch):
    """Right after a Ctrl-C, `advisor studies` said "finished 0 · failed 1 (1 retried)" beside "waiting 11": the
    interrupted trial's copy was queued, not run - "retried" read as if it had run (and failed again?). Both
    `studies` and the front's title say "queued again", which holds before and after the copy runs."""
    import optuna
    from tune_helpers import tiny_fidelity_study

    tiny_fidelity_study(tmp_path, monkeypatch)  # study s in t.db, 2 finished trials
    study = optuna.load_study(study_name="s", storage="sqlite:///t.db")
    done = study.trials[-1]
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=done.params,
                                              distributions=done.distributions))
    study.enqueue_trial(done.params, user_attrs={"retry_of": study.trials[-1].number})  # as an interrupt queues it
    shown = advisor_in_process("studies", "--storage", "t.db", "--wide", cwd=tmp_path)
    assert shown.returncode == 0 and " 1 (1 queued again) " in shown.stdout, shown.stdout
    assert "retried" not in shown.stdout, shown.stdout
    front = advisor_in_process("pareto", "s", "--storage", "t.db", "--no-plots", "--wide", cwd=tmp_path)
    assert "2 finished trials, 0 over budget, 1 failed (1 queued again))" in front.stdout, front.stdout


def test_every_option_of_every_command_says_what_it_does():
    """`advisor trace --help` and `advisor quant-report --help` listed `--seed <int> [default: 0]` with no word of
    what it seeds (the task's prompt choice; the random activations); every other option of every command has a
    help text. Now each has one."""
    import typer

    from advisor.cli import app

    group = typer.main.get_command(app)
    silent = [(name, p.opts) for name, cmd in group.commands.items() for p in cmd.params
              if not (getattr(p, "help", None) or "").strip()]
    assert silent == [], silent


def test_quant_report_gives_an_experts_bytes_as_inspect_does():
    """`advisor quant-report` printed an expert's size as "bytes/expert 6,784" where `advisor inspect` (and every
    other command) prints the same count as "per expert 6.62 KiB": one number, two spellings, one of them
    unreadable for a real expert (12,582,912). quant-report reads "per expert" in binary units, the same text
    `inspect --budget` gives for each format."""
    from typer.testing import CliRunner

    from advisor.cli import app

    run = CliRunner(env={"COLUMNS": "200"})
    qr = run.invoke(app, ["quant-report", "tiny:qwen3_moe", "--layers", "0", "--formats", "int8,int4,int2",
                          "--threads", "1"])
    ins = run.invoke(app, ["inspect", "tiny:qwen3_moe", "--budget", "150KiB"])
    assert qr.exit_code == 0 == ins.exit_code, qr.output + ins.output

    def per_expert(out: str, fmt: str) -> str:
        lines = out.splitlines()
        at = next(i for i, ln in enumerate(lines) if ln.startswith(f"│ {fmt} "))
        head = next(ln for ln in reversed(lines[:at]) if "per expert" in ln)  # the header of this row's table
        return lines[at].split("│")[[c.strip() for c in head.split("┃")].index("per expert")].strip()

    for fmt in ("int8", "int4", "int2"):
        assert per_expert(qr.stdout, fmt) == per_expert(ins.stdout, fmt), (fmt, qr.stdout, ins.stdout)
    assert per_expert(qr.stdout, "int4") == "1.00 KiB" and "1,024" not in qr.stdout, qr.stdout


def test_a_run_that_its_timeout_ended_short_says_so_and_how_to_go_on(tmp_path):
    """`advisor tune ... --timeout 4 --trials 100` ended at "tuning 11/100" and printed the front with no word that
    the timeout had stopped it 89 trials short (a note came only when queued warm-start points were left). A run
    the timeout ends short of --trials or --more says so and what goes on from there, in plain words ("--timeout
    passed after", "its --timeout passed first" of the queued trials: it stopped the run)."""
    from cli_helpers import flat

    base = ["tune", "tiny:qwen3_moe", "--space", "quick", "--storage", "s.db", "--timeout", "0.001"]
    r = advisor_in_process(*base, "--trials", "100", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("note: --timeout 0.001 s stopped this run after 1 trial, 99 finished trials short of --trials 100; the "
            "same command goes on where this one stopped (it tops the study up to 100)") in flat(r.stdout), r.stdout
    # the warm start's queued trials it left: said in words too ("did not run: its --timeout passed first" was not)
    queued = re.search(r"note: (\d+) queued trials \(warm start\) did not run: --timeout 0.001 s stopped this run "
                       r"before them; `--more \1` runs them", flat(r.stdout))
    assert queued, r.stdout
    # all but 2 taken off the queue (pruned: running them takes seconds each), so that the next run leaves one,
    # which is "it" ("stopped this run before them; `--more 1` runs it" was)
    study = optuna.load_study(study_name="tiny:qwen3_moe-toy-quick", storage=f"sqlite:///{tmp_path / 's.db'}")
    for _ in range(int(queued[1]) - 2):
        study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    more = advisor_in_process(*base, "--more", "5", cwd=tmp_path)
    assert ("note: --timeout 0.001 s stopped this run after 1 trial, 4 short of --more 5; `--more 4` runs the rest"
            in flat(more.stdout)), more.stdout
    assert ("note: 1 queued trial (warm start) did not run: --timeout 0.001 s stopped this run before it; `--more 1` "
            "runs it") in flat(more.stdout), more.stdout
    done = advisor_in_process("tune", "tiny:qwen3_moe", "--space", "quick", "--storage", "s.db", "--more", "1",
                              "--timeout", "600", cwd=tmp_path)
    assert "--timeout" not in done.stdout, done.stdout  # not ended by it: nothing said


def test_recommend_names_the_studys_budget_as_studies_and_pareto_print_it(tmp_path):
    """`advisor recommend --gpu 'RTX 4090'` said "the study was tuned within 2.7 MiB" of the committed example,
    whose budget `advisor studies` and `advisor pareto` print as 2.73 MiB (the bundled quick study: 4.3 against
    4.34 MiB): one budget, two numbers. recommend gives it as they do."""
    from cli_helpers import flat

    rec = flat(advisor_in_process("recommend", "--storage", str(EXAMPLE), "--gpu", "RTX 4090", cwd=tmp_path).stdout)
    front = advisor_in_process("pareto", "bundled-example", "--storage", str(EXAMPLE), "--no-plots", cwd=tmp_path)
    budget = re.search(r"budget (\d+\.\d\d MiB) \(", flat(front.stdout)).group(1)
    assert budget == "2.73 MiB", front.stdout
    assert f"the study was tuned within {budget}, less than the 24.00 GiB (--gpu RTX 4090 24GB)" in rec, rec


def test_export_json_of_every_target_carries_its_source_and_notes(tmp_path):
    """`advisor export STUDY TRIAL --to llama.cpp --json` printed the runtime's settings with no study, trial,
    stored value or source, and none of the notes the script carries (here: q4_K does not divide the bundled
    model's rows, so q4_1 and bf16 are used instead); `--to hf --json` the same. vllm and ktransformers had their
    notes only. Every target's --json (the json target's document has its own) now carries the source - study,
    trial, each stored value with how it was obtained - and every note the text export prints."""
    import json

    from cli_helpers import advisor_entry

    from advisor.recommend import load_points

    trial = str(next(p.trial_number for p in load_points(str(EXAMPLE), "bundled-example")  # the 1.97MiB pick
                     if (p.config["precision_spec"], p.config["slots_per_layer"], p.config["policy"])
                     == ("int4", [52] * 4, "flru")))
    for target in ("llama.cpp", "hf"):
        r = advisor_entry("export", "bundled-example", trial, "--storage", str(EXAMPLE), "--to", target, "--json",
                          cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        src = data["source"]
        assert (src["study"], src["trial"], src["model"]) == ("bundled-example", int(trial), "bundled"), src
        assert src["stored_values"]["h2d_bytes_per_token"]["source"].startswith("counted:trace-replay("), src
        assert src["stored_values"]["accuracy"] == {"value": 0.96, "source": "measured:exact-match:toy(n=200,cpu)"}
        notes = [ln.removeprefix("note: ") for ln in r.stderr.split("\nnote: ")]
        assert data["notes"] and len(data["notes"]) == len(notes), (data["notes"], r.stderr)
    assert any("q4_K (block 256) does not divide" in n for n in json.loads(
        advisor_entry("export", "bundled-example", trial, "--storage", str(EXAMPLE), "--to", "llama.cpp", "--json",
                      cwd=tmp_path).stdout)["notes"])


def test_report_of_a_study_without_a_budget_counts_no_trials_within_one(tmp_path, monkeypatch):
    """`advisor tune tiny:llada_moe` (the dllm space sets no budget) then `advisor report` said "3 finished trials (3
    within the memory budget)" in its "How every number was obtained", two lines under "no budget was set": there
    was none to be within. It says no memory budget was set."""
    monkeypatch.chdir(tmp_path)
    r = advisor_in_process("tune", "tiny:llada_moe", "--trials", "2", "--storage", "t.db", "--study", "s",
                           cwd=tmp_path)
    assert r.returncode == 0 and "budget: none" in r.stdout, r.stdout
    rep = advisor_in_process("report", "s", "--storage", "t.db", "-o", "rep", "--block-lengths", "", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Study `s` in `sqlite:///t.db`: 2 finished trials (no memory budget set), 0 failed" in md, md
    assert "within the memory budget" not in md, md


def test_help_shows_no_machine_limit_as_a_range_and_the_limit_still_holds(tmp_path):
    """`advisor tune --help` showed `--heartbeat <int range> [1<=x<=9223372036]` and `advisor export --help` the
    TRIAL argument as `<int range> [0<=x<=9223372036854775807]`: machine limits (a thread's longest wait, SQLite's
    INTEGER) read as if they were the options' meaning, as the seeds' did before. The help is free of them; a
    value beyond is still one usage line naming the range (exit 2)."""
    from cli_helpers import advisor_entry
    from typer.testing import CliRunner

    from advisor.cli import app

    for cmd in ("tune", "export"):
        shown = CliRunner(env={"COLUMNS": "200"}).invoke(app, [cmd, "--help"]).stdout
        assert "9223372036" not in shown, shown
    r = advisor_entry("export", "s", "--", "-3", "--to", "json", cwd=tmp_path)
    assert r.returncode == 2 and "-3 is not a trial number: give one from 0 to 9223372036854775807" in r.stderr, r.stderr
    r = advisor_entry("tune", "--heartbeat", "0", "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 2 and "0 is not a heartbeat interval: give one from 1 to " in r.stderr, r.stderr
    assert not (tmp_path / "s.db").exists()
