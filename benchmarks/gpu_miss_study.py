"""CPU-executed expert misses beside a GPU, and one live study with `cache.miss` in the space (issue #13).

    python -m benchmarks.gpu_miss_study [--out DIR] [--study-seconds 90]   # on a CUDA machine
    python -m benchmarks.gpu_miss_study --device cpu --small                # the same flow, dry run on a CPU

1. overlap (in process): a LLaDA-MoE-shaped model (hidden 2048, 64 experts of FFN 1024, top-8, bf16, random
   weights, a few MoE layers) on the device, 16 of 64 slots per layer (LRU). For bf16 and int4 experts: every
   miss copied, vs computed on the CPU beside the GPU (the runtime's overlap), vs on the CPU one after the other.
   Logits against the resident model, forward time (wall clock, synchronized, median), the runtime's counters,
   and its overlap report summed over the timed forwards: CPU expert time (wall clock), device expert time (CUDA
   events), the layers' wall clock, and the share of CPU time hidden = (cpu + device - wall) / cpu.
2. study (CLI subprocesses, the path a user takes): a LLaDA-MoE-shaped checkpoint in the official key layout
   (same shapes), `advisor inspect`, `advisor profile --model` (link + this host's CPU experts, every core),
   `advisor tune --mode live` on the device under a budget of the resident weights + 25% of the bf16 experts,
   in the `dllm` space with time per token, fidelity (random weights: no task accuracy) and peak GPU bytes as
   objectives, then `advisor pareto` and `advisor recommend`; every trial's values and sources are dumped.
Writes DIR/gpu_miss_study.json after each step, DIR/gpu_miss_study.log DIR/study.db and DIR/profile.json;
last line RESULT.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(layers=4, experts=64, hidden=2048, ffn=1024, vocab=8192)  # LLaDA-MoE-7B-A1B's expert shape
SMALL = dict(layers=4, experts=16, hidden=256, ffn=128, vocab=2048)
SLOT_SHARE = 0.25


def _median_ms(fn, dev: Any, reps: int) -> float:
    from advisor.tune.model_backend import sync_device

    times = []
    for _ in range(reps):
        sync_device(dev)
        t0 = time.perf_counter()
        fn()
        sync_device(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def overlap(s: dict, device: str, tokens: int, reps: int) -> dict[str, Any]:
    """Misses copied vs computed on the CPU (overlapped and serial), for bf16 and int4 experts."""
    import torch

    from advisor.models.view import attach_runtime, detach_runtime, moe_layers
    from advisor.offload.runtime import OffloadRuntime
    from advisor.offload.store import ExpertStore
    from benchmarks.offload_gpu import llada_moe_shaped

    dev = torch.device(device)
    model = llada_moe_shaped(s["layers"], dev, vocab_size=s["vocab"], hidden_size=s["hidden"],
                             expert_intermediate_size=s["ffn"], num_experts=s["experts"], num_experts_per_tok=8)
    moe = moe_layers(model)
    ids = torch.randint(3, s["vocab"] - 8, (1, tokens), generator=torch.Generator().manual_seed(0)).to(dev)
    slots = max(1, int(s["experts"] * SLOT_SHARE))
    out: dict[str, Any] = {"shape": s, "tokens": tokens, "slots_per_layer": slots, "policy": "lru",
                           "cpu_threads": torch.get_num_threads(), "runs": []}
    attach_runtime(model, None, layers=moe)
    with torch.no_grad():
        ref = model(ids).logits.float()
        out["resident_forward_ms"] = _median_ms(lambda: model(ids), dev, reps)
    detach_runtime(model)
    base: dict[str, Any] = {}
    for plan in ("bf16", "int4"):
        store = ExpertStore(moe, plan, pin=dev.type == "cuda")  # packed once, shared by the three runs
        for miss, ovl in (("copy", None), ("cpu", True), ("cpu", False)):
            rt = OffloadRuntime(model, store, slots_per_layer=slots, policy="lru", device=dev, miss=miss, overlap=ovl)
            try:
                with torch.no_grad():
                    logits = model(ids).logits.float()  # cold cache: the first forward misses the most
                    rt.reset_stats()
                    ms = _median_ms(lambda: model(ids), dev, reps)
                st = rt.stats()
                rep = rt.overlap_report()
            finally:
                rt.close()
            ref_plan = base.setdefault(plan, logits) if miss == "copy" else base[plan]
            run = {
                "plan": plan, "miss": miss, "overlap": rt.overlap, "forward_ms": ms,
                "forward_source": f"measured:wall-clock(synchronized, median of {reps})",
                "max_abs_dlogit_vs_resident_bf16": float((logits - ref).abs().max()),
                "top1_agree_vs_resident_bf16": float((logits.argmax(-1) == ref.argmax(-1)).float().mean()),
                "max_abs_dlogit_vs_copy_same_plan": float((logits - ref_plan).abs().max()),
                "top1_agree_vs_copy_same_plan": float((logits.argmax(-1) == ref_plan.argmax(-1)).float().mean()),
                "counters": st.counters(), "transfer_ms": st.transfer_ms, "transfer_source": st.transfer_source,
                "overlap_ms": {k: rep[k] for k in ("cpu", "device", "wall")}, "overlap_ms_forwards": reps,
                "hidden_share": rep["hidden_share"], "overlap_source": rep["source"],
                "cpu_kernel": sorted({f.kernel_name for f in rt.cpu._fns.values()}),
            }
            out["runs"].append(run)
            print(f"  overlap {plan} miss={miss} overlap={rt.overlap}: {ms:.1f} ms/forward, hidden share "
                  f"{rep['hidden_share']:.2f}, top-1 vs resident {run['top1_agree_vs_resident_bf16']:.3f}", flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _cli(args: list[str], log, timeout: float, env: dict, signal_int: bool = False) -> dict[str, Any]:
    """One `advisor` command in a subprocess; output appended to the log; (rc, seconds, tail)."""
    cmd = [sys.executable, "-m", "advisor", *args]
    log.write(f"\n$ advisor {' '.join(args)}\n")
    log.flush()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(2 if signal_int else 9)  # SIGINT: the study stores what finished and stops
        text, _ = proc.communicate()
    log.write(text)
    log.flush()
    return {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1), "tail": text[-1500:]}


def study(s: dict, device: str, out: Path, work: Path, seconds: float, trials: int, log) -> dict[str, Any]:
    """The CLI flow on a checkpoint written here; returns each step's result and every trial."""
    from benchmarks.big_model import write_checkpoint

    res: dict[str, Any] = {}
    # named by its shape: `write_checkpoint` keeps a finished one, and a --small dry run in the same --work
    # (default /tmp/gpu_miss_study) left its 16-expert checkpoint where the GPU run then studied it
    ckpt = work / ("llada-moe-shaped-" + "-".join(f"{k}{v}" for k, v in s.items()))
    t0 = time.perf_counter()
    write_checkpoint(ckpt, "list", s)
    from advisor.models.checkpoint import Checkpoint

    tensors = Checkpoint(ckpt).tensors  # counted from the safetensors headers
    total = sum(t.nbytes for t in tensors.values())
    expert_bytes = sum(t.nbytes for k, t in tensors.items() if ".mlp.experts." in k)
    budget = (total - expert_bytes) + int(SLOT_SHARE * expert_bytes)
    res["checkpoint"] = {"seconds": round(time.perf_counter() - t0, 1), "bytes": total, "expert_bytes": expert_bytes,
                         "budget_bytes": budget, "budget_rule": f"resident weights + {SLOT_SHARE:.0%} of bf16 experts"}
    space = work / "dllm_fidelity.toml"
    text = (ROOT / "advisor/tune/spaces/dllm.toml").read_text()
    space.write_text(text.replace('name = "dllm"', 'name = "dllm-fidelity"')
                     .replace('accuracy = "maximize"', 'fidelity_top1 = "maximize"'))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
           "ADVISOR_PROFILES_DIR": str(work / "profiles")}  # the measured profile stays out of the repository
    threads = str(os.cpu_count() or 1)
    url = f"sqlite:///{(out / 'study.db').resolve()}"
    b = f"{budget}B"
    name = "lent-gpu" if device.startswith("cuda") else "cpu-dry-run"
    res["inspect"] = _cli(["inspect", str(ckpt), "--budget", b], log, 120, env)
    prof = ["profile", "--model", str(ckpt), "--threads", threads, "--name", name]
    res["profile"] = _cli(prof + ([] if device.startswith("cuda") else ["--cpu"]), log, 240, env)
    stored = work / "profiles" / f"{name}.json"
    if stored.is_file():
        (out / "profile.json").write_text(stored.read_text())
    tune = ["tune", str(ckpt), "--device", device, "--mode", "live", "--budget", b, "--space", str(space),
            "--trials", str(trials), "--timeout", str(seconds), "--study", "miss-live", "--storage", url,
            "--gpu", name, "--threads", threads]
    res["tune"] = _cli(tune, log, seconds + 150, env, signal_int=True)
    res["pareto"] = _cli(["pareto", "miss-live", "--storage", url, "--no-plots", "--wide"], log, 60, env)
    res["recommend"] = _cli(["recommend", "--study", "miss-live", "--storage", url, "--budget", b], log, 60, env)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials_out = []
    for t in optuna.load_study(study_name="miss-live", storage=url).trials:
        ua = t.user_attrs
        trials_out.append({"number": t.number, "state": t.state.name, "params": t.params,
                           **{k: ua.get(k) for k in ("values", "sources", "feasible", "seconds", "stage",
                                                      "infeasible_reason")}})
    res["trials"] = trials_out
    return res


def summary(res: dict[str, Any]) -> str:
    """The RESULT line: the overlap runs' hidden share and speed, the study's miss policies and front."""
    parts = []
    runs = res.get("overlap", {}).get("runs", [])
    for plan in ("bf16", "int4"):
        by = {(r["miss"], r["overlap"] if r["miss"] == "cpu" else None): r for r in runs if r["plan"] == plan}
        if ("cpu", True) in by and ("copy", None) in by:
            parts.append(f"{plan}_cpu_vs_copy={by[('copy', None)]['forward_ms'] / by[('cpu', True)]['forward_ms']:.2f}")
            parts.append(f"{plan}_hidden_share={by[('cpu', True)]['hidden_share']:.2f}")
            if ("cpu", False) in by:
                parts.append(f"{plan}_overlap_gain={by[('cpu', False)]['forward_ms'] / by[('cpu', True)]['forward_ms']:.2f}")
    trials = [t for t in res.get("study", {}).get("trials", []) if t["state"] == "COMPLETE"]
    if trials:
        misses = sorted({t["params"].get("miss", "copy") for t in trials})
        parts.append(f"study_trials={len(trials)} study_misses={'/'.join(misses)}")
        shares = [t["values"]["cpu_hidden_share"] for t in trials
                  if isinstance(t.get("values"), dict) and "cpu_hidden_share" in t["values"]]
        if shares:
            parts.append(f"study_hidden_share_median={statistics.median(shares):.2f}")
    return "RESULT " + " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--work", default="/tmp/gpu_miss_study")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="small shapes (a CPU dry run of the whole flow)")
    ap.add_argument("--tokens", type=int, default=256, help="tokens per forward in the overlap section")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--study-seconds", type=float, default=90, help="tune stops starting trials after this")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--only", default="overlap,study")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    s = SMALL if a.small else SHAPE
    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "device": a.device,
        "device_name": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
    }

    def save() -> None:
        (out / "gpu_miss_study.json").write_text(json.dumps(res, indent=1, default=str))

    with open(out / "gpu_miss_study.log", "a") as log:
        for section in a.only.split(","):
            t0 = time.perf_counter()
            print(f"[{section}] ...", flush=True)
            try:
                if section == "overlap":
                    res[section] = overlap(s, a.device, a.tokens, a.reps)
                elif section == "study":
                    res[section] = study(s, a.device, out, work, a.study_seconds, a.trials, log)
            except Exception as e:  # recorded, and the next section runs
                import traceback

                res[section] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
            print(f"[{section}] {res[section].get('error', 'ok')} in {time.perf_counter() - t0:.0f} s", flush=True)
            save()
    line = summary(res)
    res["result"] = line
    save()
    print(line)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
