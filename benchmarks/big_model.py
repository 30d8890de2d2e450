"""A model bigger than the device: offloaded loading streams experts from the checkpoint into the host store.

    python benchmarks/big_model.py            # >= 3 GB of bf16 experts per layout (16 MoE layers x 64 experts)
    python benchmarks/big_model.py --quick    # about 300 MB per layout
    python benchmarks/big_model.py --dir /work/cache/big_model

Writes two random-weight checkpoints (sharded safetensors + index, bf16), never in the repository:
  * LLaDA-MoE-shaped, official key layout (`model.layers.{i}.mlp.experts.{j}.{gate,up,down}_proj.weight`);
  * Qwen3-MoE-shaped, fused layout (`model.layers.{i}.mlp.experts.gate_up_proj` [E, 2I, H], `down_proj`).
Then, per layout and plan (int8, int4), in a fresh subprocess (so peak RSS is that run's alone):
  * peak RSS (getrusage, measured) minus the RSS after imports, over the packed store + resident bytes
    (counted) - the host memory offloaded loading costs beyond what it must hold (target <= 1.3);
  * load-and-pack time (measured) next to the time to read the shard files once (measured, same page-cache
    state: the files were just written or read);
  * device-side parameter bytes (non-meta parameters, counted) == the counted resident bytes;
  * one generation through the offload runtime (8 slots per layer, LRU; CPU, time modelled).
Last line: RESULT peak_rss_ratio=<worst> device_bytes_match=<0|1>.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
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
    config.save_pretrained(str(path))
    (path / "DONE").write_text("ok\n")


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default="/work/cache/big_model" if Path("/work/cache").is_dir() else "/tmp/big_model")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "PLAN"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(Path(a.child[0]), a.child[1])))
        return 0
    size = "quick" if a.quick else "full"
    s = SHAPES[size]
    gib = 2**30
    print(f"# big_model ({size}): {s['layers']} MoE layers x {s['experts']} experts, hidden {s['hidden']}, expert FFN "
          f"{s['ffn']}, bf16; device cpu ({os.cpu_count()} cores, shared); checkpoints under {a.dir}")
    worst, match = 0.0, 1
    for layout, label in (("list", "LLaDA-MoE-shaped, list layout"), ("fused", "Qwen3-MoE-shaped, fused layout")):
        path = Path(a.dir) / f"{layout}-{size}"
        t0 = time.perf_counter()
        write_checkpoint(path, layout, s)
        files = sorted(path.glob("*.safetensors"))
        print(f"\n## {label}: {len(files)} shards, {sum(f.stat().st_size for f in files) / gib:.2f} GiB "
              f"(written/checked in {time.perf_counter() - t0:.0f} s)")
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
    print(f"\nRESULT peak_rss_ratio={worst:.3f} device_bytes_match={match}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
