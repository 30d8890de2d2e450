"""New user 18's findings, through the CLI as a user runs it."""

from __future__ import annotations

from tests.cli_helpers import advisor_in_process, flat


def test_wrote_lines_print_the_path_as_given_and_end_in_no_space(tmp_path):
    """`advisor trace bundled -o t.npz` ended its 80-column `wrote` line in a space ('16089 expert '), and the
    `wrote` lines of trace, quant-report and simulate --json read a path as rich markup: `--json 'q[red].json'`
    wrote q[red].json but said `wrote 768 rows to q.json`. They are plain text now, wrapped without a trailing
    space."""
    r = advisor_in_process("trace", "tiny:llada_moe", "--limit", "1", "--threads", "1", "-o", "t[red].npz",
                           cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "t[red].npz").is_file()
    assert flat(r.stdout).startswith("wrote t[red].npz: "), r.stdout
    assert len(r.stdout.splitlines()) > 1, r.stdout  # wrapped at 80 columns: where the space was left
    assert not [ln for ln in r.stdout.splitlines() if ln.endswith(" ")], r.stdout
    r = advisor_in_process("simulate", "t[red].npz", "--policy", "lru", "--json", "s[bold].json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "s[bold].json").is_file()
    assert "wrote s[bold].json" in flat(r.stderr), r.stderr
    r = advisor_in_process("quant-report", "tiny:qwen3_moe", "--formats", "int8", "--threads", "1", "--json",
                           "q[red].json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "q[red].json").is_file()
    assert "rows to q[red].json" in flat(r.stdout), r.stdout
    r = advisor_in_process("eval", "bundled", "--limit", "1", "--threads", "1", "--json", "e[red].json",
                           cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "e[red].json").is_file()
    assert "wrote e[red].json" in flat(r.stderr), r.stderr
