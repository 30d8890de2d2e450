"""Accuracy and logit fidelity of the bundled model per expert precision, and time per evaluated example.

    python benchmarks/accuracy_vs_precision.py                     # full held-out set (500), CPU
    python benchmarks/accuracy_vs_precision.py --limit 100 --json out.json

Every row is measured here: accuracy = exact match on the held-out toy test set (95% Wilson interval),
fidelity = KL / top-1 agreement of masked-position logits against the model's own full-precision weights,
expert bytes = counted from the quantized tensors (payload + scales), time = wall clock of the evaluation.
Ends with `RESULT <format>_accuracy=.. <format>_kl=.. <format>_top1=.. ... n=<examples>`.
`gpu_checks()` times the same evaluation on CUDA and on the CPU of the same machine (for the GPU run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_FORMATS = ("fp32", "bf16", "int8", "int4", "int3", "int2")


def run_benchmark(
    model: str = "bundled", formats=DEFAULT_FORMATS, *, limit: int | None = None, seed: int = 0,
    device: str = "cpu", fidelity_prompts: int = 32, progress: bool = False,
) -> list[dict]:
    """One row per format: accuracy, CI, fidelity, counted expert bytes, seconds per example."""
    from advisor.eval.fidelity import fidelity, task_reference
    from advisor.eval.run import evaluate
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model
    from advisor.quant.apply import quantize_experts

    loaded = load_model(model, device=device)
    task = get_task("toy", limit=limit, seed=seed)
    ref = task_reference(loaded, task, n=fidelity_prompts, seed=seed)
    rows = []
    for fmt in formats:
        t0 = time.perf_counter()
        runtime = quantize_experts(loaded, fmt, attach=False)
        quant_s = time.perf_counter() - t0
        fid = fidelity(loaded, ref, runtime)
        res = evaluate(loaded, task, runtime=runtime, progress=progress)
        rows.append({
            "format": fmt, "accuracy": res.accuracy, "correct": res.correct, "n": res.n,
            "ci_low": round(res.ci_low, 4), "ci_high": round(res.ci_high, 4),
            "fidelity_kl": fid["fidelity_kl"], "fidelity_top1": fid["fidelity_top1"],
            "fidelity_positions": fid["fidelity_positions"], "expert_bytes": runtime.nbytes,
            "seconds_per_example": round(res.seconds_per_example, 4), "quantize_seconds": round(quant_s, 3),
            "sources": {"accuracy": res.source, "fidelity": "measured:logits", "expert_bytes": "counted",
                        "seconds": f"{res.seconds_source} ({res.device})"},
        })
    return rows


def gpu_checks(model: str = "bundled", limit: int = 128, seed: int = 0) -> dict:
    """Evaluation time of the bundled model on CUDA vs this machine's CPU, same examples and decoding."""
    import torch

    from advisor.eval.run import evaluate
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    task = get_task("toy", limit=limit, seed=seed)
    out: dict = {"model": model, "examples": len(task.examples), "task": task.description,
                 "gpu": torch.cuda.get_device_name(0), "cpu_threads": torch.get_num_threads()}
    for device in ("cuda", "cpu"):
        loaded = load_model(model, device=device)
        evaluate(loaded, task.subset(8, seed))  # warm-up (kernels, allocator)
        res = evaluate(loaded, task)
        out[device] = {"accuracy": res.accuracy, "correct": res.correct, "seconds": round(res.seconds, 3),
                       "seconds_per_example": round(res.seconds_per_example, 5),
                       "source": f"measured:wall-clock ({device}, synchronized)"}
    out["speedup_cuda_vs_cpu"] = round(out["cpu"]["seconds"] / max(out["cuda"]["seconds"], 1e-9), 2)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--gpu", action="store_true", help="run gpu_checks() instead")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    if args.gpu:
        print(json.dumps(gpu_checks(args.model), indent=2))
        return
    rows = run_benchmark(args.model, [f.strip() for f in args.formats.split(",") if f.strip()],
                         limit=args.limit, seed=args.seed, device=args.device)
    print(f"{'format':<8}{'accuracy':>10}{'95% CI':>16}{'KL':>11}{'top-1':>8}{'expert MB':>11}{'s/example':>11}")
    for r in rows:
        ci = f"{r['ci_low']:.0%}-{r['ci_high']:.0%}"
        print(f"{r['format']:<8}{r['accuracy']:>10.1%}{ci:>16}"
              f"{r['fidelity_kl']:>11.2e}{r['fidelity_top1']:>8.1%}{r['expert_bytes'] / 1e6:>11.3f}"
              f"{r['seconds_per_example']:>11.3f}")
    print("sources: accuracy measured:exact-match (held-out toy test set); fidelity measured:logits; "
          f"bytes counted; time measured:wall-clock ({args.device})")
    print("RESULT " + " ".join(f"{r['format']}_accuracy={r['accuracy']:.4f} {r['format']}_kl={r['fidelity_kl']:.2e} "
                               f"{r['format']}_top1={r['fidelity_top1']:.4f}" for r in rows) + f" n={rows[0]['n'] if rows else 0}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
