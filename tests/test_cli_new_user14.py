"""What a new user met in pass 14: each test failed before its fix."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args", [["tune", "--storage", "s.db"], ["eval", "bundled"], ["trace", "bundled", "-o", "t.npz"],
                                  ["inspect", "bundled"]], ids=lambda a: a[0])
def test_a_mistyped_device_is_refused_before_torch_imports(tmp_path, args):
    """`--device gpu` (for cuda) was refused in one line, but only once torch and transformers had imported: 7-11 s
    on the 2-core host for a typo that `--sampler tpee` or `--mode replya` answer in under a second. The spelling is
    checked as the options are read, in the same words as a device torch knows and the runtime does not (mps)."""
    code = ("import sys\nfrom advisor.cli import run\nsys.argv = ['advisor', *sys.argv[1:]]\n"
            "try:\n    run()\nexcept SystemExit as e:\n"
            "    print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules), 'exit', e.code)\n")
    p = subprocess.run([sys.executable, "-c", code, *args, "--device", "gpu"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: device 'gpu' is not supported: the offload runtime runs on cpu or cuda; use cpu, cuda "
                      "or cuda:N"], p.stdout + p.stderr
    assert "HEAVY [] exit 2" in p.stdout, p.stdout + p.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no trace
