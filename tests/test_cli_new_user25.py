"""A new user tuning LLaDA-MoE for a 12 GB GPU with several workers on PostgreSQL (README's sections in order)."""

from __future__ import annotations

from tests.cli_helpers import advisor_in_process, flat


def test_tune_header_names_the_gpu_beside_a_given_budget(tmp_path):
    """`--gpu` prices the link and the device side of time per token; with `--budget` also given (README's
    `tune ... --gpu H200 --budget 12GiB`) the header said only 'budget: ... (--budget ...)', so which profile the
    run was priced on showed first in the legend under the front, after the run. The header names it now."""
    r = advisor_in_process("tune", "tiny:qwen3_moe", "--gpu", "RTX 4070", "--budget", "1MiB", "--trials", "1",
                           "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "budget: 1.00 MiB (--budget 1MiB) | gpu RTX 4070 12GB (catalogue (nominal)) | objectives:" in \
        flat(r.stdout), r.stdout
