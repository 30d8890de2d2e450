"""What a new user following the README met, through the commands they run: each test failed before its fix.

- `advisor inspect` piped or at 80 columns cut every cell of the layer table (`mod…`, `Lin…`);
- `advisor inspect --budget 2MiB` said `budget 0.00 GiB` and `MiB/expert 0.00`;
- `advisor simulate --slots 200%` quoted the parsed `2.0`, not what was typed; with `--prefetch` its hits and
  misses did not add up to the look-ups, and a policy passed "belady (bound)", without a word; a `--precision`
  plan naming layers the trace lacks was replayed as if it fitted;
- a resumed `advisor tune` with nothing to run showed `front 0` beside a front of several points;
- `advisor tune --budgets ... --trials N` below the queued points left them waiting without a word;
- `advisor inspect --budget` below the resident weights said `-232.50 KiB left for expert slots`;
- `advisor recommend --storage FILE` printed an "Export it" command without `--storage`, which then failed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import advisor, advisor_in_process, flat
from typer.testing import CliRunner

EXAMPLE_DB = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"


def test_inspect_at_80_columns_cuts_no_cell_and_sizes_small_budgets_readably(tmp_path):
    from advisor.cli import app

    res = CliRunner().invoke(app, ["inspect", "bundled", "--budget", "2MiB"], terminal_width=80)
    assert res.exit_code == 0, res.output
    out = res.output
    assert "…" not in out, out
    for i in range(4):  # every layer whole: module name, router, shapes
        assert f"MoE {i}: model.layers.{i}.mlp.experts" in out, out
    assert out.count("router Linear") == 4 and "[16,128] / [128,16]" in out, out
    assert "budget 2.00 MiB (--budget 2MiB): resident weights" in out and "0.00 GiB:" not in out, out
    bf16 = next(ln for ln in out.splitlines() if ln.strip("│ ").startswith("bf16"))
    assert "12.00 KiB" in bf16 and "3.00 MiB" in bf16, bf16  # 3 x 16 x 128 bf16 weights per expert, 256 experts
    wide = CliRunner().invoke(app, ["inspect", "bundled", "--wide"], terminal_width=80)
    assert wide.exit_code == 0 and "┃ MoE ┃ module" in wide.output and "…" not in wide.output, wide.output


def test_simulate_quotes_bad_slots_as_typed_and_names_prefetch_hits(tmp_path):
    from advisor.cli import app
    from advisor.errors import UserError
    from tests.offload_helpers import cli_trace

    runner = CliRunner()
    trace = tmp_path / "tr.npz"
    cli_trace(runner, trace)
    res = runner.invoke(app, ["simulate", str(trace), "--slots", "200%"])  # `advisor.cli.run` prints it, exit 2
    assert isinstance(res.exception, UserError), res.output
    assert str(res.exception).startswith("bad slots '200%': a percentage must be in (0, 100]"), res.exception

    # a plan naming a layer or an expert the traced model lacks was replayed as if it fitted
    for plan, why in (("default=int4;layers=0-9:int8", "precision plan names MoE layer 9 but the model has 2 (0-1)"),
                      ("default=int4;experts=1.70:int8", "precision plan names expert 70 of MoE layer 1, which has")):
        res = runner.invoke(app, ["simulate", str(trace), "--precision", plan])
        assert isinstance(res.exception, UserError) and str(res.exception).startswith(why), res.output
    # with prefetch, hits + misses no longer add up to the look-ups: the run says where the rest went
    js = tmp_path / "p.json"
    res = runner.invoke(app, ["simulate", str(trace), "--slots", "2", "--prefetch", "lookahead", "--policy", "lru",
                              "--json", str(js)])
    assert res.exit_code == 0, res.output
    (lru,) = [r for r in json.loads(js.read_text())["results"] if r["policy"] == "lru"]
    assert lru["prefetch_hits"] > 0 and lru["hits"] + lru["misses"] + lru["prefetch_hits"] == lru["lookups"]
    assert (f"note: prefetch hits (look-ups served by a prefetched expert, in neither hits nor misses): "
            f"lru {lru['prefetch_hits']};") in " ".join(res.output.split()), res.output


SPACE = """
name = "newuser"
[precision]
formats = ["int8", "int4"]
groups = 1
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru", "tide"]
tau = [1, 4]
prefetch = ["none"]
miss = ["copy", "cpu", "hybrid"]
[objectives]
time_per_token = "minimize"
accuracy = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
task = "toy"
limit = 4
trace_prompts = 1
fidelity_prompts = 1
"""


def test_the_queued_trials_note_names_only_what_was_queued(tmp_path, monkeypatch):
    """Without --budgets the note on queued trials still said "(warm start, --budgets points and baselines,
    retries)": a run that queued only its warm start now says "(warm start)"."""
    from advisor.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.toml").write_text(SPACE)
    res = CliRunner().invoke(app, ["tune", "--space", "space.toml", "--storage", f"sqlite:///{tmp_path}/s.db",
                                   "--study", "u", "--trials", "1"], terminal_width=80)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # the note wraps at 80 columns
    m = re.search(r"note: (\d+) queued trials \(warm start\) did not run: the run reached its trial count first; "
                  r"`--more (\d+)` runs them", text)
    assert m and m.group(1) == m.group(2), text
    assert "--budgets" not in text and "retries" not in text, text


def test_budgets_queue_one_baseline_trial_per_configuration_and_a_resume_none_twice(tmp_path, monkeypatch):
    """At a budget that holds no expert, Fiddler-, TIDE- (tau 1, 2, 4, 8) and llama.cpp-style baselines all keep none
    on the GPU and compute every miss on the CPU (a policy places nothing without slots), and Mixtral-offloading-
    style is no-cache: each was queued, measured alike, and stood as its own front row. One trial now measures
    each configuration, naming the baselines it stands for; a resume queues none of them again; `advisor report`
    answers for each strategy with it. (1.7 MiB holds the 0-slot baselines' counted 1.69 MiB, not the least
    configuration with a slot, 1.71 MiB; Mixtral-offloading-style's staging buffers count 2.44 MiB, so it is not
    queued at either budget.)"""
    import optuna

    from advisor.baselines import BASELINES
    from advisor.cli import app
    from advisor.report.data import TrialRecord
    from advisor.report.select import Reference, baseline_rows
    from advisor.results.storage import open_storage
    from advisor.tune.baseline_trials import NOT_QUEUED

    def what(attrs):  # the configuration: where no layer has a slot, the policy (and its tau) places nothing
        p = dict(attrs["fixed_params"])
        if not any(p["slots_per_layer"]):
            p.pop("policy"), p.pop("tau")
        return json.dumps(p, sort_keys=True)

    def stands_for(attrs):
        own = (attrs["baseline"], attrs["baseline_budget"], attrs["fixed_params"]["tau"])
        return [own, *(tuple(k) for k in attrs.get("baseline_also", []))]

    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.toml").write_text(SPACE)
    url = f"sqlite:///{tmp_path}/s.db"
    args = ["tune", "--space", "space.toml", "--storage", url, "--study", "u", "--budgets", "1.7MiB,2MiB",
            "--trials", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output

    def baselines():
        study = optuna.load_study(study_name="u", storage=open_storage(url, heartbeat_interval=None))
        return [t for t in study.get_trials(deepcopy=False) if "baseline" in t.user_attrs]

    first = baselines()
    configs = [what(t.user_attrs) for t in first]
    assert len(set(configs)) == len(configs) < 15, [t.user_attrs for t in first]
    stood = [k for t in first for k in stands_for(t.user_attrs)]
    every = [("no-cache", "-", 0)] + [(b.name, budget, tau) for budget in ("1.7MiB", "2MiB") for b in BASELINES
                                      if b.name != "mixtral-offloading" for tau in b.taus]
    assert sorted(stood) == sorted(every), stood
    none = next(t for t in first if ("fiddler", "1.7MiB", 0) in stands_for(t.user_attrs))
    assert set(none.user_attrs["fixed_params"]["slots_per_layer"]) == {0}
    assert none.user_attrs["fixed_params"]["policy"] == "lru" and none.user_attrs["baseline"] == "llama.cpp"
    res = CliRunner().invoke(app, args)  # the resume
    assert res.exit_code == 0, res.output
    assert len(baselines()) == len(first)

    # the report's baseline rows at 1.7 MiB: every strategy, from the trials that measured it
    values = {"h2d_bytes_per_token": 0.0, "time_per_token": 1.0, "peak_gpu_bytes": 1.0}
    records = [TrialRecord(t.number, {"slots_per_layer": t.user_attrs["fixed_params"]["slots_per_layer"]},
                           values, {}, dict(t.user_attrs)) for t in first]
    study = optuna.load_study(study_name="u", storage=open_storage(url, heartbeat_interval=None))
    rows = baseline_rows(records, "1.7MiB", Reference(1.0, 1.0, None, "test"), {}, 1.7 * 2**20, [],
                         study.user_attrs.get(NOT_QUEUED))
    assert [r.strategy for r in rows] == [b.label for b in BASELINES], rows
    assert rows[0].trial is None and "not queued" in rows[0].note, rows[0]
    assert {r.trial for r in rows if r.strategy != "Mixtral-offloading-style"} == {none.number}, rows


def test_tune_says_when_queued_points_did_not_run_and_a_resume_shows_the_stored_front(tmp_path):
    (tmp_path / "space.toml").write_text(SPACE)
    base = ["tune", "--space", "space.toml", "--storage", f"sqlite:///{tmp_path}/s.db", "--study", "u"]
    # tunes that must succeed, through the CLI in this process: as subprocesses each imported torch again
    first = advisor_in_process(*base, "--budgets", "25%", "--trials", "3", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    text = " ".join(first.stdout.split())  # the note wraps at 80 columns
    # the largest of --budgets is the study's budget, so a model above it streams its experts as under --budget
    # (it was loaded whole, being below the free memory, and the study ignored staging and activations)
    assert ("loading: offloaded: routed experts stream from the checkpoint (counted 7.23 MiB of checkpoint tensors > --budgets "
            "25% (resident weights + 25% of the FP16 expert bytes))") in text, text
    m = re.search(r"note: (\d+) queued trials \(warm start, --budgets points, baselines\) did not run: "
                  r"the run reached its trial count first; `--more (\d+)` runs them", text)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) > 0, text
    again = advisor_in_process(*base, "--budgets", "25%", "--trials", "3", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    front = int(re.search(r"Pareto front of study u \((\d+) points?", again.stdout).group(1))
    live = re.search(r"tuning .* 3/3 front (\d+)", again.stdout)
    assert live and int(live.group(1)) == front > 0, again.stdout


def test_recommend_says_how_an_accuracy_tie_was_broken(tmp_path):
    """`--gpu "RTX 4090"` on the committed example: every point fits, the most accurate wins, and the next best
    has the same accuracy; the reason said `accuracy 0.960 vs 0.960` instead of what broke the tie."""
    r = advisor("recommend", "--storage", str(EXAMPLE_DB), "--gpu", "RTX 4090", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if "next best" in ln]
    assert re.search(r"has the same accuracy 0\.\d{3} \(measured(; a tie\)|\) and \d+\.\d\dx the "
                     r"(time per token \(modelled\)|transfer \(counted\)))$", line), line
    assert " vs " not in line, line
    # and which it is, from the stored values of the chosen point and the next best: time per token breaks an
    # accuracy tie first, then H2D bytes
    js = json.loads(advisor("recommend", "--storage", str(EXAMPLE_DB), "--gpu", "RTX 4090", "--json",
                            cwd=tmp_path).stdout)
    best, nxt = js["chosen"]["values"], js["alternatives"][0]["values"]
    assert best["accuracy"] == nxt["accuracy"]
    t, h = "time_per_token", "h2d_bytes_per_token"
    tie = (f" (measured) and {nxt[t] / best[t]:.2f}x the time per token (modelled)" if nxt[t] != best[t]
           else f" (measured) and {nxt[h] / best[h]:.2f}x the transfer (counted)" if nxt[h] != best[h]
           else " (measured; a tie)")
    assert line.endswith(f"has the same accuracy {best['accuracy']:.3f}{tie}"), (line, best, nxt)


def test_a_data_file_the_toy_task_would_not_read_is_refused(tmp_path):
    """`advisor tune --data my.jsonl` ran the bundled toy task and never read the file, without a word."""
    (tmp_path / "my.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    r = advisor("tune", "--data", "my.jsonl", "--storage", f"sqlite:///{tmp_path}/t.db", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == ["error: --data my.jsonl: the toy task reads no data file (its problems "
                                             "are bundled); use --task gsm8k --data FILE for your own question/answer "
                                             "jsonl"], r.stderr
    assert not (tmp_path / "t.db").exists() and "advisor tune" not in r.stdout  # before the model loads


def test_profile_refuses_an_empty_or_negative_expert_shape_before_measuring(tmp_path):
    """`advisor profile --cpu --expert-shape 0x5` measured the link, then died in a traceback (amax of an empty
    tensor); `-4x8` in torch's negative-dimension error."""
    for shape in ("0x5", "-4x8", "8x0"):
        r = advisor("profile", "--cpu", f"--expert-shape={shape}", "--profiles-dir", str(tmp_path / "pp"),
                    cwd=tmp_path, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines() == [f"error: bad --expert-shape '{shape}': both sizes must be positive, "
                                                 "e.g. 2048x1024"], r.stderr
        assert not (tmp_path / "pp").exists()


def test_a_bad_budgets_or_memory_value_names_its_option_and_the_shares_it_takes(tmp_path):
    """`--budgets 10%,abc` said `budget 'abc' is not a size; use e.g. 12GiB` - neither which option nor that
    shares such as 25% are what `--budgets`/`--memory` usually take. The option is named as --budget's refusals
    name theirs (`--budget 'abc' is not a size`), not `--budgets: budget 'abc'`."""
    for args, option in ((["tune", "--budgets", "10%,abc", "--storage", f"sqlite:///{tmp_path}/t.db"], "--budgets"),
                         (["report", "bundled-example", "--memory", "abc", "--storage", str(EXAMPLE_DB), "-o",
                           str(tmp_path / "r")], "--memory")):
        r = advisor(*args, cwd=tmp_path, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines() == [f"error: {option} 'abc' is not a size; use e.g. 12GiB, 24GB, "
                                                 "8000MiB; or a share such as 25% (of the FP16 expert bytes, beside "
                                                 "the resident weights)"], r.stderr
        assert not (tmp_path / "t.db").exists() and not (tmp_path / "r").exists()


def test_studies_blocks_say_the_update_time_is_utc(tmp_path):
    """The wide table heads the column `updated (UTC)`; the 80-column blocks said only `updated 2026-12-03 16:28`."""
    r = advisor("studies", "--storage", str(EXAMPLE_DB), cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^   updated \d{4}-\d\d-\d\d \d\d:\d\d UTC$", r.stdout, re.M), r.stdout


def test_profile_measures_cpu_experts_with_the_threads_tune_uses(tmp_path):
    """`advisor profile --model M` measured CPU experts with torch's default threads (every core): on a busy
    2-core host int4 took 8 ms per token instead of 0.1 ms, and `tune` itself measures with --threads 1."""
    for args, threads in (([], 1), (["--threads", "2"], 2)):
        out = tmp_path / f"pp{threads}"
        r = advisor("profile", "--cpu", "--repeats", "1", "--expert-shape", "64x32", "--profiles-dir", str(out),
                    *args, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
        (saved,) = out.glob("*.json")
        cpu = json.loads(saved.read_text())["cpu_experts"]
        assert cpu["threads"] == threads and f"{threads} thread{'' if threads == 1 else 's'}," in cpu["source"], cpu


def test_simulate_of_a_file_that_is_no_archive_does_not_advise_unpickling_it(tmp_path):
    """A text file given as a trace was reported with numpy's advice to load it with `allow_pickle=`."""
    (tmp_path / "t.npz").write_text("garbage\n")
    r = advisor("simulate", "t.npz", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == ["error: 't.npz' is not a routing trace this tool wrote (not an .npz "
                                             "archive); record one with `advisor trace MODEL -o FILE`"], r.stderr


def test_recommend_floor_reason_reads_in_order(tmp_path):
    """The floor's basis ended `... the highest-precision uniform plan in the study), minus 0.01)`: the drop came
    after the description (and after its note, when the reference is not full precision)."""
    r = advisor("recommend", "--storage", str(EXAMPLE_DB), "--budget", "1.97MiB", "--max-accuracy-drop", "0.01",
                "--prefer", "latency", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ("- accuracy 0.960 (measured, n=200, 95% CI 0.923-0.980) >= floor 0.940 (= 0.950 of trial #0, measured, minus 0.01; trial #0: "
            "uniform fp16 plan (the study's full precision)) -") in " ".join(r.stdout.split()), \
        r.stdout  # on one line: recommend wraps at the terminal's width


def test_an_output_path_that_is_a_directory_is_one_line(tmp_path, monkeypatch):
    """`export -o DIR` ended in IsADirectoryError's traceback (the rename onto the directory); `trace -o DIR`
    would have failed so only after the model decoded its prompts."""
    from advisor.cli import app

    out = tmp_path / "out"
    out.mkdir()
    r = advisor("export", "bundled-example", "129", "--storage", str(EXAMPLE_DB), "--to", "json", "-o", str(out),
                cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"error: cannot write {out}: it is a directory; give -o/--output another path", \
        r.stderr
    assert list(out.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["out"]
    from advisor.errors import UserError
    from advisor.models import load as model_load

    def no_load(*a, **k):
        raise AssertionError("the model loaded before the output path was checked")

    monkeypatch.setattr(model_load, "load_model", no_load)
    res = CliRunner().invoke(app, ["trace", "bundled", "-o", str(out)])  # `advisor.cli.run` prints it, exit 2
    assert isinstance(res.exception, UserError) and "it is a directory" in str(res.exception), res.output


def test_the_ktransformers_script_of_an_int4_point_runs_in_bash(tmp_path):
    """An int4 trial exported to ktransformers (first found on the README example's trial): its `: "${KT_WEIGHT_PATH:?... kt-kernel's ...}"`
    line was a bash syntax error (bash reads the apostrophe inside ${...:?}), so the script never ran and
    `--check` said FAILED."""
    from recommend_helpers import make_db, model_meta, point

    script = tmp_path / "kt.sh"  # an int4 Qwen3-MoE point (SGLang serves no LLaDA-MoE: the export refuses it)
    url = make_db(tmp_path / "a.db", [point("kt", 1, "int4", 4, acc=0.9, h2d=1, peak_gib=1, meta=model_meta("qwen3_moe"))])
    r = advisor("export", "kt", "1", "--storage", url, "--to", "ktransformers", "--opt", "kt_method=amxint4", "-o",
                str(script), cwd=tmp_path, timeout=120)  # the method would follow this host's CPU flags
    assert r.returncode == 0, r.stderr
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 2, run.stderr  # stops until the weight path is set, and says what to put there
    assert run.stderr.strip() == ("set KT_WEIGHT_PATH to expert weights converted for AMXINT4 by kt-kernel's "
                                  "scripts/convert_cpu_weights.py --input-path <the checkpoint> --input-type bf16 "
                                  "--quant-method int4 --output <that directory>"), run.stderr


def test_the_llama_cpp_script_of_the_bundled_model_says_how_to_make_its_gguf(tmp_path):
    """The script's SRC_GGUF came "from convert_hf_to_gguf.py --outtype bf16", which refuses the bundled model's
    toy tokenizer ("BPE pre-tokenizer was not recognized"): a user following the README's llama.cpp export had no
    GGUF to quantize. The command it names now exists and, with llama.cpp's tools cached, converts the model."""
    import os
    import shlex

    script = tmp_path / "run.sh"
    r = advisor("export", "bundled-example", "129", "--storage", str(EXAMPLE_DB), "--to", "llama.cpp", "-o",
                str(script), cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in script.read_text().splitlines() if ln.startswith('SRC_GGUF="'))
    cmd = shlex.split(line.partition("# from: ")[2].partition(" (")[0])
    assert cmd[0] == "python" and Path(cmd[1]).is_file() and Path(cmd[3]).is_dir(), line
    llama = Path(os.environ.get("ADVISOR_LLAMACPP", Path.home() / ".cache" / "moe-advisor" / "llama.cpp"))
    if not (llama / "BUILD_OK").is_file():
        return  # the converter itself lives in llama.cpp (benchmarks/build_llamacpp.sh caches it)
    cmd = [sys.executable, cmd[1], str(llama), *cmd[3:]]
    conv = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert conv.returncode == 0 and (tmp_path / "model-bf16.gguf").stat().st_size > 1_000_000, conv.stderr[-2000:]


def test_inspect_with_a_budget_below_the_resident_weights_says_by_how_much_and_what_one_slot_needs():
    from advisor.cli import app

    res = CliRunner().invoke(app, ["inspect", "bundled", "--budget", "1MiB"], terminal_width=300)
    assert res.exit_code == 0, res.output
    title = " ".join(res.output.split())
    assert "left for expert slots" not in title and not re.search(r" -\d", title), title
    m = re.search(r"resident weights ([\d.]+) MiB .*?, ([\d.]+) KiB short of them, so no expert slot fits; one "
                  r"(\w+) slot per MoE layer needs ([\d.]+) MiB: --budget ([\d.]+MiB) or more", title)
    assert m, title
    assert abs(float(m[1]) * 1024 - 1024 - float(m[2])) < 5.2, title  # short = resident - budget (rounded)
    assert m[3] == "int2" and float(m[4]) > float(m[1]), title
    assert res.output.count("none (resident >") == 7, res.output  # every format's slots cell
    # the --budget it names is one word to paste, rounded up: one int2 slot per layer fits it ("1.71 MiB or more"
    # was two shell words, rounded to the nearest, below what is needed half the time)
    res = CliRunner().invoke(app, ["inspect", "bundled", "--budget", m[5]], terminal_width=300)
    title = " ".join(res.output.split())
    assert res.exit_code == 0 and "left for expert slots" in title and "too little for any" not in title, title


@pytest.mark.parametrize(("budget", "room"), [
    ("1.25MiB", "no room left for expert slots beside the activation allowance; "),
    ("1.695MiB", r"1.45 KiB left for expert slots and staging, too little for any: "),
])
def test_inspect_with_a_budget_that_fits_no_slot_above_the_resident_weights_says_what_one_slot_needs(budget, room):
    """Above the resident weights (1.23 MiB) but within the activation allowance (478 KiB), or a few KiB above it,
    no slot fits either; the title said only "no room left" or "1.46 KiB left for expert slots", not the budget
    one slot needs, as it says below the resident weights."""
    from advisor.cli import app

    res = CliRunner().invoke(app, ["inspect", "bundled", "--budget", budget], terminal_width=300)
    assert res.exit_code == 0, res.output
    title = " ".join(res.output.split())
    m = re.search(room + r"one int2 slot per MoE layer needs ([\d.]+) MiB: --budget ([\d.]+)MiB or more \(misses "
                  r"computed on the CPU\)", title)
    assert m and float(m[2]) >= float(m[1]) > float(budget.removesuffix("MiB")), title
    assert res.output.count(" none │") >= 7, res.output  # every format's slots cell


def test_recommend_prints_an_export_command_that_runs_as_printed(tmp_path):
    import shlex
    import shutil

    db = tmp_path / "my studies.db"  # a path that needs quoting
    shutil.copy(EXAMPLE_DB, db)

    r = advisor("recommend", "--storage", str(db), "--budget", "1.97MiB", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("Export it: "))
    argv = shlex.split(line[len("Export it: "):].rsplit(" --to ", 1)[0])
    assert argv[:2] == ["advisor", "export"] and "--storage" in argv, line
    out = advisor(*argv[1:], "--to", "json", "-o", str(tmp_path / "c.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads((tmp_path / "c.json").read_text())


def test_a_refused_off_front_export_does_not_say_exported(tmp_path):
    """A Fiddler-style row off the example's front (static_hot, tuned before hot sets were stored: the copy's trial
    has its routing taken out) is refused for json; the off-front note came first and said "exported as stored", so
    the user read two contradicting lines."""
    from example_study import example_without_hot_set

    db, trial = example_without_hot_set(tmp_path)
    r = advisor("export", "bundled-example", str(trial), "--storage", str(db), "--to", "json",
                "-o", str(tmp_path / "f.json"), cwd=tmp_path)
    assert r.returncode == 2 and not (tmp_path / "f.json").exists(), r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "exported as stored" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: this static_hot point stored no calibration routing"), r.stderr


def test_an_off_front_export_to_a_path_it_cannot_write_says_only_that(tmp_path):
    """`export STUDY N -o DIR` of a trial off the front: the note "exported as stored" came before the refusal
    "cannot write DIR: it is a directory", two contradicting lines (CLI fuzzing, 2026-12-06); now the refusal
    alone, and the note still comes with an export that is written."""
    (tmp_path / "adir").mkdir()
    args = ["export", "bundled-example", "0", "--storage", str(EXAMPLE_DB), "--to", "json", "-o"]
    r = advisor(*args, "adir", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith("error: cannot write adir: it is a directory") and "exported as" not in r.stderr
    ok = advisor(*args, "t0.json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr  # the json document carries the note as data (schema version 4)
    assert json.loads((tmp_path / "t0.json").read_text())["notes"][0].startswith("trial 0 is not on the stored front")
    lines = ok.stderr.strip().splitlines()
    assert lines[0].startswith("note: trial 0 is not on the stored front") and lines[-1].startswith("wrote t0.json")


def test_the_off_front_note_is_in_the_exported_file_too(tmp_path):
    """`export STUDY N` of a trial off the stored front said so on stderr only: the script's `# note:` comments,
    which carry the export's other notes (200853c), did not, so whoever runs the file later is not told. It is
    now the first of the added `# note:` lines too (and in --json's notes), still said once on stderr."""
    args = ["export", "bundled-example", "0", "--storage", str(EXAMPLE_DB)]
    for target, out in (("hf", "n.py"), ("llama.cpp", "n.sh")):
        r = advisor(*args, "--to", target, "-o", out, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert flat(r.stderr).count("is not on the stored front") == 1, r.stderr
        lines = (tmp_path / out).read_text().splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("# note: trial 0 is not on the stored front"))
        assert all(line.startswith("#") for line in lines[:at]), lines[:at + 1]  # in the opening comments
    r = advisor(*args, "--to", "llama.cpp", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["notes"][0].startswith("trial 0 is not on the stored front"), r.stdout


def test_the_recommend_command_tune_suggests_runs_in_a_database_of_several_models(tmp_path, monkeypatch):
    """tune ends with `next: ... advisor recommend --budget ...`; in a database that already holds another
    model's study (the README's bundled run, then its tiny-model how-to) that command is refused as mixing
    models, so the hint names the study. The tunes run in this process (CliRunner, in tmp_path): two subprocesses
    paid ~8 s of CPU each importing torch and transformers; the printed hint then runs as a user runs it."""
    from advisor.cli import app
    from advisor.tune.space import load_space

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "tiny.toml"
    space.write_text(load_space("quick").text.replace('accuracy = "maximize"', 'fidelity_top1 = "maximize"'))
    for model in ("tiny:qwen3_moe", "tiny:olmoe"):
        r = CliRunner().invoke(app, ["tune", model, "--space", str(space), "--trials", "1", "--wide"])
        assert r.exit_code == 0, r.output[-4000:]
    hint = re.search(r"`advisor (recommend[^`]*?) --budget \.\.\.`", " ".join(r.stdout.split())).group(1)
    assert "--study tiny:olmoe-toy-quick" in hint, hint
    follow = advisor(*hint.split(), "--budget", "1GiB", cwd=tmp_path)
    assert follow.returncode == 0 and "model tiny:olmoe" in follow.stdout, follow.stdout + follow.stderr
