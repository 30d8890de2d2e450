"""`--threads 0` (every core, the default of eval, trace and quant-report) on a host other work keeps busy: torch's
threads wait on each other (measured on 2 cores at load 4-6: eval 25.9 s on 2 threads vs 3.9 s on 1). The load
average (os.getloadavg, patched here) past the cores it leaves free gets one note suggesting fewer threads."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

TRACE = ("trace", "bundled", "-o", "t.npz", "--limit", "1", "--max-new-tokens", "2", "--steps", "2")


@pytest.fixture
def two_cores(monkeypatch, tmp_path):
    """A 2-core host whose torch would run 2 threads (an earlier in-process test may have left it at 1)."""
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def trace(load: float, monkeypatch, *extra: str) -> str:
    from advisor.cli import app

    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    r = CliRunner().invoke(app, [*TRACE, *extra])
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())


def test_every_core_on_a_busy_host_says_the_load_and_suggests_one_thread(two_cores, monkeypatch):
    """Said to a user who typed no --threads at all: the note names 0 as the default (it read as an option they
    had given: `--threads 0 runs 2 threads`)."""
    said = trace(4.5, monkeypatch)
    assert ("note: --threads 0 (the default: every core) runs 2 threads, but this host's 1-minute load average is 4.5 (measured: "
            "os.getloadavg) on 2 cores, more than the 0.0 it leaves free: the threads wait on each other; "
            "--threads 1 can be many times faster") in said, said
    assert said.count("os.getloadavg") == 1


def test_a_quiet_host_or_an_explicit_thread_count_says_nothing(two_cores, monkeypatch):
    assert "getloadavg" not in trace(0.8, monkeypatch)  # 1.2 cores free: more than the load
    assert "getloadavg" not in trace(4.5, monkeypatch, "--threads", "2")  # asked for: not second-guessed


def test_every_core_is_every_core_this_process_may_use(monkeypatch, tmp_path):
    """Under `taskset -c 0,1` (the affinity, patched) on an 8-core host, --threads 0 runs 2 threads, and the load
    is weighed against those 2 cores: it ran torch's 4 threads and weighed the load against all 8 (5 free: no note)."""
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        said = trace(3.0, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    assert "--threads 0 (the default: every core) runs 2 threads" in said and "3.0 (measured: os.getloadavg) on 2 cores" in said, said


@pytest.mark.parametrize(("args", "message"), [
    (("trace", "bundled", "-o", "t.npz", "--task", "gsm8k", "--data", "/nonexistent/g.jsonl"), "does not exist"),
    (("eval", "bundled", "--task", "gsm8k", "--data", "/nonexistent/g.jsonl"), "does not exist"),
])
def test_bad_input_is_refused_before_the_busy_host_note(two_cores, monkeypatch, tmp_path, args, message):
    """Bad input is one line on a busy host too: refused before --threads 0's note (it came after it)."""
    from tests.cli_helpers import advisor_entry, one_error_line

    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    r = advisor_entry(*args, cwd=tmp_path)
    one_error_line(r, message)
    assert [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()] == [r.stderr.strip()], r.stderr


@pytest.mark.parametrize("args", [("eval", "bundled"), ("trace", "bundled", "-o", "t.npz")], ids=lambda a: a[0])
def test_a_device_this_host_lacks_is_refused_before_the_busy_host_note(two_cores, monkeypatch, tmp_path, args):
    """`--device cuda` on a host without CUDA was refused by the load, after --threads 0's note: the refusal was not
    one line. Whether CUDA is here takes torch; it is asked once torch has imported, before the note."""
    import torch

    from tests.cli_helpers import advisor_entry, one_error_line

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    r = advisor_entry(*args, "--device", "cuda", cwd=tmp_path)
    line = one_error_line(r, "device 'cuda' requested but no CUDA GPU is available here; use --device cpu")
    assert r.stderr.strip() == line and list(tmp_path.iterdir()) == []  # no note before it


@pytest.mark.parametrize("args", [("trace", "bundled", "-o", "t.npz"), ("eval", "bundled")], ids=lambda a: a[0])
def test_a_canvas_past_memory_is_refused_first_and_alone(two_cores, monkeypatch, tmp_path, args):
    """`trace --max-new-tokens 99999999` (and eval's) ran out of memory only after the busy-host note and the
    decoding note (12500000 blocks of 1 step): the refusal came fourth. The bundled model's forwards run over the
    whole canvas, whose hidden states alone (tokens x 128 hidden x 4 bytes, float32, from config.json) exceed any
    host's memory at the most tokens the option takes: refused before both notes, nothing written."""
    from tests.cli_helpers import advisor_entry, one_error_line

    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    r = advisor_entry(*args, "--max-new-tokens", "2147483647", cwd=tmp_path)
    line = one_error_line(r, "error: --max-new-tokens 2147483647: bundled (llada_moe) decodes with forwards over the "
                             "whole canvas, whose hidden states alone take 1024.0 GiB (2147483647 x 128 hidden x 4 "
                             "bytes, counted), more than the ", " available RAM (MemAvailable); give a smaller "
                             "--max-new-tokens")
    assert r.stderr.strip() == line and not r.stdout.strip() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [("trace", "bundled", "-o", "t.npz"), ("eval", "bundled", "--precision", "int8")],
                         ids=lambda a: a[0])
def test_the_checks_before_the_load_read_config_json_once(monkeypatch, tmp_path, args):
    """eval's plan checks (with --precision) and trace's family check read the model's config.json, and the canvas
    check (`refuse_canvas_past_memory`) read it again; it takes the config the command read now. No behaviour
    change: the same refusal, one read."""
    import advisor.models as models
    from tests.cli_helpers import advisor_entry, one_error_line

    reads: list[object] = []
    read_config = models.read_config
    monkeypatch.setattr(models, "read_config", lambda path: reads.append(path) or read_config(path))
    r = advisor_entry(*args, "--max-new-tokens", "2147483647", cwd=tmp_path)
    one_error_line(r, "--max-new-tokens 2147483647: bundled (llada_moe) decodes with forwards over the whole canvas")
    assert len(reads) == 1, reads


@pytest.mark.parametrize("args", [("trace", "-o", "t.npz"), ("eval", "--limit", "999"), ("quant-report",)],
                         ids=lambda a: a[0])
def test_a_model_the_load_refuses_is_refused_before_the_busy_host_note(two_cores, monkeypatch, tmp_path, args):
    """A model directory whose tokenizer.json does not parse (or whose config.json its checkpoint does not match) is
    refused by the load; the busy host's note (and eval's --limit note) came before that refusal: not one line.
    The notes are said once the model has loaded."""
    import shutil

    from advisor.models import BUNDLED_DIR
    from tests.cli_helpers import advisor_entry, one_error_line

    model = tmp_path / "m"
    shutil.copytree(BUNDLED_DIR, model)
    (model / "tokenizer.json").write_text("{bad")
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    r = advisor_entry(args[0], "m", *args[1:], cwd=tmp_path)
    line = one_error_line(r, "cannot read the tokenizer in m (JSONDecodeError")
    assert r.stderr.strip() == line and not r.stdout.strip(), r.stderr  # no note before it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
