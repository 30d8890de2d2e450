"""What a new user met in pass 14: each test failed before its fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _refused_light(cwd, *args: str, env: dict[str, str] | None = None) -> str:
    """The one `error:` line `advisor ARGS` ends with (in environment `env`, default this process's), after
    checking exit code 2 and that neither torch nor transformers was imported to say it."""
    code = ("import sys\nfrom advisor.cli import run\nsys.argv = ['advisor', *sys.argv[1:]]\n"
            "try:\n    run()\nexcept SystemExit as e:\n"
            "    print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules), 'exit', e.code)\n")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                       env=env)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "HEAVY [] exit 2" in p.stdout, p.stdout + p.stderr
    return errors[0]


def _cuda_driver_here() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_cuda_driver_here(), reason="an NVIDIA driver is here")
@pytest.mark.parametrize("args", [["eval", "bundled"], ["trace", "bundled", "-o", "t.npz"]], ids=lambda a: a[0])
def test_cuda_on_a_host_without_a_cuda_driver_is_refused_before_the_task_and_torch(tmp_path, args):
    """`eval --device cuda` (and `trace`) on a host without CUDA learned so once torch had imported - after the
    task had been read, GSM8K's hub lookup included (here offline and not cached: its refusal came instead). A host
    with no NVIDIA driver (libcuda) to load is refused first now, torch-free, in check_device's words."""
    import os

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("HF_DATASETS_CACHE", None)
    assert _refused_light(tmp_path, *args, "--task", "gsm8k", "--device", "cuda", env=env) == (
        "error: device 'cuda' requested but no CUDA GPU is available here; use --device cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["hf"])


@pytest.mark.skipif(_cuda_driver_here(), reason="an NVIDIA driver is here")
@pytest.mark.parametrize("args", [["tune", "--task", "gsm8k", "--storage", "s.db"], ["inspect", "bundled"]],
                         ids=lambda a: a[0])
def test_tune_and_inspect_with_cuda_on_a_host_without_a_cuda_driver_are_refused_before_torch(tmp_path, args):
    """`tune --device cuda` and `inspect --device cuda` on a host without CUDA learned so once torch had imported
    (tune after opening its storage and reading its task, GSM8K's hub lookup included), where eval and trace are
    refused first, torch-free (`errors.refuse_without_cuda_driver`): now these two as well, in the same words,
    and no database is made."""
    import os

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("HF_DATASETS_CACHE", None)
    assert _refused_light(tmp_path, *args, "--device", "cuda", env=env) == (
        "error: device 'cuda' requested but no CUDA GPU is available here; use --device cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["hf"])


@pytest.mark.parametrize("args", [["tune", "--storage", "s.db"], ["eval", "bundled"], ["trace", "bundled", "-o", "t.npz"],
                                  ["inspect", "bundled"]], ids=lambda a: a[0])
def test_a_mistyped_device_is_refused_before_torch_imports(tmp_path, args):
    """`--device gpu` (for cuda) was refused in one line, but only once torch and transformers had imported: 7-11 s
    on the 2-core host for a typo that `--sampler tpee` or `--mode replya` answer in under a second. The spelling is
    checked as the options are read, in the same words as a device torch knows and the runtime does not (mps)."""
    assert _refused_light(tmp_path, *args, "--device", "gpu") == (
        "error: device 'gpu' is not supported: the offload runtime runs on cpu or cuda; use cpu, cuda or cuda:N")
    assert list(tmp_path.iterdir()) == []  # no database, no trace


def test_a_mistyped_dtype_is_refused_before_torch_imports(tmp_path):
    """`inspect --dtype bf61` was refused only once torch and transformers had imported (5.6 s here), where
    `--device gpu` beside it is answered in 0.3 s: the dtype's name is checked without torch too."""
    said = _refused_light(tmp_path, "inspect", "bundled", "--dtype", "bf61")
    assert said == "error: unknown dtype 'bf61'; use one of: auto, bf16, bfloat16, float, float16, float32, fp16, fp32, half"


@pytest.mark.parametrize(("args", "said"), [
    (["inspect", "tiny:llada"], "unknown tiny family 'llada'; choose one of: llada_moe, llada2,"),
    (["tune", "./LLaDA-MoE-7B", "--storage", "s.db"], "no directory './LLaDA-MoE-7B': a MODEL that is a path names a model directory"),
    (["eval", "bundeld"], "'bundeld' is no model directory here, and a hub id is owner/name: did you mean 'bundled'"),
    (["trace", "owner/name/extra", "-o", "t.npz"], "no directory 'owner/name/extra'"),
    (["quant-report", "https://huggingface.co/inclusionAI/LLaDA-MoE-7B-A1B-Instruct"], "is neither a model directory"),
    (["profile", "--cpu", "--model", "tiny:olmo"], "unknown tiny family 'olmo'"),
], ids=lambda a: a[0] if isinstance(a, list) else None)
def test_a_model_no_loader_could_take_is_refused_before_torch_imports(tmp_path, args, said):
    """A mistyped MODEL (`tiny:llada`, a directory that is not there, `bundeld`) was refused in one line only once
    torch and transformers had imported, 6.5-11 s on the 2-core host; `bundeld`, shaped like a hub id, was
    "not available offline; download it ... (hf download bundeld)". What the spec and the file system alone
    decide is refused at once; a hub id is still looked up by loading it."""
    assert said in _refused_light(tmp_path, *args)
    assert list(tmp_path.iterdir()) == []


def test_a_resume_refused_for_another_gpu_gives_the_flag_that_resumes_it(tmp_path, monkeypatch):
    """A study tuned without --gpu, resumed with `--gpu T4`, was refused with "was run with GPU profile no --gpu
    (default link, H200 device), not 'T4 16GB' (...); use a new --study name, or the same --gpu" - and the other way
    round "..., not no --gpu (...)". It now names how each run gave its profile and the flag to resume with."""
    import torch
    from typer.testing import CliRunner

    from advisor.cli import app

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    args = ["tune", "tiny:qwen3_moe", "--space", "quick", "--budget", "150KiB", "--trials", "1", "--storage", "s.db"]
    assert CliRunner().invoke(app, [*args, "--study", "g", "--gpu", "RTX 4090"]).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--study", "n"]).exit_code == 0
    r = CliRunner().invoke(app, [*args, "--study", "g"])
    assert str(r.exception) == (
        "study 'g' was tuned with --gpu 'RTX 4090 24GB' (catalogue (nominal)), this run with no --gpu (the default "
        "link, the device priced as the H200); use a new --study name, or resume it with --gpu 'RTX 4090 24GB'")
    r = CliRunner().invoke(app, [*args, "--study", "n", "--gpu", "T4"])
    assert str(r.exception) == (
        "study 'n' was tuned with no --gpu (the default link, the device priced as the H200), this run with --gpu "
        "'T4 16GB' (catalogue (nominal)); use a new --study name, or resume it with no --gpu")


def test_inspect_prints_its_budget_tables_title_and_caption_flush_left(tmp_path, monkeypatch):
    """`advisor inspect MODEL --budget B` at 80 columns centred the budget table's title and caption - paragraphs
    of five lines each - so every line began at another column (`  budget 3.00 MiB: ...`, `   norms, routers,
    ...`, `      expert slots and staging; ...`), the last caption line alone in the middle. They are printed flush
    left, as tune's, studies' and pareto's titles are."""
    import torch
    from typer.testing import CliRunner

    from advisor.cli import app

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    r = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["inspect", "bundled", "--budget", "3MiB"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    top = next(i for i, line in enumerate(lines) if line.lstrip().startswith("budget 3.00 MiB (--budget 3MiB):"))
    box = next(i for i in range(top, len(lines)) if lines[i].startswith("┏"))
    bottom = next(i for i in range(box, len(lines)) if lines[i].startswith("└"))
    title, caption = lines[top:box], lines[bottom + 1:]
    assert len(title) > 1 and len(caption) > 1 and "host RAM" in title[-1], r.output
    assert all(line[:1].strip() for line in title + caption), title + caption


def test_tune_heads_a_study_that_scores_no_task_as_the_readers_do(tmp_path, monkeypatch):
    """`advisor tune tiny:qwen3_moe` headed its run `| task toy |` while `pareto`, `studies` and `recommend` head the
    same study `toy (not run: no tokenizer; fidelity on random token ids)` (pass 6): the header says it too."""
    import torch
    from typer.testing import CliRunner

    from advisor.cli import app

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    said = "task toy (not run: no tokenizer; fidelity on random token ids) |"
    r = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1",
                                                       "--storage", "s.db", "--study", "s"])
    assert r.exit_code == 0 and said in r.output.splitlines()[0], r.output
    r = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["pareto", "s", "--storage", "s.db", "--no-plots"])
    assert said.removesuffix(" |").removeprefix("task ") in r.output, r.output


@pytest.mark.parametrize(("floors", "said"), [
    (["--min-accuracy", "0.9", "--max-accuracy-drop", "0.01"],
     "floor 0.940 (= 0.950 of trial #0, measured, minus 0.01; trial #0: uniform fp16 plan (the study's full "
     "precision); stricter than --min-accuracy 0.9)"),
    (["--min-accuracy", "0.96", "--max-accuracy-drop", "0.02"],
     "floor 0.960 (--min-accuracy; stricter than --max-accuracy-drop's 0.930 = 0.950 of trial #0 minus 0.02)"),
])
def test_recommend_given_both_floors_says_which_applies(tmp_path, floors, said):
    """`recommend --min-accuracy 0.9 --max-accuracy-drop 0.01` applied the stricter floor, 0.940, and its reason
    spoke only of the drop: the --min-accuracy the user gave was not mentioned. With --min-accuracy the stricter,
    the reason said `>= floor 0.960` alone. Both are named now, the one that applies first."""
    from cli_helpers import advisor, flat

    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    r = advisor("recommend", "--storage", db, "--budget", "1.97MiB", *floors, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and said in flat(r.stdout), r.stdout + r.stderr


def test_an_interrupt_while_the_header_prints_leaves_the_study_listed_with_its_model(shm_tmp_path):
    """Ctrl-C or SIGTERM while tune printed its header (`on_seeded`, once the study was seeded: here `advisor tune
    2>&1 | head -1` killed by `timeout`) left the seeded study without its row for `advisor studies`: `model ? · task
    ? · space ? · budget - · device ?` beside its 11 queued warm-start points, until the next run. The row is
    written before the header is printed."""
    from tune_helpers import FakeBackend, small_space

    from advisor.results.registry import list_studies
    from advisor.results.store import engine_for
    from advisor.tune.study import TuneOptions, run_tune

    def interrupted(seed):
        raise KeyboardInterrupt

    opts = TuneOptions(study_name="s", storage=f"sqlite:///{shm_tmp_path}/t.db", sampler="random", seed=0, n_trials=4,
                       heartbeat_interval=None)
    with pytest.raises(KeyboardInterrupt):
        run_tune(FakeBackend(), small_space(), opts, budget_bytes=None, on_seeded=interrupted)
    [row] = list_studies(engine_for(opts.storage), "s")
    assert row.model != "?" and row.space == "test-small" and row.n_waiting > 0, row


@pytest.mark.parametrize("args", [["quant-report", "bundled", "--formats", "int8,int9"],
                                  ["eval", "bundled", "--precision", "int9"]], ids=lambda a: a[0])
def test_an_unknown_format_is_refused_before_torch_imports(tmp_path, args):
    """`quant-report --formats int9` (8.3 s) and `eval --precision int9` (9.9 s) were refused only once torch had
    imported, although format names and plans are parsed without torch (`parse_format`, `PrecisionPlan`)."""
    assert "'int9'" in _refused_light(tmp_path, *args)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("model", ["dir", "tiny:qwen3_moe"])
def test_eval_of_a_model_without_a_tokenizer_is_refused_before_torch_imports(tmp_path, model):
    """`advisor eval DIR` of a checkpoint without tokenizer files was refused only once the whole model had loaded
    (10 s for a 316 MiB checkpoint, minutes for a 7B): every eval task encodes text. The files are looked for
    without torch, as the loader looks for them (`advisor.models.TOKENIZER_FILES`)."""
    if model == "dir":
        from advisor.models import tiny

        tiny.build_tiny("qwen3_moe").save_pretrained(str(tmp_path / "m"))
        model = str(tmp_path / "m")
    said = _refused_light(tmp_path, "eval", model, "--limit", "1")
    assert said.startswith(f"error: {model} has no tokenizer, so it cannot be evaluated on a text task"), said


@pytest.mark.skipif(_cuda_driver_here(), reason="an NVIDIA driver is here")
def test_cuda_on_a_host_with_an_amd_gpu_driver_is_left_to_torch(tmp_path):
    """torch's ROCm build runs `--device cuda` on an AMD GPU, where no libcuda is there to load: the torch-free
    check refused such a host before torch could say it has a GPU. Where AMD's GPU device (`/dev/kfd`, here a
    stand-in file) is, torch decides: on this GPU-less host its own refusal, in the same words, after its import."""
    kfd = tmp_path / "kfd"
    kfd.touch()
    code = ("import sys\nimport advisor.errors\nfrom advisor.cli import run\n"
            f"advisor.errors.ROCM_DEVICE = {str(kfd)!r}\nsys.argv = ['advisor', *sys.argv[1:]]\n"
            "try:\n    run()\nexcept SystemExit as e:\n    print('torch', 'torch' in sys.modules, 'exit', e.code)\n")
    p = subprocess.run([sys.executable, "-c", code, "inspect", "bundled", "--device", "cuda"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: device 'cuda' requested but no CUDA GPU is available here; use --device cpu"], p.stderr
    assert "torch True exit 2" in p.stdout, p.stdout + p.stderr
