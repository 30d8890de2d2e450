"""The README's example output and counts are what the repository gives today, not what it gave once.

- every `$ advisor recommend|export ... --storage studies/example/advisor.db` block is run as the README shows it
  (read-only commands: no torch, under a second each) and compared line by line: a whole block must equal the
  output, an `# excerpt` block must appear in it in order (`...` marks lines left out);
- the number of hostile completions the README says the sandbox test plays is the number it plays;
- the H200 miss-study note's table names the slots per layer its committed databases stored;
- what `--budgets` queues on the bundled model is what the README counts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE_DB = "studies/example/advisor.db"
READ_ONLY = ("recommend", "export")


def _example_blocks() -> list[tuple[str, list[str], bool]]:
    """(command line, the lines the README prints under it, whether it is an excerpt) for each read-only
    command on the committed example study inside a fenced block."""
    fences, inside, indent = [], False, 0
    for line in README.read_text().splitlines():
        if line.strip().startswith("```"):
            inside, indent = not inside, len(line) - len(line.lstrip())  # a block in a list item is indented
            fences += [[]] if inside else []
        elif inside:
            fences[-1].append(line[indent:])
    out = []
    for fence in ("\n".join(lines) for lines in fences):
        # each `$ ` line starts a command; the lines up to the next one are what it printed
        for part in re.split(r"^\s*\$ ", fence, flags=re.M)[1:]:
            cmd, *lines = part.rstrip().split("\n")
            words = shlex.split(cmd, comments=True)
            if words[:1] == ["advisor"] and words[1] in READ_ONLY and EXAMPLE_DB in words:
                out.append((cmd, [line.rstrip() for line in lines], "# excerpt" in cmd))
    return out


BLOCKS = _example_blocks()


def test_the_readme_shows_the_example_commands_this_test_runs():
    kinds = {(shlex.split(c, comments=True)[1], excerpt) for c, _, excerpt in BLOCKS}
    assert {("recommend", False), ("recommend", True), ("export", True), ("export", False)} <= kinds, kinds
    assert len(BLOCKS) >= 5


def _run(cmd: str, cwd: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(ROOT)
    words = shlex.split(cmd, comments=True)
    r = subprocess.run([sys.executable, "-m", "advisor", *words[1:]], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return [line.rstrip() for line in (r.stdout + r.stderr).splitlines()]


@pytest.mark.parametrize("cmd,lines,excerpt", BLOCKS, ids=[c.split("#")[0].strip() for c, _, _ in BLOCKS])
def test_readme_example_output_is_what_the_command_prints_now(cmd, lines, excerpt, tmp_path):
    (tmp_path / "studies" / "example").mkdir(parents=True)
    shutil.copy(ROOT / EXAMPLE_DB, tmp_path / EXAMPLE_DB)  # as the README runs it, from a checkout's root
    printed = _run(cmd, tmp_path)
    if not excerpt:
        assert lines == printed, f"README block for `{cmd}` has drifted from what it prints now"
        return
    at = 0
    for line in lines:
        if not line.strip() or line.strip() == "...":
            continue
        found = next((i for i in range(at, len(printed)) if printed[i] == line), None)
        assert found is not None, f"`{cmd}`: the README line {line!r} is not printed (in this order) any more"
        at = found + 1


def test_every_readme_command_on_the_example_study_names_its_database():
    """The committed example study lives in studies/example/advisor.db, not in the default studies/advisor.db:
    a README command on it without that --storage says "no study named 'bundled-example'" (the report command
    above the README's answer table did)."""
    text = README.read_text()
    commands = re.findall(r"`(advisor [^`]*)`", text) + re.findall(r"^\s*\$ (advisor .*)$", text, flags=re.M)
    on_example = [c for c in commands if "bundled-example" in shlex.split(c, comments=True)[2:3]]
    assert len(on_example) >= 3, on_example  # report, export (twice)
    for cmd in on_example:
        assert EXAMPLE_DB in shlex.split(cmd, comments=True), f"`{cmd}` does not name --storage {EXAMPLE_DB}"


def test_readme_counts_the_hostile_completions_the_sandbox_test_plays(tmp_path):
    from tests.sandbox_cases import cases, probes

    text = " ".join(README.read_text().split())
    m = re.search(r"`tests/test_sandbox_hostile\.py` plays (\d+) hostile completions \(.*?\) and (\d+) that look "
                  r"for the evaluator's secret", text)
    assert m, "the README's sentence on the hostile completions changed; update this test with it"
    assert (int(m.group(1)), int(m.group(2))) == (len(cases(tmp_path)), len(probes(tmp_path)))


def test_miss_study_note_slots_are_the_stored_ones():
    results = ROOT / "benchmarks" / "results"
    note = (results / "2026-12-04_h200_miss_study_note.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (int\d+|bf16), (\d+)(?:-(\d+))? slots?, (copy|cpu|hybrid) \|", note, flags=re.M)
    assert len(rows) == 8, rows
    for db in ("2026-12-04_h200_miss_study.db", "2026-12-04_h200_miss_study_worker_thread.db"):
        with sqlite3.connect(f"file:{results / db}?mode=ro", uri=True) as con:
            stored = {n: json.loads(v) for n, v in con.execute(
                "SELECT t.number, a.value_json FROM trial_user_attributes a JOIN trials t USING (trial_id) "
                "WHERE a.key = 'config'")}
        for number, fmt, low, high, miss in rows:
            config = stored[int(number)]
            slots = config["slots_per_layer"]
            assert (min(slots), max(slots)) == (int(low), int(high or low)), (db, number, slots)
            assert config["params"]["miss"] == miss and config["params"]["fmt_g0"] == fmt, (db, number, config)


def test_miss_study_note_gives_the_result_lines_its_runs_left_out():
    """Run 1's committed JSON ends `"result": "RESULT "` (its study failed and the summary then missed the copied
    overlap runs), and nothing said why. The note explains it and quotes what today's summary() makes of each
    committed run: those lines must be what summary() gives."""
    from benchmarks.gpu_miss_study import summary

    results = ROOT / "benchmarks" / "results"
    note = (results / "2026-12-04_h200_miss_study_note.md").read_text()
    quoted = dict(re.findall(r"^- (run \d): `(RESULT [^`]*)`$", note, flags=re.M))
    runs = {"run 1": "2026-12-04_h200_miss_overlap_worker_thread.json", "run 3": "2026-12-04_h200_miss_study.json"}
    assert set(quoted) == set(runs), quoted
    for run, name in runs.items():
        stored = json.loads((results / name).read_text())
        assert quoted[run] == summary(stored) != stored["result"], (run, stored["result"])
    assert json.loads((results / runs["run 1"]).read_text())["result"] == "RESULT "


def test_readme_nvidia_smi_memory_is_the_cited_mib():
    """The README's nvidia-smi figures (79.6 GiB on an H100 80GB, 140.4 GiB on an H200) cited nothing: each now
    names the MiB nvidia-smi printed and where (the H200's the committed host file of the lent machine)."""
    text = " ".join(README.read_text().split())
    m = re.search(r"\(([\d.]+) GiB on an H100 80GB HBM3: (\d+) MiB in public nvidia-smi output, e\.g\. \[[^]]+\]"
                  r"\(https://github\.com/[^)]+\); ([\d.]+) GiB on an H200: (\d+) MiB on the lent H200, "
                  r"`(benchmarks/results/[^`]+)`\)", text)
    assert m, "the README's nvidia-smi sentence changed; update this test with it"
    h100_gib, h100_mib, h200_gib, h200_mib, host = m.groups()
    assert f"{int(h100_mib) / 1024:.1f}" == h100_gib and f"{int(h200_mib) / 1024:.1f}" == h200_gib
    assert re.search(rf"^NVIDIA H200, {h200_mib} MiB,", (ROOT / host).read_text(), flags=re.M), host


def _wall_s(run: str) -> int:
    """The whole command's seconds in a committed output, from its `/usr/bin/time` line."""
    m = re.search(r"^WALL (\d+\.\d+) s", run, flags=re.M)
    assert m, "no WALL line"
    return round(float(m.group(1)))


def test_readme_timings_are_the_committed_runs_they_cite():
    """The worked example's '46 s, 40 s of them tuning', the example study's '170 s here', HumanEval's '23 s' and the
    profile's '20-32 ms ... 0.02-0.8 ms' named no run that measured them. Each now cites a dated output under
    benchmarks/results/, and the figures are that output's."""
    text = " ".join(README.read_text().split())
    results = ROOT / "benchmarks" / "results"
    link = r"\[output\]\(benchmarks/results/(\d{4}-\d{2}-\d{2}_cpu[\w-]*_[\w.-]+)\)"

    m = re.search(r"Here, at 80 columns, it took (\d+) s, (\d+) s of them tuning \([^)]*?" + link, text)
    assert m, "the worked example's timing sentence changed; update this test with it"
    run = (results / m.group(3)).read_text()
    assert int(m.group(1)) == _wall_s(run)
    assert int(m.group(2)) == int(re.search(r"cache configs by replay: \d+; (\d+) s$", run, flags=re.M).group(1))
    block = README.read_text().split("```\nadvisor tune bundled", 1)[1].split("```", 1)[0]
    assert "advisor tune bundled" + block in run, "the README's worked example is not the cited run's output"

    m = re.search(r"regenerate_example\.sh` rebuilds it \((\d+) s, (\d+) s of them tuning, [^)]*?" + link, text)
    assert m, "the example study's rebuild time changed wording; update this test with it"
    run = (results / m.group(3)).read_text()
    minutes, seconds = re.search(r"^tuning .* 300/300 .* 0:(\d\d):(\d\d)$", run, flags=re.M).groups()
    assert (int(m.group(1)), int(m.group(2))) == (_wall_s(run), 60 * int(minutes) + int(seconds))

    m = re.search(r"The 164 canonical solutions \(real output, (\d+) s on [^)]*?" + link, text)
    assert m, "the HumanEval timing sentence changed; update this test with it"
    run = (results / m.group(2)).read_text()
    assert int(m.group(1)) == _wall_s(run) and "pass@1: 100.0% (164/164;" in run

    m = re.search(r"--threads 2` stored (\d+)-(\d+) ms for (\d+) of its (\d+) CPU expert times .*? where one thread "
                  r"took ([\d.]+)-([\d.]+) ms for all \d+; .*? 2 threads gave ([\d.]+)-([\d.]+) ms \(2026-12-05: " + link,
                  text)
    assert m, "the profile's threads sentence changed; update this test with it"
    tables = json.loads((results / m.group(9)).with_suffix(".json").read_text())
    times = {name: sorted(ms for rows in t["table"]["128x16"].values() for _, ms in rows) for name, t in tables.items()}
    slow = [ms for ms in times["busy-t2"] if ms > 1]
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))) == (
        round(min(slow)), round(max(slow)), len(slow), len(times["busy-t2"]))
    for (low, high), name in ((m.group(5, 6), "busy-t1"), (m.group(7, 8), "host-t2")):
        assert (float(low), float(high)) == (float(f"{times[name][0]:.2g}"), float(f"{times[name][-1]:.2g}")), name


def test_readme_worked_example_front_is_laid_out_as_tune_prints_it_now():
    """At 80 columns tune wraps the front's title and each line of the legend under it with an indent (2 and 4
    columns, `print_wrapped`, since a0c1dad); the worked example quoted a run from before, whose continuation lines
    started flush left (`budget, 0 failed)`, `prompts,cpu)`), which tune no longer prints. Each line of that part is
    one of: the title, a point's heading or values, a legend entry, or a continuation at its indent."""
    block = README.read_text().split("```\nadvisor tune bundled", 1)[1].split("```", 1)[0].splitlines()
    start = next(i for i, line in enumerate(block) if line.startswith("Pareto front of study"))
    end = next(i for i, line in enumerate(block) if line.startswith("CPU expert times:"))
    part = block[start:end]
    first = next(i for i, line in enumerate(part) if re.match(r"trial \d+: ", line))
    last = max(i for i, line in enumerate(part) if re.match(r"trial \d+: |   \S", line))
    assert all(len(line) <= 80 for line in part), part
    assert all(re.match(r"  \S", line) for line in part[1:first]), part[:first]  # the title, continued
    assert all(re.match(r"trial \d+: |   \S", line) for line in part[first:last + 1]), part[first:last + 1]
    legend = part[last + 1:]  # an entry 2 columns in, its continuation lines 4
    assert legend and re.match(r"  \S", legend[0]), legend
    assert all(re.match(r" {2}\S| {4}\S", line) for line in legend), [x for x in legend if not re.match(r" {2,4}\S", x)]


@pytest.mark.parametrize("offload", [True, False], ids=["offloaded", "resident"])
def test_readme_counts_what_budgets_queues_on_the_bundled_model(offload):
    """`--budgets 10%,25%,50%` with `--space dllm` on the bundled model: the points and baselines the README
    counts are the ones `advisor tune` enqueues (a point equal to a warm-start one is not queued twice) - loaded
    offloaded, as tune loads it by default (the largest budget is below the model's bytes), and with --resident."""
    import torch

    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model
    from advisor.tune.baseline_trials import baseline_trials, budget_points
    from advisor.tune.budget import BudgetFit, budget_memory
    from advisor.tune.model_backend import ModelBackend
    from advisor.tune.space import load_space

    text = " ".join(README.read_text().split())
    m = re.search(r"with `--space dllm` on the bundled model, (\d+) such points and (\d+) baselines beside its "
                  r"(\d+) warm-start points - `--trials 1` left (\d+) queued", text)
    assert m, "the README's sentence on what --budgets queues changed; update this test with it"
    points, baselines, warm, left = map(int, m.groups())
    if not offload:
        r = re.search(r"with `--resident`, (\d+) points, (\d+) baselines and (\d+) left;", text)
        assert r, "the README's count with --resident changed; update this test with it"
        points, baselines, left = map(int, r.groups())

    torch.set_num_threads(1)
    space = load_space("dllm")
    backend = ModelBackend(load_model("bundled", offload=offload), get_task("toy", limit=8, seed=0), space.evaluation)
    budgets = ("10%", "25%", "50%")
    budget = max(int(budget_memory(b, backend.shape)[0]) for b in budgets)
    fit = BudgetFit(space, backend.shape, budget, backend.calibration_counts)
    seeded = {json.dumps(p, sort_keys=True) for p in fit.warm_start()}
    new = {json.dumps(p, sort_keys=True) for _, p in budget_points(fit, budgets)} - seeded
    assert (points, baselines, warm) == (len(new), len(baseline_trials(space, backend.shape, budgets)), len(seeded))
    assert left == points + baselines + warm - 1


def test_readme_sampler_numbers_are_the_cited_run_on_todays_bundled_model():
    """The README's sampler hypervolumes came from `benchmarks/results/2026-12-03_cpu_search_efficiency.txt`, a run
    on the bundled model before it was retrained (16 experts per layer, top-2, not today's 64, top-8). They are now
    a run on today's model: the budgets the cited file printed are today's model's, and the README's worst-seed
    fractions at 40 trials and budget-blind over-budget shares are the ones it printed; so are GP's, from the gp run
    it cites on the same budgets."""
    from advisor.models.load import load_model
    from advisor.tune.model_backend import model_shape
    from benchmarks.search_efficiency import budget_bytes

    text = " ".join(README.read_text().split())
    m = re.search(r"\*\*Sampler\.\*\*(.*?)`benchmarks/results/(\d{4}-\d{2}-\d{2}_[\w-]+_search_efficiency\.txt)`",
                  text)
    assert m, "the README's sampler sentence or the result file it cites changed; update this test with it"
    para, run = m.group(1), (ROOT / "benchmarks" / "results" / m.group(2)).read_text()
    printed = {float(f): float(mib) for f, mib in re.findall(r"^budget (0\.\d+) = (\d+\.\d+) MiB", run, flags=re.M)}
    assert list(printed) == [0.1, 0.25, 0.5], printed
    shape = model_shape(load_model("bundled"))
    assert printed == {f: round(budget_bytes(shape, f) / 2**20, 2) for f in printed}, "not today's bundled model"
    rows: dict[str, list[tuple[str, str]]] = {}
    for name, blind, hv40, over in re.findall(r"^  (\w+)( \(budget-blind\))?\s+(?:[\d.]+ \([\d.]+\)\s+){2}([\d.]+) "
                                              r"\([\d.]+\)\s+over budget (\d+)%", run, flags=re.M):
        rows.setdefault(name + blind, []).append((hv40, over))
    hv = {k: "/".join(v for v, _ in vals) for k, vals in rows.items()}
    over = {k: "/".join(o for _, o in vals) for k, vals in rows.items()}
    quoted = re.search(r"TPE reached ([\d./]+) of the exhaustive hypervolume within 40 trials \(worst of 5 seeds\)\. "
                       r"NSGA-II reached ([\d./]+) and random search ([\d./]+), with 0 trials over budget for all three\. "
                       r"Before budget-aware search, ([\d/]+)% of TPE's trials and ([\d/]+)% of NSGA-II's", para)
    assert quoted, para
    assert quoted.groups() == (hv["tpe"], hv["nsga2"], hv["random"], over["tpe (budget-blind)"],
                               over["nsga2 (budget-blind)"]), (quoted.groups(), hv, over)
    assert over["tpe"] == over["nsga2"] == over["random"] == "0/0/0", over
    assert "RESULT worst_hv40=" in run and "over_budget_runs=0" in run.splitlines()[-1]
    gp = re.search(r"`--sampler gp` reached ([\d./]+) \(worst of 3 seeds\) but took ([\d.]+)-([\d.]+) s of sampler time "
                   r"per trial .*?`benchmarks/results/(\d{4}-\d{2}-\d{2}_[\w-]+_search_efficiency_gp\.txt)`", text)
    assert gp, "the README's gp sentence or the file it cites changed; update this test with it"
    gp_run = (ROOT / "benchmarks" / "results" / gp.group(4)).read_text()
    assert "3 seeds x 40 trials" in gp_run and re.findall(r"^budget (0\.\d+) = (\d+\.\d+) MiB", gp_run, flags=re.M) == [
        (str(f), f"{mib:.2f}") for f, mib in printed.items()]
    rows = re.findall(r"^  gp\s+(?:[\d.]+ \([\d.]+\)\s+){2}([\d.]+) \([\d.]+\).*?([\d.]+) s/trial$", gp_run, flags=re.M)
    assert gp.group(1) == "/".join(hv for hv, _ in rows)
    per_trial = sorted(float(s) for _, s in rows)
    assert (float(gp.group(2)), float(gp.group(3))) == (round(per_trial[0], 1), round(per_trial[-1], 1))


@pytest.mark.parametrize(("listed", "args", "needle"), [
    ("`--storage ''`", ["studies", "--storage", ""], "--storage is empty"),
    ("`export -o`", ["export", "bundled-example", "129", "--storage", EXAMPLE_DB, "--to", "json", "-o", "{tmp}/no/x.json"],
     "does not exist"),
    ("a `--device` other than `cpu` or `cuda[:N]`", ["inspect", "tiny:llada_moe", "--device", "mps"], "mps"),
    ("a MODEL that is no directory, `tiny:` family or hub id", ["inspect", "tiny:llada"], "unknown tiny family"),
    ("(`tiny:llada`, `bundeld`:", ["eval", "bundeld"], "did you mean 'bundled'"),
])
def test_the_bad_input_the_readme_lists_is_one_line_exit_2(listed, args, needle, tmp_path):
    """README's "Bad input" paragraph lists these; each is refused in one `error:` line, exit code 2."""
    bad_input = " ".join(README.read_text().split("Bad input (", 1)[1].split(") gets one line", 1)[0].split())
    assert listed in bad_input
    r = subprocess.run([sys.executable, "-m", "advisor", *(a.replace("{tmp}", str(tmp_path)) for a in args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and needle in errors[0], (r.stdout, r.stderr)


def test_the_readme_source_list_names_each_activation_meter():
    """"What every number means" lists every source label; the activation allowance is `measured:<meter>(...)` of
    one of `advisor.models.memory`'s meters (tune's probe: `ModelBackend._probe_activation`)."""
    from advisor.models.memory import CudaPeak, HeldBytes

    section = README.read_text().split("## What every number means", 1)[1].split("\n## ", 1)[0]
    for meter in (HeldBytes, CudaPeak):
        assert f"`measured:{meter.name}(probe decoding step: ...)`" in " ".join(section.split()), meter.name
