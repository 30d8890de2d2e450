"""A new user tuning LLaDA-MoE for a 12 GB GPU with several workers on PostgreSQL (README's sections in order)."""

from __future__ import annotations

from tests.cli_helpers import advisor, advisor_in_process, flat


def test_tune_header_names_the_gpu_beside_a_given_budget(tmp_path):
    """`--gpu` prices the link and the device side of time per token; with `--budget` also given (README's
    `tune ... --gpu H200 --budget 12GiB`) the header said only 'budget: ... (--budget ...)', so which profile the
    run was priced on showed first in the legend under the front, after the run. The header names it now."""
    r = advisor_in_process("tune", "tiny:qwen3_moe", "--gpu", "RTX 4070", "--budget", "1MiB", "--trials", "1",
                           "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "budget: 1.00 MiB (--budget 1MiB) | gpu RTX 4070 12GB (catalogue (nominal)) | objectives:" in \
        flat(r.stdout), r.stdout


def test_llama_cpp_script_names_where_the_converter_is(tmp_path):
    """The llama.cpp script of a checkpoint said its bf16 GGUF came 'from: python convert_hf_to_gguf.py DIR ...',
    a script no directory of the user's holds: it is llama.cpp's (beside its gguf-py), and README sends the user
    to 'the LLAMA_CPP_DIR its comment names', which only the bundled model's line named. It names it now."""
    from tests.recommend_helpers import make_db, model_meta, point

    url = make_db(tmp_path / "a.db", [point("llada", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1,
                                            meta=model_meta("llada_moe"), model="/models/LLaDA-MoE-7B")])
    r = advisor_in_process("export", "llada", "1", "--storage", url, "--to", "llama.cpp", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith('SRC_GGUF="'))
    assert "# from: python LLAMA_CPP_DIR/convert_hf_to_gguf.py /models/LLaDA-MoE-7B --outtype bf16" in line, line


def test_recommend_for_no_stored_model_lists_a_few_of_many_studies(tmp_path):
    """`recommend --model TYPO` on a shared PostgreSQL database of hundreds of studies printed every study's name in
    its one error line (6.8 kB for 395 there); it names the ten most like what was asked and how many more, as the
    other refusals that list studies do."""
    from tests.recommend_helpers import make_db, point

    url = make_db(tmp_path / "a.db", [point(f"run-{i:02d}", 0, "int8", 4, acc=0.9, h2d=1, peak_gib=1)
                                      for i in range(14)])
    r = advisor("recommend", "--storage", url, "--model", "llada-moe-tinyy", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "stored models: tiny-llada; tasks: toy; studies: run-" in r.stderr, r.stderr
    assert r.stderr.count("run-") == 10 and r.stderr.rstrip().endswith(" ... and 4 more"), r.stderr
