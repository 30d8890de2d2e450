"""CUDA checks of the offload runtime, for one prepared GPU run (`benchmarks.gpu_check` calls `gpu_checks`).

Measures, on a LLaDA-MoE-shaped model with random weights (hidden 2048, 64 experts of FFN 1024, top-8,
a few layers, bf16 - each expert 12.6 MB as in LLaDA-MoE-7B-A1B):
* pinned and pageable host-to-device bandwidth (CUDA events);
* the offloaded forward at 100% cache hits vs the resident forward (target <= 1.10x), same runtime code;
* with a small cache: bytes the runtime counted vs bytes the CUDA profiler saw in HtoD memcpy events, and
  the copy time from the runtime's CUDA events vs the modelled time;
* trace-replay speed on this host's CPU (synthetic 64-expert routing).
`python -m benchmarks.offload_gpu` prints the JSON. Runs well under 2 minutes on an H200.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from advisor.errors import UserError


def _h2d_gbps(nbytes: int, pinned: bool, reps: int = 5) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
    dst = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst.copy_(src, non_blocking=pinned)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src, non_blocking=pinned)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return nbytes / (statistics.median(times) * 1e-3) / 1e9


def llada_moe_shaped(layers: int = 4, device: str = "cuda", **sizes: Any):
    """LLaDA-MoE-7B-A1B layer shapes with random weights, built on the device (no CPU init of GBs); `sizes`
    override config fields (hidden_size, num_experts, expert_intermediate_size, vocab_size...)."""
    from advisor.models.llada_moe import LLaDAMoEConfig, LLaDAMoEModelLM

    vocab = sizes.pop("vocab_size", 4096)
    cfg = LLaDAMoEConfig(vocab_size=vocab, num_hidden_layers=layers, pad_token_id=0, eos_token_id=2,
                         mask_token_id=vocab - 1, **sizes)
    with torch.device(device):
        model = LLaDAMoEModelLM(cfg).to(torch.bfloat16)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02 if "experts" in name else 0.05, generator=gen)
    return model.eval()


def _time_forward(model: torch.nn.Module, ids: torch.Tensor, reps: int) -> float:
    times = []
    with torch.no_grad():
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            model(ids)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
    return statistics.median(times)


def _profiled_htod_bytes(fn) -> tuple[int, int, list[str]]:
    """Run fn under torch.profiler (CUDA activity); return (HtoD memcpy bytes, memcpy count, names seen)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)
    finally:
        os.unlink(path)
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    total, count, names = 0, 0, set()
    for ev in events:
        name = str(ev.get("name", ""))
        if ev.get("cat") == "gpu_memcpy" or name.startswith("Memcpy"):
            names.add(name)
            if "HtoD" in name:
                total += int(ev.get("args", {}).get("bytes", 0))
                count += 1
    return total, count, sorted(names)


def replay_speed_cpu(n_forwards: int = 3000, seed: int = 0) -> dict[str, float]:
    """Look-ups/s of the simulator's replay loop on this host's CPU (synthetic drifting 64-expert sets)."""
    import random

    from advisor.offload.policies import POLICIES, Ctx, build_policies
    from advisor.offload.simulate import replay, sequences_from_sets
    from advisor.offload.stats import CacheLayer

    rng = random.Random(seed)
    sets, cur = [], set(rng.sample(range(64), 24))
    for f in range(n_forwards):
        if f % 16 == 0:
            cur = set(rng.sample(range(64), 24))
        s = set(cur)
        for _ in range(4):
            s.discard(rng.randrange(64))
            s.add(rng.randrange(64))
        sets.append(sorted(s))
    seqs = sequences_from_sets([sets] * 4, [Ctx(f, f % 8, f // 8) for f in range(n_forwards)])
    n = sum(len(ids) for seq in seqs for ids, *_ in seq)
    out = {}
    for p in POLICIES:
        pols = build_policies(p, [16] * 4, hot={i: list(range(64)) for i in range(4)})
        layers = [CacheLayer(pol, [1] * 64) for pol in pols]
        t0 = time.perf_counter()
        replay(seqs, layers, "none")
        out[p] = n / (time.perf_counter() - t0)
    return out


def gpu_checks(layers: int = 4, tokens: int = 256) -> dict[str, Any]:
    """All offload CUDA measurements; JSON-able. Raises UserError without CUDA."""
    if not torch.cuda.is_available():
        raise UserError("offload GPU checks need CUDA; none is available here")
    from advisor.models.view import attach_runtime, detach_runtime, moe_layers
    from advisor.offload.runtime import OffloadRuntime

    t_start = time.perf_counter()
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    out["h2d_gbps_pinned"] = _h2d_gbps(256 << 20, pinned=True)
    out["h2d_gbps_pageable"] = _h2d_gbps(256 << 20, pinned=False)
    out["h2d_source"] = "measured:cuda-events (256 MiB copy, median of 5)"

    model = llada_moe_shaped(layers)
    moe = moe_layers(model)
    ids = torch.randint(3, 4000, (1, tokens), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    attach_runtime(model, None, layers=moe)  # resident experts through the same seam
    with torch.no_grad():
        ref = model(ids).logits
    resident_ms = _time_forward(model, ids, reps=10)
    detach_runtime(model)

    t0 = time.perf_counter()
    rt = OffloadRuntime(model, "bf16", slots_per_layer=64, policy="lru", device="cuda")
    out["store_build_s"] = time.perf_counter() - t0
    out["store_pinned"] = rt.store.pinned
    with torch.no_grad():
        first = model(ids).logits  # fills every slot (all misses)
    out["offloaded_equals_resident"] = bool(torch.equal(first, ref))
    rt.reset_stats()
    offl_ms = _time_forward(model, ids, reps=10)
    st = rt.stats()
    out["all_hits"] = {"hits": st.hits, "misses": st.misses, "hit_rate": st.hit_rate}
    out["resident_forward_ms"] = resident_ms
    out["offloaded_forward_ms_100pct_hits"] = offl_ms
    out["overhead_ratio"] = offl_ms / resident_ms
    out["overhead_target_met"] = offl_ms / resident_ms <= 1.10
    out["forward_source"] = f"measured:cuda-events (median of 10, {layers} MoE layers, {tokens} tokens)"
    rt.close()

    # small cache: every forward misses; compare counted bytes with what the profiler saw
    rt = OffloadRuntime(model, "bf16", slots_per_layer=16, policy="lru", device="cuda")
    with torch.no_grad():
        model(ids)
        torch.cuda.synchronize()
        rt.reset_stats()

        def two_forwards():
            for _ in range(2):
                model(ids)

        prof_bytes, prof_count, names = _profiled_htod_bytes(two_forwards)
    st = rt.stats()
    out["profiler"] = {
        "counted_bytes_h2d": st.bytes_h2d,
        "counted_copies": st.copies,
        "profiler_htod_bytes": prof_bytes,
        "profiler_htod_copies": prof_count,
        "equal": st.bytes_h2d == prof_bytes,
        "memcpy_event_names": names,
        "hit_rate": st.hit_rate,
        "transfer_ms": st.transfer_ms,
        "transfer_source": st.transfer_source,
        "effective_gbps": st.bytes_h2d / (st.transfer_ms * 1e-3) / 1e9 if st.transfer_ms else None,
        "modelled_ms_at_measured_pinned_bw": st.bytes_h2d / (out["h2d_gbps_pinned"] * 1e9) * 1e3,
    }
    rt.close()
    torch.cuda.empty_cache()
    speeds = replay_speed_cpu()
    out["replay_lookups_per_s"] = speeds
    out["replay_source"] = "measured:wall-clock on this host's CPU (single thread)"
    out["replay_target_met"] = min(speeds.values()) >= 2e6
    out["seconds"] = time.perf_counter() - t_start
    return out


if __name__ == "__main__":
    res = gpu_checks()
    print(json.dumps(res, indent=2, default=str))
    print(f"RESULT overhead_ratio={res['overhead_ratio']:.3f} bytes_equal_profiler={int(res['profiler']['equal'])} "
          f"offloaded_equals_resident={int(res['offloaded_equals_resident'])}")
