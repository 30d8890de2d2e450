"""A model bigger than the device: offloaded loading streams experts from the checkpoint into the host store.

    python benchmarks/big_model.py            # >= 3 GB of bf16 experts per layout (16 MoE layers x 64 experts)
    python benchmarks/big_model.py --quick    # about 300 MB per layout
    python benchmarks/big_model.py --dir /data/big_model   # default /tmp/big_model

Writes two random-weight checkpoints (sharded safetensors + index, bf16), never in the repository:
  * LLaDA-MoE-shaped, official key layout (`model.layers.{i}.mlp.experts.{j}.{gate,up,down}_proj.weight`);
  * Qwen3-MoE-shaped, fused layout (`model.layers.{i}.mlp.experts.gate_up_proj` [E, 2I, H], `down_proj`).
Then, per layout and plan (int8, int4), in a fresh subprocess (so peak RSS is that run's alone):
  * peak RSS (VmHWM, measured) minus the RSS after imports, over the packed store + resident bytes
    (counted) - the host memory offloaded loading costs beyond what it must hold (target <= 1.3);
  * load-and-pack time (measured) next to the time to read the shard files once (measured, same page-cache
    state: the files were just written or read);
  * device-side parameter bytes (non-meta parameters, counted) == the counted resident bytes;
  * one generation through the offload runtime (8 slots per layer, LRU; CPU, time modelled).
Then `advisor trace` on the LLaDA-MoE-shaped checkpoint, `--resident` and `--offload` side by side (fresh CLI
processes, alternating, `--trace-runs` each): wall clock and CPU time (user+sys of the child), and whether the
two traces are equal (they must be: offloading changes where experts are read from, not the routing); then the
decoding alone, both loads in one process, trace by trace alternately, with what the offloaded model's
checkpoint reads cost (the gap without imports and loading, and its breakdown).
`--trace-only` runs just that part; `--trace-busy N` runs N spinning processes beside the traces (a host whose
cores other jobs share, as the 2-core machine this was measured on).
Last line: RESULT peak_rss_ratio=<worst> device_bytes_match=<0|1> trace_offload_cpu_ratio=<offload/resident>
trace_offload_wall_ratio=<...> decode_offload_ratio=<...> traces_equal=<0|1> (peak_rss_ratio and device_bytes_match absent with --trace-only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPES = {  # per size: MoE layers, experts, hidden, expert FFN, vocab
    "full": dict(layers=16, experts=64, hidden=1024, ffn=512, vocab=32768),
    "quick": dict(layers=6, experts=32, hidden=512, ffn=512, vocab=8192),
}
SHARD_BYTES = 512 * 2**20


def _config(layout: str, s: dict):
    if layout == "list":
        from advisor.models.llada_moe import LLaDAMoEConfig

        return LLaDAMoEConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                              num_attention_heads=16, num_key_value_heads=16, dense_intermediate_size=4 * s["hidden"],
                              expert_intermediate_size=s["ffn"], num_experts=s["experts"], num_experts_per_tok=8,
                              mask_token_id=s["vocab"] - 1, eos_token_id=s["vocab"] - 2, pad_token_id=s["vocab"] - 2,
                              dtype="bfloat16")
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                          num_attention_heads=16, num_key_value_heads=4, head_dim=64, intermediate_size=4 * s["hidden"],
                          moe_intermediate_size=s["ffn"], num_experts=s["experts"], num_experts_per_tok=8,
                          norm_topk_prob=True, tie_word_embeddings=False, dtype="bfloat16")


def _model_class(layout: str):
    if layout == "list":
        from advisor.models.llada_moe import LLaDAMoEModelLM

        return LLaDAMoEModelLM
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def write_checkpoint(path: Path, layout: str, s: dict, seed: int = 0) -> None:
    """Random bf16 weights in shards of ~512 MiB, written tensor group by tensor group (never the whole model)."""
    import torch
    from safetensors.torch import save_file

    from advisor.models.offloaded import params_on_meta

    if (path / "DONE").is_file():
        return
    path.mkdir(parents=True, exist_ok=True)
    config = _config(layout, s)
    cls = _model_class(layout)
    with params_on_meta():
        model = cls.from_config(config) if cls.__name__.startswith("Auto") else cls(config)
    gen = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, p in model.named_parameters():
        if ".mlp.experts." in name and layout == "fused":
            continue  # written below in the fused layout
        shapes[name] = tuple(p.shape)
    if layout == "fused":
        for i in range(s["layers"]):
            shapes[f"model.layers.{i}.mlp.experts.gate_up_proj"] = (s["experts"], 2 * s["ffn"], s["hidden"])
            shapes[f"model.layers.{i}.mlp.experts.down_proj"] = (s["experts"], s["hidden"], s["ffn"])
    shard: dict[str, torch.Tensor] = {}
    size, n_shard, weight_map = 0, 0, {}

    def flush() -> None:
        nonlocal shard, size, n_shard
        if shard:
            n_shard += 1
            name = f"model-{n_shard:05d}.safetensors"
            save_file(shard, str(path / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
            shard, size = {}, 0

    for name, shape in shapes.items():
        norm = len(shape) == 1 and "norm" in name
        t = torch.empty(shape, dtype=torch.bfloat16).normal_(1.0 if norm else 0.0, 0.1 if norm else 0.08,
                                                             generator=gen)
        shard[name] = t
        size += t.numel() * 2
        if size >= SHARD_BYTES:
            flush()
    flush()
    total = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                    "weight_map": weight_map}))
    config.architectures = [type(model).__name__]  # as published; llama.cpp's converter picks its model by it
    config.save_pretrained(str(path))
    (path / "DONE").write_text("ok\n")


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def _rss_now() -> int:
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM, measured). Not getrusage's ru_maxrss: Linux carries that over
    from the parent into a forked child, so a child of the run that just wrote the checkpoints reported the
    writer's peak as its own."""
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(path: Path, plan: str) -> dict:
    """One layout x plan in this (fresh) process: load offloaded, pack, check device bytes, generate."""
    import torch

    from advisor.models.generate import generate
    from advisor.models.load import load_model
    from advisor.offload.runtime import OffloadRuntime
    from advisor.offload.store import ExpertStore
    from advisor.tune.model_backend import model_shape

    torch.set_num_threads(1)
    import transformers  # noqa: F401 - the model stack's imports belong to the baseline, not to loading

    from advisor.models.offloaded import params_on_meta

    layout = path.name.split("-")[0]
    cls, cfg = _model_class(layout), _config(layout, SHAPES["quick"])
    with params_on_meta():  # imports the family's modeling code (and torch's meta kernels) before the baseline
        model = cls.from_config(cfg) if cls.__name__.startswith("Auto") else cls(cfg)
    del model
    base = _rss_now()
    t0 = time.perf_counter()
    loaded = load_model(str(path), device="cpu", offload=True)
    store = ExpertStore(loaded.moe, plan)
    pack_s = time.perf_counter() - t0
    peak = peak_rss()
    resident = model_shape(loaded).resident_bytes
    device = loaded.device_param_bytes()
    meta = sum(1 for p in loaded.model.parameters() if p.is_meta)
    rt = OffloadRuntime(loaded, store, slots_per_layer=8, policy="lru", device="cpu")
    ids = torch.randint(3, 1000, (1, 8), generator=torch.Generator().manual_seed(0))
    t1 = time.perf_counter()
    kw = {"steps": 4, "block_length": 4} if loaded.is_diffusion else {}
    out = generate(loaded, ids, max_new_tokens=4, on_forward=getattr(rt, "on_forward", None), **kw)
    gen_s = time.perf_counter() - t1
    st = rt.stats()
    rt.close()
    return {"plan": plan, "store_bytes": store.nbytes, "resident_bytes": resident, "device_param_bytes": device,
            "meta_params": meta, "rss_after_imports": base, "peak_rss": peak, "load_pack_s": pack_s,
            "generated": int(out.numel()), "gen_s": gen_s, "h2d_bytes": st.bytes_h2d, "hit_rate": st.hit_rate,
            "expert_source_bytes": sum(m.num_experts * m.expert_nbytes for m in loaded.moe)}


def read_once(path: Path) -> float:
    t0 = time.perf_counter()
    buf = bytearray(16 * 2**20)
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    return time.perf_counter() - t0


def _traces_equal(a: Path, b: Path) -> bool:
    """Same routing in both trace files (every array; meta may differ only in how the model was loaded)."""
    import numpy as np

    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        arrays = [k for k in x.files if x[k].dtype.kind != "U"]
        return set(x.files) == set(y.files) and all(np.array_equal(x[k], y[k]) for k in arrays)


def decode_child(path: Path, limit: int, reps: int) -> dict:
    """Decoding only, both loads in this one process, alternating trace by trace (so the host's load hits
    both alike): seconds per trace of each, and what the offloaded model's checkpoint reads cost (counted
    bytes, measured seconds; absent before the reads were counted). Offloaded loading fixes glibc's mmap
    threshold for the whole process (`release_large_frees`), so the resident model runs under it here too."""
    import torch

    from advisor.commands.offload import _prompts
    from advisor.models.load import load_model
    from advisor.offload.trace import record_trace

    torch.set_num_threads(max(1, torch.get_num_threads()))  # as `advisor trace` does
    models = {m: load_model(str(path), device="cpu", offload=m == "offload") for m in ("resident", "offload")}
    prompts, task_new, _ = _prompts(models["resident"], "toy", None, limit, 0)
    ck = getattr(models["offload"].model, "_advisor_checkpoint", None)  # what `LoadedModel.checkpoint` gives
    out: dict = {"resident": [], "offload": [], "read_bytes": [], "read_s": [], "forwards": 0}
    for _ in range(reps):
        for mode, loaded in models.items():
            b0, s0 = getattr(ck, "bytes_read", None), getattr(ck, "read_seconds", None)
            t0 = time.perf_counter()
            traces = [record_trace(loaded, ids, max_new_tokens=task_new or 32) for ids in prompts]
            out[mode].append(time.perf_counter() - t0)
            out["forwards"] = sum(t.n_forwards for t in traces)
            if mode == "offload" and b0 is not None:
                out["read_bytes"].append(ck.bytes_read - b0)
                out["read_s"].append(ck.read_seconds - s0)
    return out


def _busy_loops(n: int) -> list[subprocess.Popen]:
    """`n` processes that spin on a core each, at this process's niceness: a host whose cores are shared."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def trace_side_by_side(path: Path, runs: int, limit: int, busy: int = 0) -> dict[str, float]:
    """`advisor trace PATH --resident` and `--offload` as a user runs them (fresh processes, alternating so a
    change in the host's load hits both): median wall clock and CPU time (user+sys) of each; with `busy`
    spinning processes beside them (the CPU time then includes torch's threads waiting for a core)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    spinners = _busy_loops(busy)
    try:
        out = _trace_runs(path, runs, limit, env)
        cmd = [sys.executable, __file__, "--decode-child", str(path), str(limit), str(runs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        d = json.loads(proc.stdout.strip().splitlines()[-1])
        res, off = d["resident"], d["offload"]
        extra = [o - r for o, r in zip(off, res, strict=True)]
        print(f"decoding only, one process, alternating ({d['forwards']} forwards per trace): resident "
              + " ".join(f"{t:.2f}" for t in res) + " s, offloaded " + " ".join(f"{t:.2f}" for t in off)
              + " s (measured); offloaded - resident: " + " ".join(f"{t:.2f}" for t in extra) + " s")
        if d["read_s"]:
            print("  of which reading experts from the checkpoint: " + ", ".join(
                f"{b / 2**30:.2f} GiB in {t:.2f} s ({b / t / 1e9:.1f} GB/s)" for b, t in zip(
                    d["read_bytes"], d["read_s"], strict=True)) + " (bytes counted, seconds measured)")
        else:
            print("  (reads not counted in this version)")
        out["decode_ratio"] = statistics.median(off) / statistics.median(res)
        print(f"decoding offloaded / resident: {out['decode_ratio']:.2f}x (medians)")
        return out
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def _trace_runs(path: Path, runs: int, limit: int, env: dict[str, str]) -> dict[str, float]:
    times: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": []} for m in ("resident", "offload")}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            for mode in ("resident", "offload"):
                cmd = [sys.executable, "-m", "advisor", "trace", str(path), "-o", f"{tmp}/{mode}.npz",
                       "--limit", str(limit), f"--{mode}"]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
                times[mode]["wall"].append(wall)
                times[mode]["cpu"].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        equal = _traces_equal(Path(tmp) / "resident.npz", Path(tmp) / "offload.npz")
    out: dict[str, float] = {"traces_equal": float(equal)}
    for mode, t in times.items():
        out[f"{mode}_wall"] = statistics.median(t["wall"])
        out[f"{mode}_cpu"] = statistics.median(t["cpu"])
        print(f"advisor trace --{mode} --limit {limit}: wall {out[f'{mode}_wall']:.1f} s, CPU (user+sys) "
              f"{out[f'{mode}_cpu']:.1f} s (measured, median of {runs}; runs: "
              + ", ".join(f"{w:.1f}/{c:.1f}" for w, c in zip(t["wall"], t["cpu"], strict=True)) + " s wall/CPU)")
    print(f"offload / resident: wall {out['offload_wall'] / out['resident_wall']:.2f}x, CPU "
          f"{out['offload_cpu'] / out['resident_cpu']:.2f}x; traces equal: {bool(equal)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default="/tmp/big_model")
    ap.add_argument("--trace-only", action="store_true", help="only advisor trace --resident vs --offload")
    ap.add_argument("--trace-runs", type=int, default=3, help="runs of each trace mode (median reported)")
    ap.add_argument("--trace-limit", type=int, default=1, help="prompts per trace (advisor trace --limit)")
    ap.add_argument("--trace-busy", type=int, default=0, help="spinning processes beside the traces (shared cores)")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "PLAN"), help=argparse.SUPPRESS)
    ap.add_argument("--decode-child", nargs=3, metavar=("PATH", "LIMIT", "REPS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(Path(a.child[0]), a.child[1])))
        return 0
    if a.decode_child:
        print(json.dumps(decode_child(Path(a.decode_child[0]), int(a.decode_child[1]), int(a.decode_child[2]))))
        return 0
    size = "quick" if a.quick else "full"
    s = SHAPES[size]
    gib = 2**30
    print(f"# big_model ({size}): {s['layers']} MoE layers x {s['experts']} experts, hidden {s['hidden']}, expert FFN "
          f"{s['ffn']}, bf16; device cpu ({os.cpu_count()} cores, shared); checkpoints under {a.dir}")
    worst, match = 0.0, 1
    layouts = (("list", "LLaDA-MoE-shaped, list layout"), ("fused", "Qwen3-MoE-shaped, fused layout"))
    for layout, label in layouts:
        path = Path(a.dir) / f"{layout}-{size}"
        t0 = time.perf_counter()
        write_checkpoint(path, layout, s)
        files = sorted(path.glob("*.safetensors"))
        print(f"\n## {label}: {len(files)} shards, {sum(f.stat().st_size for f in files) / gib:.2f} GiB "
              f"(written/checked in {time.perf_counter() - t0:.0f} s)")
        if a.trace_only:
            break
        read_s = read_once(path)
        print(f"read the files once: {read_s:.1f} s (measured, page cache as left by the write)")
        for plan in ("int8", "int4"):
            cmd = [sys.executable, __file__, "--child", str(path), plan]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode != 0:
                print(proc.stderr[-3000:])
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            held = r["store_bytes"] + r["resident_bytes"]
            ratio = (r["peak_rss"] - r["rss_after_imports"]) / held
            raw = r["peak_rss"] / held
            ok = int(r["device_param_bytes"] == r["resident_bytes"])
            worst, match = max(worst, ratio), match & ok
            print(f"{plan}: store {r['store_bytes'] / gib:.3f} GiB + resident {r['resident_bytes'] / gib:.3f} GiB "
                  f"(counted; experts {r['expert_source_bytes'] / gib:.2f} GiB bf16 in the checkpoint)\n"
                  f"  peak RSS {r['peak_rss'] / gib:.3f} GiB (measured), {r['rss_after_imports'] / gib:.3f} GiB after "
                  f"imports -> (peak - imports) / (store + resident) = {ratio:.3f}; raw peak / held = {raw:.3f}\n"
                  f"  load-and-pack {r['load_pack_s']:.1f} s vs read-once {read_s:.1f} s (measured)\n"
                  f"  device-side parameter bytes {r['device_param_bytes']} == counted resident {r['resident_bytes']}: "
                  f"{bool(ok)}; {r['meta_params']} expert parameters meta\n"
                  f"  generation through the runtime: {r['generated']} tokens in {r['gen_s']:.1f} s (measured), "
                  f"{r['h2d_bytes'] / 2**20:.1f} MiB copied into the slot pool (counted), hit rate {r['hit_rate']:.3f}")
    print(f"\n## advisor trace, resident vs offloaded ({layouts[0][1]}, {size}; torch threads: the CLI's default; "
          f"{a.trace_busy} spinning processes beside; load average before: {os.getloadavg()[0]:.2f})")
    tr = trace_side_by_side(Path(a.dir) / f"list-{size}", a.trace_runs, a.trace_limit, a.trace_busy)
    head = "" if a.trace_only else f"peak_rss_ratio={worst:.3f} device_bytes_match={match} "
    print(f"\nRESULT {head}trace_offload_cpu_ratio={tr['offload_cpu'] / tr['resident_cpu']:.2f} "
          f"trace_offload_wall_ratio={tr['offload_wall'] / tr['resident_wall']:.2f} "
          f"decode_offload_ratio={tr['decode_ratio']:.2f} "
          f"traces_equal={int(tr['traces_equal'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
