"""An offloaded float32 model on the CPU evaluated under a precision plan (tune's accuracy and fidelity, `advisor
eval --offload --precision`): its experts are dequantized once per plan where every routed expert in float32 fits
the host's memory, not at every call, with the same outputs (benchmarks/trial_overhead.py: time and memory)."""

from __future__ import annotations

import torch
from eval_helpers import tiny_toy_model_dir


def test_an_offloaded_float32_model_is_evaluated_from_experts_dequantized_once(tmp_path, monkeypatch):
    from advisor.eval.fidelity import fidelity, reference_for, task_inputs
    from advisor.eval.run import evaluate
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model
    from advisor.offload.planned import plan_runtime
    from advisor.quant import apply
    from advisor.quant.formats import get_format

    loaded = load_model(str(tiny_toy_model_dir(tmp_path)), offload=True)
    assert loaded.offloaded and loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    task = get_task("toy")
    fmt = type(get_format("int4"))
    calls: list[int] = []
    original = fmt.dequantize
    monkeypatch.setattr(fmt, "dequantize", lambda self, qt, dtype: calls.append(1) or original(self, qt, dtype))
    experts = sum(m.num_experts for m in loaded.moe)
    ref = reference_for(loaded, task_inputs(loaded, task, n=1, seed=0))

    def run() -> tuple:
        calls.clear()
        runtime = plan_runtime(loaded, "int4")
        res = evaluate(loaded, task, limit=2, seed=0, runtime=runtime)
        fid = fidelity(loaded, ref, runtime)
        return res.per_example, res.accuracy, fid, len(calls)

    once, acc_once, fid_once, n_once = run()
    assert 0 < n_once <= 2 * 3 * experts  # each projection of each expert at most once per evaluation
    # where the float32 copy would not fit (here: no share of the host's memory), every call dequantizes again
    monkeypatch.setattr(apply, "DEQUANTIZED_SHARE", 0.0)
    per_call, acc_per_call, fid_per_call, n_per_call = run()
    assert n_per_call > 4 * n_once
    assert once == per_call and acc_once == acc_per_call and fid_once == fid_per_call  # bitwise the same outputs
