"""What a second new-user pass met through the commands (each test failed before its fix):

- a search space with `prefetch = ["lookahead"]` tuned in `--mode replay` without a word, though replay predicts
  the next layer's experts from the recorded routing (an oracle), so those trials' bytes and times were better
  than any runtime's and took the front.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def advisor(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_replay_tune_refuses_lookahead_prefetch_in_one_line_before_the_model_loads(tmp_path):
    space = tmp_path / "la.toml"
    space.write_text('name = "la"\n[precision]\nformats = ["int8"]\n[cache]\npolicies = ["lru"]\n'
                     'prefetch = ["none", "lookahead"]\n')
    res = advisor("tune", "bundled", "--space", str(space), "--trials", "1", "--storage",
                  f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {space}:6: cache.prefetch: \"lookahead\""), res.stderr
    assert "--mode live" in lines[0] and "prev_step" in lines[0], lines[0]
    assert res.stdout == "", res.stdout  # refused before anything ran
