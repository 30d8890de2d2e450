"""Miss policies (copy / cpu / hybrid): CPU expert kernels against the dequantized reference, runtime outputs
against the resident quantized model for both expert layouts, runtime counters equal to the simulator's, and
the interval-refresh (TIDE) rules on a constructed trace."""

from __future__ import annotations

import pytest
import torch

from advisor.models.experts import ExpertWeights
from advisor.models.generate import generate
from advisor.offload.cpu_experts import CpuExpert, kernel_for
from advisor.offload.policies import Ctx, IntervalRefresh
from advisor.offload.runtime import OffloadRuntime
from advisor.offload.simulate import simulate
from advisor.offload.timing import CpuProfile, DeviceCompute, DeviceRoofline, ModelCosts, device_roofline
from advisor.offload.trace import trace_meta
from advisor.quant.expert import quantize_expert
from tests.offload_helpers import GEN_KW, prompt_ids, run_offloaded, tiny_llada

H200_ROOFLINE = device_roofline()  # the default device side: no GPU named prices the H200

TOL = {"bf16": 2e-2, "int8": 3e-2, "int4": 3e-2, "int4:g32": 3e-2, "int3": 3e-2}


@pytest.mark.parametrize("tokens", [7, 64, 200])  # packed kernels below DENSE_FROM_TOKENS, dequantize + bf16 above
@pytest.mark.parametrize(("fmt", "kernel"), [("bf16", "dense"), ("int8", "int8pack_mm"), ("int4", "int4pack_mm"),
                                             ("int4:g32", "int4pack_mm"), ("int3", "dequantize")])
def test_cpu_kernels_match_the_dequantized_reference(fmt, kernel, tokens):
    g = torch.Generator().manual_seed(0)
    w = ExpertWeights(*(torch.randn(s, generator=g) * 0.05 for s in ((256, 128), (256, 128), (128, 256))))
    qe = quantize_expert(w, fmt)
    assert kernel_for(qe.gate)[0] == kernel
    x = torch.randn(tokens, 128, generator=g)
    ref_w = qe.dequantize(torch.float32)
    act = torch.nn.functional.silu
    ref = torch.nn.functional.linear(act(x @ ref_w.gate.T) * (x @ ref_w.up.T), ref_w.down)
    got = CpuExpert(qe, act)(x)
    assert got.dtype == x.dtype
    assert float((got - ref).norm() / ref.norm()) < TOL[fmt]


@pytest.mark.parametrize("fmt", ["int8", "int4", "int4:g32"])
def test_cpu_expert_takes_the_packed_kernel_below_the_switch_and_bf16_from_it(fmt):
    """`CpuExpert` (what the runtime and `advisor profile` call) computes exactly what the packed kernel computes
    below `DENSE_FROM_TOKENS` tokens and exactly what dequantize + bf16 computes from there on."""
    from advisor.offload.cpu_experts import DENSE_FROM_TOKENS

    g = torch.Generator().manual_seed(0)
    w = ExpertWeights(*(torch.randn(s, generator=g) * 0.05 for s in ((256, 128), (256, 128), (128, 256))))
    qe = quantize_expert(w, fmt)
    name = kernel_for(qe.gate)[0]
    n = DENSE_FROM_TOKENS[name]
    act = torch.nn.functional.silu

    def by(dense_from, x):
        gate, up, down = (kernel_for(qt, dense_from)[1] for qt in (qe.gate, qe.up, qe.down))
        return down(act(gate(x)) * up(x)).to(x.dtype)

    expert = CpuExpert(qe, act)
    for tokens, path in ((1, {}), (n - 1, {}), (n, {name: 1}), (3 * n, {name: 1})):
        x = torch.randn(tokens, 128, generator=g)
        other = {name: 1} if path == {} else {}
        assert torch.equal(expert(x), by(path, x)), (tokens, path)
        assert not torch.equal(by(path, x), by(other, x))  # the two paths are told apart at this size


def test_cpu_profile_labels_every_kernel_an_experts_projections_use():
    """At the bundled model's shape (hidden 128, FFN 16) int4's gate and up take the packed kernel but down's
    16-wide rows do not: the measured times say both kernels (at 256x256 all three take the packed one)."""
    from advisor.offload.cpu_profile import measure_cpu_experts

    src = measure_cpu_experts([(128, 16), (256, 256)], ("int4",), tokens=(1, 2), repeats=1).source
    assert "int4:int4pack_mm(bf16>=64)+dequantize/int4pack_mm(bf16>=64)" in src, src


FORMATS_TO_PRICE = ("bf16", "fp16", "fp32", "int8", "fp8", "int4", "int4:g32", "int4:g64", "int4:g128", "int4:g256",
                    "int4:asym", "int4:sym", "int4:g16", "nf4", "int3", "int2")


@pytest.mark.parametrize("fmt", FORMATS_TO_PRICE)
def test_time_model_prices_each_format_with_the_kernel_it_runs(fmt):
    """`timing.kernel_format` (torch-free, from the name) picks the CPU kernel `cpu_experts` really uses."""
    from advisor.offload.timing import kernel_format

    if fmt == "nf4":
        pytest.importorskip("bitsandbytes", reason="nf4 needs bitsandbytes (the lent H200's image has none)")
    g = torch.Generator().manual_seed(0)
    w = ExpertWeights(*(torch.randn(s, generator=g) * 0.05 for s in ((256, 256), (256, 256), (256, 256))))
    kernel = kernel_for(quantize_expert(w, fmt).gate)[0]
    measured_as = {"dense": "bf16", "int8pack_mm": "int8", "int4pack_mm": "int4", "dequantize": "int3"}[kernel]
    if fmt == "fp32":  # F.linear in fp32 is not bf16's kernel: its own row
        measured_as = "fp32"
    assert kernel_format(fmt) == measured_as


def test_a_format_priced_with_another_formats_times_says_so():
    """fp32 experts (F.linear in fp32) have no measured row: the time model prices them with bf16's times, and
    the source says so; plans whose kernels were all measured say nothing of the kind."""
    from advisor.hardware.profiles import DEFAULT_PROFILE

    def source(plan: str) -> str:
        return ModelCosts(plan, [32], [16], _profile(), H200_ROOFLINE, DEFAULT_PROFILE).source

    assert source("fp32").endswith("; fp32 priced with bf16 times (not measured)")
    assert "priced with" not in source("int8") and "priced with" not in source("bf16")


def _profile() -> CpuProfile:
    """A CPU profile (input, not a result) under which 1-token misses go to the CPU and larger ones are copied."""
    rows = [[1, 0.001], [2, 0.002], [256, 100.0]]
    return CpuProfile({"32x16": {f: rows for f in ("bf16", "int8", "int4", "int3")}}, 1, "test-profile")


def _costs(loaded, plan):
    from advisor.hardware.profiles import DEFAULT_PROFILE

    m = trace_meta(loaded)
    dev = DeviceCompute({"fp32": 0.01}, 32, 16, 32, "test-device")
    return ModelCosts(plan, m["hidden"], m["intermediate"], _profile(), dev, DEFAULT_PROFILE)


@pytest.mark.parametrize("miss", ["cpu", "hybrid"])
@pytest.mark.parametrize("policy", ["lru", "static_hot", "tide", "flru"])
def test_runtime_counters_equal_simulator_with_cpu_misses(miss, policy):
    loaded = tiny_llada(top_k=2)
    ids = prompt_ids()
    ref = generate(loaded, ids, **GEN_KW)
    hot = {0: [3, 5, 7], 1: [1, 2]} if policy == "static_hot" else None
    kw = {"steps_per_block": 2} if policy == "tide" else {}
    costs = _costs(loaded, "fp32")
    rt, trace, out = run_offloaded(loaded, ids, slots_per_layer=4, policy=policy, hot=hot, policy_kw=kw,
                                   miss=miss, costs=costs)
    st = rt.stats()
    sim = simulate(trace, slots_per_layer=4, policy=policy, plan="fp32", hot=hot, miss=miss, costs=costs)
    assert st.counters() == sim.counters() and st.per_layer == sim.per_layer
    assert st.times == pytest.approx(sim.times)
    assert st.total("cpu_experts") > 0 and st.total("cpu_tokens") >= st.total("cpu_experts")
    if miss == "hybrid":
        assert st.total("demand_bytes") > 0  # experts with >= 2 tokens were copied
    else:
        assert st.total("demand_bytes") == 0
    assert torch.equal(out, ref)  # fp32 experts on the CPU compute exactly as resident ones


@pytest.mark.parametrize("prefetch", ["prev_step", "lookahead"])
def test_prefetch_copies_take_link_time_in_the_time_per_token(prefetch):
    """A prefetched expert is not free: its copy is charged on the link to the look-up it serves, so the modelled
    time is never below the link's work (demand + prefetch copies), and the runtime models what replay models."""
    import dataclasses

    from advisor.hardware.profiles import DEFAULT_PROFILE

    loaded = tiny_llada(top_k=2)
    m = trace_meta(loaded)
    slow = dataclasses.replace(DEFAULT_PROFILE, h2d_gbps_pinned=0.01, copy_latency_us=1000.0)  # the link dominates
    costs = ModelCosts("fp32", m["hidden"], m["intermediate"], _profile(),
                       DeviceCompute({"fp32": 0.01}, 32, 16, 32, "test-device"), slow)
    rt, trace, _ = run_offloaded(loaded, prompt_ids(), slots_per_layer=4, policy="lru", prefetch=prefetch,
                                 costs=costs)
    st = rt.stats()
    sim = simulate(trace, slots_per_layer=4, policy="lru", plan="fp32", prefetch=prefetch, costs=costs)
    link = costs.link.transfer_ms(st.bytes_h2d, st.copies)
    assert st.total("prefetch_bytes") > 0 and sim.total("prefetch_bytes") > 0
    assert sim.times["layer_ms"] >= sim.times["copy_ms"] + sim.times["background_ms"] - 1e-9
    assert sim.times["layer_ms"] >= 0.99 * costs.link.transfer_ms(sim.bytes_h2d, sim.copies)
    assert st.times["layer_ms"] >= 0.99 * link


def _logits(loaded, runtime=None, ids=None):
    from advisor.models.view import attach_runtime, detach_runtime

    ids = prompt_ids(n=12) if ids is None else ids
    if runtime is not None:
        attach_runtime(loaded.model, runtime, layers=loaded.moe)
    try:
        with torch.no_grad():
            return loaded.model(input_ids=ids).logits.float()
    finally:
        if runtime is not None:
            detach_runtime(loaded.model)


@pytest.mark.parametrize("layout", ["list", "fused"])
@pytest.mark.parametrize("plan", ["bf16", "int8", "int4:g32"])
def test_cpu_and_hybrid_outputs_equal_resident_within_format_tolerance(layout, plan):
    from advisor.models import tiny
    from advisor.models.load import load_model, loaded_from
    from advisor.quant.apply import quantize_experts

    if layout == "list":  # wide enough for the int4 kernel (rows % 16, columns % 64)
        loaded = loaded_from(tiny.llada_moe_shaped(0, experts=16, top_k=2, hidden=64, expert_ffn=64), None,
                             "llada_moe", "tiny-wide")
    else:
        loaded = load_model("tiny:olmoe")
    assert loaded.moe[0].experts.layout == layout if hasattr(loaded.moe[0].experts, "layout") else True
    ref = _logits(loaded, quantize_experts(loaded, plan, attach=False))
    scale = float(ref.abs().max())
    for miss in ("cpu", "hybrid"):
        m = trace_meta(loaded)
        prof = CpuProfile({f"{m['hidden'][0]}x{m['intermediate'][0]}": {f: [[1, 0.001], [2, 0.002], [256, 100.0]] for f in ("bf16", "int8", "int4",
                                                                                       "int3")}}, 1, "test")
        from advisor.hardware.profiles import DEFAULT_PROFILE

        costs = ModelCosts(plan, m["hidden"], m["intermediate"], prof, DeviceCompute({"bf16": 0.01}, 1, 1, 1, "t"),
                           DEFAULT_PROFILE)
        rt = OffloadRuntime(loaded, plan, slots_per_layer=2, policy="lru", miss=miss, costs=costs, attach=False)
        got = _logits(loaded, rt)
        assert rt.stats().total("cpu_experts") > 0
        assert float((got - ref).abs().max()) / scale < TOL[plan], (miss, plan)


@pytest.mark.parametrize("plan", ["int8", "int4:g32"])
def test_cpu_misses_with_many_tokens_per_expert_take_the_bf16_path_and_stay_within_tolerance(plan):
    """A long input routes more than DENSE_FROM_TOKENS tokens to an expert: those CPU misses are dequantized to
    bf16 for the call (the packed kernel takes the rest), and the logits stay those of the resident model."""
    from advisor.models import tiny
    from advisor.models.load import loaded_from
    from advisor.offload import cpu_experts
    from advisor.quant.apply import quantize_experts

    loaded = loaded_from(tiny.llada_moe_shaped(0, experts=8, top_k=2, hidden=64, expert_ffn=64), None, "llada_moe",
                         "tiny-wide")
    ids = prompt_ids(n=400)
    ref = _logits(loaded, quantize_experts(loaded, plan, attach=False), ids)
    rt = OffloadRuntime(loaded, plan, slots_per_layer=2, policy="lru", miss="cpu", attach=False)
    got = _logits(loaded, rt, ids)
    st = rt.stats()
    # the CPU experts' mean token count reaches every switch point, so at least one call took the bf16 path
    assert st.total("cpu_experts") > 0
    assert st.total("cpu_tokens") >= max(cpu_experts.DENSE_FROM_TOKENS.values()) * st.total("cpu_experts")
    assert float((got - ref).abs().max()) / float(ref.abs().max()) < TOL[plan]


def test_interval_refresh_obeys_its_rules():
    pol = IntervalRefresh(3, tau=2, steps_per_block=4)
    refreshed = []
    for f in range(12):
        block, step = divmod(f, 4)
        ctx = Ctx(f, step, block)
        ids = tuple(range(f % 5, f % 5 + 5))
        tokens = tuple(range(5, 0, -1))  # the first id of the forward has the most tokens
        before = set(pol.resident)
        acc = pol.access(ids, ctx, tokens)
        changed = bool(acc.admitted or acc.evicted)
        if changed:
            refreshed.append((block, step))
        assert pol.refreshes(ctx) == (step != 3 and (block == 0 or step % 2 == 0))
        if not pol.refreshes(ctx):
            assert not changed and set(acc.streamed) == set(ids) - before
        assert len(acc.evicted) <= len(acc.admitted)  # demotions capped at promotions
        used_victims = set(acc.evicted) & set(ids)
        if used_victims:  # only once no unused resident is left, the fewest-token ones, computed as misses
            assert not (before - set(ids)) - set(acc.evicted)
            kept = [e for e in ids if e in pol.resident]
            assert max(tokens[ids.index(v)] for v in used_victims) <= min(tokens[ids.index(k)] for k in kept)
            assert not used_victims & set(acc.hits) and used_victims <= set(acc.streamed)
        assert len(pol.resident) <= 3
        if changed:  # promoted: this step's most-routed experts first
            ranked = [e for e in ids if e not in before]
            assert acc.admitted == ranked[: len(acc.admitted)]
    assert all(s != 3 for _, s in refreshed) and {(0, 1), (0, 2)} <= set(refreshed)
    assert not [r for r in refreshed if r[0] > 0 and r[1] % 2]



def test_interval_refresh_swaps_the_set_when_the_step_uses_every_resident():
    """TIDE re-chooses the GPU set from the step's tokens even when every resident is in use: the used
    resident with the fewest tokens is demoted (and computes as a miss in this step)."""
    pol = IntervalRefresh(2, tau=1)
    first = pol.access((0, 1), Ctx(0, 0, 0), (3, 3))
    assert first.admitted == [0, 1] and not first.evicted
    acc = pol.access((0, 1, 2), Ctx(1, 1, 0), (1, 4, 9))
    assert acc == ([1], [2], [0], [0]) and set(pol.resident) == {1, 2}
    between = pol.access((0, 1, 2), Ctx(2, 3, 1), (9, 1, 2))  # block 1, odd step: tau=1 refreshes every step
    assert between.admitted == [0] and between.evicted == [1] and between.hits == [2]

def test_profile_command_measures_cpu_experts_into_the_profile(tmp_path):
    import json

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.offload.timing import CPU_FORMATS, TOKENS, CpuProfile

    res = CliRunner().invoke(app, ["profile", "--cpu", "--repeats", "1", "--expert-shape", "64x32",
                                   "--profiles-dir", str(tmp_path), "--name", "host"])
    assert res.exit_code == 0, res.output
    d = json.loads(next(tmp_path.glob("*.json")).read_text())
    cp = CpuProfile.from_dict(d["cpu_experts"])
    assert cp.source.startswith("measured:wall-clock") and "int8:int8pack_mm" in cp.source
    assert set(cp.table["64x32"]) == set(CPU_FORMATS)
    assert [r[0] for r in cp.table["64x32"]["int8"]] == list(TOKENS) and len(cp.table["64x32"]["int3"]) == 3
    assert all(r[1] > 0 for rows in cp.table["64x32"].values() for r in rows)
    bad = CliRunner().invoke(app, ["profile", "--cpu", "--expert-shape", "64by32", "--profiles-dir", str(tmp_path)])
    assert bad.exit_code != 0 and "HIDDENxFFN" in str(bad.exception)


def test_overlap_runs_cpu_experts_beside_device_experts_and_measures_it():
    """The overlapped sum (CPU experts in a worker thread, partial outputs added) equals the sequential one
    within float rounding, counts the same, and reports measured times (CPU host: the slot pool is the device)."""
    loaded = tiny_llada(top_k=2)
    ids = prompt_ids()
    outs, stats = {}, {}
    for overlap in (False, True):
        rt = OffloadRuntime(loaded, "fp32", slots_per_layer=3, policy="lru", miss="cpu", overlap=overlap)
        try:
            with torch.no_grad():
                outs[overlap] = loaded.model(input_ids=prompt_ids(n=12)).logits.float()
            generate(loaded, ids, on_forward=rt.on_forward, **GEN_KW)
        finally:
            rt.close()
        stats[overlap] = (rt.stats().counters(), rt.overlap_report())
    assert torch.allclose(outs[True], outs[False], atol=1e-5, rtol=1e-5)
    assert stats[True][0] == stats[False][0]
    rep = stats[True][1]
    assert rep["cpu"] > 0 and rep["device"] > 0 and rep["wall"] > 0 and 0.0 <= rep["hidden_share"] <= 1.0
    assert rep["source"].startswith("measured:wall-clock") and stats[False][1]["cpu"] == 0.0



def test_roofline_device_time_reads_each_device_experts_bytes_once_per_forward():
    """The fused-MoE device model: per look-up one launch cost plus, per expert computed on the device, its
    stored bytes over the memory bandwidth or its FLOPs, whichever is slower; CPU-computed experts cost it
    nothing."""
    from advisor.hardware.profiles import DEFAULT_PROFILE
    from advisor.offload.trace import record_trace
    from advisor.quant.spec import expert_nbytes_of

    loaded = tiny_llada(top_k=2)
    trace = record_trace(loaded, prompt_ids(), **GEN_KW)
    h, inter = trace.meta["hidden"], trace.meta["intermediate"]
    flop_bound = DeviceRoofline(H200_ROOFLINE.hbm_gbps, 1e-6, 20.0, "test: FLOPs dominate")
    for dev in (H200_ROOFLINE, flop_bound):
        costs = ModelCosts("int8", h, inter, _profile(), dev, DEFAULT_PROFILE)
        want = 0.0
        for layer, seq in enumerate(trace.access_sequences()):
            read_ms = expert_nbytes_of("int8", h[layer], inter[layer]) / (dev.hbm_gbps * 1e6)
            per_token = 6.0 * h[layer] * inter[layer] / (dev.tflops * 1e9)
            want += sum(dev.layer_ms + sum(max(read_ms, per_token * n) for n in tokens) for _, _, tokens in seq)
        copy = simulate(trace, slots_per_layer=2, policy="lru", plan="int8", miss="copy", costs=costs)
        assert copy.times["gpu_ms"] == pytest.approx(want, rel=1e-9)
        cpu = simulate(trace, slots_per_layer=2, policy="lru", plan="int8", miss="cpu", costs=costs)
        assert 0 < cpu.times["gpu_ms"] < copy.times["gpu_ms"] and cpu.times["cpu_ms"] > 0
    assert "roofline" in H200_ROOFLINE.source and copy.time_source.startswith("modelled:gpu=test")


def test_recorded_h200_is_the_committed_gpu_check_measurement():
    """The eager device model's numbers are typed into `timing.RECORDED_H200`: they must be the committed
    H200 gpu_check result's measured forwards (read back with `DeviceCompute.from_gpu_check`)."""
    from pathlib import Path

    from advisor.offload.timing import RECORDED_H200

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "2026-11-30_h200_gpu_check.json"
    measured = DeviceCompute.from_gpu_check(str(path))
    assert "nf4" not in measured.ref_ms  # the row the device could not run has no forward time
    assert (measured.hidden, measured.intermediate, measured.tokens) == \
        (RECORDED_H200.hidden, RECORDED_H200.intermediate, RECORDED_H200.tokens)
    assert set(RECORDED_H200.ref_ms) == set(measured.ref_ms)  # every measured format, none priced as another
    for fmt, ms in RECORDED_H200.ref_ms.items():
        assert ms == pytest.approx(measured.ref_ms[fmt], abs=5e-5), fmt
    assert measured.source.startswith("measured:cuda-events(NVIDIA H200")


def test_hybrid_thresholds_are_each_experts_own_crossing_point():
    """`LayerCosts.thresholds` searches experts of equal cost once: on a mixed-format layer every expert's
    threshold is still the first token count where its CPU time reaches its copy + device time."""
    from advisor.hardware.profiles import DEFAULT_PROFILE
    from advisor.offload.timing import TOKENS, LayerCosts
    from advisor.quant.spec import expert_nbytes_of

    table = {f: [[n, k * n + 0.01] for n in TOKENS] for f, k in (("bf16", 2e-3), ("int8", 1e-3), ("int4", 5e-4),
                                                                  ("int3", 1e-2))}
    cpu = CpuProfile({"256x128": table}, 1, "test")
    fmts = ["bf16", "int4", "bf16", "int8", "int3", "int4:g64", "int4", "bf16"]
    lc = LayerCosts(fmts, [expert_nbytes_of(f, 256, 128) for f in fmts], 256, 128, cpu, H200_ROOFLINE, DEFAULT_PROFILE)
    want = [next((n for n in range(1, 4097) if lc.cpu_ms(e, n) >= lc.copy_ms([e]) + lc.gpu_ms(e, n)), 1 << 30)
            for e in range(len(fmts))]
    assert lc.thresholds() == want
    assert len(set(want)) >= 3 and max(want) < 1 << 30  # the formats really cross, at different counts


def _random_layer(rng):
    """A layer's cost model with random CPU speed, link, device model and mixed expert formats (inputs)."""
    from advisor.hardware.profiles import HardwareProfile
    from advisor.offload.timing import TOKENS, LayerCosts
    from advisor.quant.spec import expert_nbytes_of

    cpu = CpuProfile({"256x128": {f: [[n, rng.uniform(0.005, 0.2) + rng.uniform(1e-4, 5e-3) * n] for n in TOKENS]
                                  for f in ("bf16", "int8", "int4", "int3")}}, 1, "test: random")
    gbps = rng.uniform(0.5, 60.0)
    link = HardwareProfile("test", 0, gbps, gbps / 2, rng.uniform(1.0, 50.0), "test: random")
    device = H200_ROOFLINE if rng.random() < 0.5 else DeviceCompute({"bf16": rng.uniform(0.005, 0.2)}, 256, 128, 32,
                                                                     "test: random")
    fmts = [rng.choice(("bf16", "int8", "int4", "int3")) for _ in range(16)]
    return LayerCosts(fmts, [expert_nbytes_of(f, 256, 128) for f in fmts], 256, 128, cpu, device, link)


def test_hybrid_balances_cpu_and_link_never_slower_than_copy_cpu_or_the_threshold_rule():
    """On random look-ups and cost models (some waiting on prefetch copies), balanced hybrid's modelled time
    (`lookup_ms`, what `CacheLayer` adds up) is at most that of `copy`, `cpu` and the per-expert threshold rule; and it is really balancing:
    some look-ups beat all three, and it fixes look-ups where the rule is slower than copy or cpu. (No split
    is slower than both: its copy and CPU sides are each at most those of copying or computing every miss.)"""
    import random

    from advisor.offload.miss import split_misses
    from advisor.offload.timing import lookup_ms

    rng = random.Random(13)
    beat_all = rule_worse = 0
    for _ in range(40):
        lc = _random_layer(rng)
        thr = lc.thresholds()
        for _ in range(50):
            ids = rng.sample(range(16), rng.randint(1, 12))
            tok = {e: rng.choice((1, 1, 2, 3, 5, 8, 13, 40, 300)) for e in ids}
            hits = [e for e in ids if rng.random() < 0.3]
            misses = [e for e in ids if e not in hits]
            admitted = [e for e in misses if rng.random() < 0.5]
            pending = rng.choice((0.0, 0.0, rng.uniform(0.0, 2.0)))  # prefetch copies this look-up waits on
            splits = {m: split_misses(misses, tok, m, thr) for m in ("copy", "cpu")}
            splits["rule"] = split_misses(misses, tok, "hybrid", thr)  # no cost model: the per-expert rule
            splits["hybrid"] = split_misses(misses, tok, "hybrid", thr, lc, hits, admitted, pending)
            t = {}
            for m, (copied, on_cpu) in splits.items():
                assert sorted(copied + on_cpu) == sorted(misses)
                gpu, copy, cpu, bg = lc.lookup_terms([e for e in ids if e not in on_cpu], copied, on_cpu,
                                                     [e for e in on_cpu if e in admitted], tok.__getitem__)
                t[m] = lookup_ms(gpu, copy, cpu, bg + pending)  # as `CacheLayer` adds it up
            hybrid = t.pop("hybrid")
            assert hybrid <= min(t.values()) * (1 + 1e-12), (t, hybrid)
            beat_all += hybrid < min(t.values()) * (1 - 1e-9)
            assert t["rule"] <= max(t["copy"], t["cpu"]) * (1 + 1e-12)
            rule_worse += t["rule"] > min(t["copy"], t["cpu"]) * (1 + 1e-9)
    assert beat_all > 50 and rule_worse > 50, (beat_all, rule_worse)


def test_balanced_hybrid_runtime_equals_simulator_and_beats_copy_and_cpu():
    """The live runtime and the simulator share the balanced decision: where the CPU is a bit cheaper than the
    link per expert, the runtime's counters and modelled times equal the replay's, and hybrid's time is below
    both copy's and cpu's (the per-expert rule's): it copies some misses and computes the others on the CPU."""
    loaded, costs = close_cpu_and_link()
    rt, trace, _ = run_offloaded(loaded, prompt_ids(), slots_per_layer=4, policy="lru", miss="hybrid", costs=costs)
    st = {miss: simulate(trace, slots_per_layer=4, policy="lru", plan="fp32", miss=miss, costs=costs)
          for miss in ("copy", "cpu", "hybrid")}
    live = rt.stats()
    assert live.counters() == st["hybrid"].counters() and live.per_layer == st["hybrid"].per_layer
    assert live.times == pytest.approx(st["hybrid"].times)
    t = {miss: s.times["layer_ms"] for miss, s in st.items()}
    assert t["hybrid"] < min(t["copy"], t["cpu"]) * 0.99, t
    assert live.total("cpu_experts") > 0 and live.total("demand_bytes") > 0



def close_cpu_and_link():
    """A tiny LLaDA-MoE model (top-4) and its `ModelCosts` where, per expert, the CPU is a bit cheaper than the
    copy up to 40 tokens: the per-expert rule computes every miss on the CPU (it is `cpu` here), and the CPU is
    the critical path while the link idles, so hybrid really splits."""
    from advisor.hardware.profiles import DEFAULT_PROFILE

    loaded = tiny_llada(top_k=4)
    m = trace_meta(loaded)
    h, inter = m["hidden"][0], m["intermediate"][0]
    copy_ms = DEFAULT_PROFILE.transfer_ms(h * inter * 3 * 4, 1)
    rows = [[n, copy_ms * (0.6 + 0.01 * n)] for n in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
    cpu = CpuProfile({f"{h}x{inter}": {f: rows for f in ("bf16", "int8", "int4", "int3")}}, 1, "test")
    return loaded, ModelCosts("fp32", m["hidden"], m["intermediate"], cpu, H200_ROOFLINE, DEFAULT_PROFILE)


@pytest.mark.parametrize("prefetch", ["none", "prev_step"])
def test_no_per_layer_mix_of_miss_policies_beats_uniform_hybrid(prefetch):
    """Why `cache.miss` is one policy per configuration and not one per layer
    (benchmarks/results/2026-12-07_cpu-2-cores-shared_miss_per_layer_note.md): the miss policy does not change
    placement (each layer's hits, evictions and streamed experts are the same under copy, cpu and hybrid), the
    modelled time is the sum of the layers' (each layer replayed alone through `simulate` adds up to the whole
    replay), and layer by layer hybrid is no slower than copy or cpu; so no per-layer mix is faster than
    uniform hybrid. Cost model as in the test above: CPU and link close, so hybrid really splits."""
    import itertools

    from advisor.offload.trace import record_prompts

    loaded, costs = close_cpu_and_link()
    trace = record_prompts(loaded, [prompt_ids(seed=s) for s in range(2)], **GEN_KW)
    seqs = trace.access_sequences()
    modes, n = ("copy", "cpu", "hybrid"), trace.n_layers

    def run(miss, layer=None):  # layer: that layer's look-ups only (the others replay nothing)
        alone = seqs if layer is None else [q if i == layer else [] for i, q in enumerate(seqs)]
        return simulate(trace, slots_per_layer=4, policy="lru", plan="fp32", prefetch=prefetch, miss=miss,
                        costs=costs, sequences=alone)

    whole = {miss: run(miss) for miss in modes}
    placement = ("lookups", "hits", "prefetch_hits", "streamed", "evictions", "prefetch_copies")
    assert len({tuple(tuple(d[k] for k in placement) for d in st.per_layer) for st in whole.values()}) == 1
    t = {miss: [run(miss, layer).times["layer_ms"] for layer in range(n)] for miss in modes}
    for miss in modes:
        assert sum(t[miss]) == pytest.approx(whole[miss].times["layer_ms"], rel=1e-12)
    for layer in range(n):
        assert t["hybrid"][layer] <= min(t["copy"][layer], t["cpu"][layer]) * (1 + 1e-12), (layer, t)
    uniform = sum(t["hybrid"])
    mixes = {mix: sum(t[miss][layer] for layer, miss in enumerate(mix)) for mix in itertools.product(modes, repeat=n)}
    assert min(mixes.values()) >= uniform * (1 - 1e-12), mixes
    assert max(t["hybrid"][i] / min(t["copy"][i], t["cpu"][i]) for i in range(n)) < 0.99, t  # it balances

def test_interval_refresh_on_autoregressive_decoding_refreshes_every_tau_forwards(tmp_path):
    """Autoregressive decoding has one forward per block (step 0 is every block's last step): TIDE refreshes by
    forward count instead of never (it used to keep no expert: hit rate 0 on Qwen3-MoE/Mixtral traces)."""
    import json

    from typer.testing import CliRunner

    from advisor.cli import app

    runner = CliRunner()
    trace = tmp_path / "ar.npz"
    res = runner.invoke(app, ["trace", "tiny:qwen3_moe", "-o", str(trace), "--limit", "2", "--max-new-tokens", "8"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "sim.json"
    res = runner.invoke(app, ["simulate", str(trace), "--policy", "tide,lru", "--slots", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["policy"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["tide"]["hits"] > 0.5 * rows["lru"]["hits"] > 0
    pol = IntervalRefresh(2, tau=3, steps_per_block=1)
    assert [f for f in range(7) if pol.refreshes(Ctx(f, 0, f))] == [0, 3, 6]


@pytest.mark.parametrize("family", ["llada_moe", "llada2", "diffusion_gemma", "qwen3_moe"])
def test_steps_per_block_is_what_the_sampler_runs(family):
    """`steps_per_block` (what TIDE's schedule and exports are told before decoding) equals the steps per block
    a recorded trace shows for the same decoding (LLaDA2's threshold sampler may finish a block sooner)."""
    from advisor.models.generate import steps_per_block
    from advisor.models.load import load_model
    from advisor.offload.trace import record_trace

    loaded = load_model(f"tiny:{family}")
    for kw in ({"max_new_tokens": 8}, {"max_new_tokens": 12, "steps": 6, "block_length": 4}):
        if family == "diffusion_gemma" and "steps" in kw:
            kw = {"max_new_tokens": 8, "steps": 5, "block_length": 4}
        predicted = steps_per_block(loaded, seed=0, **kw)
        trace = record_trace(loaded, prompt_ids(), **kw)
        ran = int(trace.fwd_step.max()) + 1  # the most steps a block of this trace ran
        if family == "llada2":
            assert 1 <= ran <= predicted, kw
        else:
            assert ran == predicted, (kw, predicted, ran)
        assert trace.steps_per_block() == predicted  # what replay tells TIDE: what the live runtime is told
        # its meta's steps: what ran, in the family's sense of the argument (not the steps asked, nor None)
        steps = {"llada_moe": trace.n_forwards, "llada2": predicted, "diffusion_gemma": predicted,
                 "qwen3_moe": None}[family]
        assert trace.meta["steps"] == steps, (kw, trace.meta["steps"])


def test_tide_replay_equals_live_when_llada2_finishes_its_blocks_early():
    """LLaDA2's threshold sampler may finish a block in fewer forwards than decoding was set up with (here every
    block in one, threshold 0). The live runtime's TIDE is told the set-up steps per block; the trace stores them,
    so replay decides alike. From the longest block actually run (1 here) it decided otherwise."""
    from advisor.models.generate import steps_per_block
    from advisor.models.load import load_model
    from advisor.offload.runtime import OffloadRuntime
    from advisor.offload.trace import record_prompts

    loaded = load_model("tiny:llada2")
    gen = dict(max_new_tokens=12, steps=4, block_length=4, threshold=0.0)
    kw = {"tau": 2, "steps_per_block": steps_per_block(loaded, **gen)}
    rt = OffloadRuntime(loaded, "fp32", slots_per_layer=2, policy="tide", policy_kw=kw, attach=False)
    trace = record_prompts(loaded, [prompt_ids(seed=s) for s in range(2)], runtime=rt, **gen)
    assert kw["steps_per_block"] == 4 and int(trace.fwd_step.max()) + 1 == 1  # every block finished early
    assert rt.stats().counters() == simulate(trace, slots_per_layer=2, policy="tide", plan="fp32",
                                             policy_kw={"tau": 2}).counters()
    trace.meta.pop("steps_per_block")  # a trace recorded before the steps were stored: the old reading differs
    assert rt.stats().counters() != simulate(trace, slots_per_layer=2, policy="tide", plan="fp32",
                                             policy_kw={"tau": 2}).counters()


def test_hybrid_with_prefetch_counts_the_prefetch_copies_on_the_link_it_balances():
    """A prefetch copy shares the link with the look-up it serves (`CacheLayer` charges it there), so balanced
    hybrid weighs it too: with prev_step prefetch on a slow link hybrid is never slower than `copy` or `cpu`
    (it was 13% slower than `cpu` when it balanced as if the link were free), and the live runtime decides as
    replay does."""
    import dataclasses

    from advisor.hardware.profiles import DEFAULT_PROFILE
    from advisor.offload.timing import TOKENS

    loaded = tiny_llada(top_k=2)
    m = trace_meta(loaded)
    slow = dataclasses.replace(DEFAULT_PROFILE, h2d_gbps_pinned=0.05)  # input: a link the prefetch copies load
    rows = [[n, 0.02 * (1 + 0.3 * n)] for n in TOKENS]
    cpu = CpuProfile({f"{m['hidden'][0]}x{m['intermediate'][0]}": {f: rows for f in ("bf16", "int8", "int4", "int3")}},
                     1, "test")
    costs = ModelCosts("fp32", m["hidden"], m["intermediate"], cpu, H200_ROOFLINE, slow)
    rt, trace, _ = run_offloaded(loaded, prompt_ids(), slots_per_layer=2, policy="lru", prefetch="prev_step",
                                 miss="hybrid", costs=costs)
    st = {miss: simulate(trace, slots_per_layer=2, policy="lru", plan="fp32", prefetch="prev_step", miss=miss,
                         costs=costs) for miss in ("copy", "cpu", "hybrid")}
    live = rt.stats()
    assert live.counters() == st["hybrid"].counters() and live.times == pytest.approx(st["hybrid"].times)
    assert st["hybrid"].total("prefetch_bytes") > 0
    t = {miss: s.times["layer_ms"] for miss, s in st.items()}
    assert t["hybrid"] <= min(t["copy"], t["cpu"]) * (1 + 1e-12), t


def test_simulate_takes_tides_tau_and_says_which_it_used(tmp_path):
    """`advisor simulate --policy tide` always replayed tau 4 (the tuner's default) and did not say so, while the
    tuner searches tau: a user could not replay the interval a study picked. `--tau` sets it, the row names it,
    and a --tau without tide is refused rather than ignored."""
    import json

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError
    from advisor.offload.simulate import simulate
    from advisor.offload.trace import RoutingTrace

    runner = CliRunner()
    trace = tmp_path / "t.npz"
    res = runner.invoke(app, ["trace", "tiny:llada_moe", "-o", str(trace), "--limit", "2", "--max-new-tokens", "16",
                              "--steps", "16", "--block-length", "8"])
    assert res.exit_code == 0, res.output
    got = {}
    for tau in (1, 8):
        out = tmp_path / f"s{tau}.json"
        res = runner.invoke(app, ["simulate", str(trace), "--policy", "tide", "--slots", "4", "--tau", str(tau),
                                  "--json", str(out)], terminal_width=200)
        assert res.exit_code == 0 and f"tide (tau {tau})" in res.output, res.output
        row = json.loads(out.read_text())["results"][0]
        assert row["policy"] == "tide" and row["tau"] == tau
        expected = simulate(RoutingTrace.load(trace), slots_per_layer="4", policy="tide", policy_kw={"tau": tau})
        assert row["hits"] == expected.hits
        got[tau] = row["hits"]
    assert got[1] != got[8]  # the interval reached the replay
    res = runner.invoke(app, ["simulate", str(trace), "--policy", "lru", "--tau", "2"])
    assert isinstance(res.exception, UserError) and "has no tide" in str(res.exception)


def test_cli_tide_on_diffusion_gemma_refreshes_on_its_denoising_steps_only(tmp_path):
    """DiffusionGemma runs, per block, one encoder forward (the prompt, then the canvas just committed, into the KV
    cache) beside its decoder's denoising steps. TIDE counted the encoder forward as denoising step 0: it
    re-chose the GPU set from the encoder's routing in every block, refreshed the decoder at steps tau-1, 2tau-1,
    ... of each block instead of 0, tau, ..., and the steps per block were one more than the steps asked. With
    every expert fitting (slots 100%) the GPU set is the union of the refresh steps' experts, so replay's hits
    and streamed look-ups follow from which forwards TIDE's rules refresh on: the decoder forwards (those holding
    the block), at denoising steps k % tau == 0 (every step of the first block), never the block's last."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.offload.trace import RoutingTrace

    runner, out, js = CliRunner(), tmp_path / "dg.npz", tmp_path / "s.json"
    steps = 3
    res = runner.invoke(app, ["trace", "tiny:diffusion_gemma", "-o", str(out), "--limit", "1", "--max-new-tokens",
                              "12", "--steps", str(steps), "--block-length", "4"])
    assert res.exit_code == 0, res.output
    tr = RoutingTrace.load(out)
    holds_block = np.add.reduceat(tr.block_tokens.astype(np.int64), tr.rec_ptr[:-1]) > 0
    decoder = {int(f) for f, h in zip(tr.rec_forward.tolist(), holds_block.tolist(), strict=True) if h}
    step_of, seen = {}, {}
    for f, b in zip(tr.fwd_index.tolist(), tr.fwd_block.tolist(), strict=True):  # k-th decoder forward of its block
        if f in decoder:
            step_of[f] = (b, seen.get(b, 0))
            seen[b] = seen.get(b, 0) + 1
    assert sorted(seen) == [0, 1, 2] and set(seen.values()) == {steps}  # 3 blocks, every step run
    assert len(tr.fwd_index) == 3 * (steps + 1)  # and an encoder forward each
    for tau in (1, 2, 3):
        res = runner.invoke(app, ["simulate", str(out), "--policy", "tide", "--tau", str(tau), "--slots", "100%",
                                  "--json", str(js)])
        assert res.exit_code == 0, res.output
        row = json.loads(js.read_text())["results"][0]
        refresh = {f for f, (b, k) in step_of.items() if k != steps - 1 and (b == 0 or k % tau == 0)}
        assert (row["hits"], row["streamed"]) == refreshed_at_full_slots(tr, refresh), tau


def refreshed_at_full_slots(tr, refresh: set[int]) -> tuple[int, int]:
    """(hits, streamed) of TIDE with every expert fitting, refreshing on the forwards `refresh`: its GPU set is
    the union of those forwards' experts."""
    hits = streamed = 0
    for seq in tr.access_sequences():
        gpu: set[int] = set()
        for ids, ctx, _ in seq:
            hits += len(gpu & set(ids))
            if ctx.forward in refresh:
                gpu |= set(ids)
            else:
                streamed += len(set(ids) - gpu)
    return hits, streamed


def test_cli_tide_on_diffusion_gemma_at_one_step_per_canvas_counts_its_steps_not_its_forwards(tmp_path):
    """At `--steps 1` every DiffusionGemma step is its block's last, so TIDE falls back to refreshing every tau-th
    step of the run. It counted forwards, the encoder passes among them: every other forward is an encoder pass,
    which never refreshes, so at an even tau (the default 4 among them) no decoder forward was ever reached and
    nothing was placed (0 hits at 100% slots). It now counts the denoising steps: the decoder forwards."""
    import json

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.offload.trace import RoutingTrace

    runner, out, js = CliRunner(), tmp_path / "dg.npz", tmp_path / "s.json"
    res = runner.invoke(app, ["trace", "tiny:diffusion_gemma", "-o", str(out), "--limit", "2", "--max-new-tokens",
                              "16", "--steps", "1", "--block-length", "4"])
    assert res.exit_code == 0, res.output
    tr = RoutingTrace.load(out)
    assert tr.fwd_step.tolist() == [-1, 0] * 8 and tr.steps_per_block() == 1
    decoders = [f for f, s in zip(tr.fwd_index.tolist(), tr.fwd_step.tolist(), strict=True) if s == 0]
    for tau in (1, 2, 3, 4):
        res = runner.invoke(app, ["simulate", str(out), "--policy", "tide", "--tau", str(tau), "--slots", "100%",
                                  "--json", str(js)])
        assert res.exit_code == 0, res.output
        row = json.loads(js.read_text())["results"][0]
        hits, streamed = refreshed_at_full_slots(tr, set(decoders[::tau]))  # every tau-th decoder forward
        assert (row["hits"], row["streamed"]) == (hits, streamed) and hits > 0, tau


@pytest.mark.parametrize(("policy", "steps"), [("tide", 3), ("block_aware", 3), ("tide", 1)])
def test_runtime_equals_replay_on_diffusion_gemma(policy, steps):
    """The live runtime's TIDE and block_aware on DiffusionGemma (TIDE told the steps per block before decoding;
    both given each forward's step and block as it runs, the encoder pass as step -1) decide as replay of the
    trace recorded in the same run: equal counters, over several prompts, with hits and misses on both sides
    (TIDE at one step per block too, where it counts the steps over the run)."""
    from advisor.models.generate import steps_per_block
    from advisor.models.load import load_model
    from advisor.offload.trace import record_prompts

    loaded = load_model("tiny:diffusion_gemma")
    gen = dict(max_new_tokens=8, steps=steps, block_length=4)
    kw = {"tau": 2, "steps_per_block": steps_per_block(loaded, **gen)} if policy == "tide" else {}
    rt = OffloadRuntime(loaded, "fp32", slots_per_layer=2, policy=policy, policy_kw=kw, attach=False)
    trace = record_prompts(loaded, [prompt_ids(seed=s) for s in range(2)], runtime=rt, **gen)
    live = rt.stats()
    assert trace.steps_per_block() == steps and -1 in trace.fwd_step.tolist()
    assert live.counters() == simulate(trace, slots_per_layer=2, policy=policy, plan="fp32",
                                       policy_kw={"tau": 2} if policy == "tide" else None).counters()
    assert live.lookups > 0 and live.hits > 0 and live.misses > 0


def test_cli_block_aware_on_diffusion_gemma_takes_no_encoder_pass_for_a_denoising_step(tmp_path):
    """block_aware protects the previous denoising step's experts, then the block's most used ones. It took
    DiffusionGemma's encoder pass (the prompt, then the canvas just committed, into the KV cache: step -1) for a
    step: each block's first step protected the encoder's experts as 'the previous step', and the encoder's uses
    counted as the block's. Replay of the CLI's trace now decides as the reference policy does with the encoder
    pass as no step (the last step stays the previous one, its uses count in no block), and no longer as it
    does with that pass taken for a step."""
    import json

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.offload.trace import RoutingTrace
    from tests.policy_reference import RefBlockAware

    def expected(tr: RoutingTrace, cap: int, encoder_as_step: bool = False) -> tuple[int, int, int]:
        hits = streamed = evictions = 0
        for seq in tr.access_sequences():
            ref = RefBlockAware(cap)
            for ids, ctx, tokens in seq:
                if encoder_as_step and ctx.off_step:
                    ctx = Ctx(ctx.forward, 0, ctx.block)
                h, _, ev, st = ref.access(ids, ctx, tokens)
                hits, streamed, evictions = hits + len(h), streamed + len(st), evictions + len(ev)
        return hits, streamed, evictions

    runner, out, js = CliRunner(), tmp_path / "dg.npz", tmp_path / "s.json"
    res = runner.invoke(app, ["trace", "tiny:diffusion_gemma", "-o", str(out), "--limit", "2", "--max-new-tokens",
                              "12", "--steps", "3", "--block-length", "4"])
    assert res.exit_code == 0, res.output
    tr = RoutingTrace.load(out)
    assert -1 in tr.fwd_step.tolist()  # an encoder pass opens each block
    differs = False
    for slots in (2, 3, 4):
        res = runner.invoke(app, ["simulate", str(out), "--policy", "block_aware", "--slots", str(slots),
                                  "--json", str(js)])
        assert res.exit_code == 0, res.output
        row = json.loads(js.read_text())["results"][0]
        assert (row["hits"], row["streamed"], row["evictions"]) == expected(tr, slots), slots
        differs |= expected(tr, slots) != expected(tr, slots, encoder_as_step=True)
    assert differs  # the trace tells the two rules apart


def test_prev_step_predicts_each_denoising_step_from_the_last_one_not_from_the_encoder_pass(tmp_path):
    """prev_step prefetch stages, before each forward, the experts of the previous denoising step (consecutive
    steps route alike). DiffusionGemma opens each block with an encoder forward over the prompt (then the canvas
    just committed), which is no denoising step: the first step of every block was predicted from the encoder's
    routing of those other tokens. It is now predicted from the last step of the block before (the first block's
    first step of a generation from nothing). With no slots and room to stage every prediction, the prefetch
    copies are the predicted sets and the prefetch hits their overlap with what each forward used: counted from
    the trace the CLI recorded for replay, and from the trace recorded beside the live runtime for it."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.models.load import load_model
    from advisor.offload.trace import RoutingTrace, record_prompts

    def expected(tr: RoutingTrace, skip_off_step: bool = True) -> tuple[int, int]:
        step = dict(zip(tr.fwd_index.tolist(), tr.fwd_step.tolist(), strict=True))
        assert sorted(set(step.values())) == [-1, 0, 1, 2]  # an encoder forward in each block beside its 3 steps
        copies = hits = 0
        for seq in tr.access_sequences():
            pred: set[int] = set()
            for ids, ctx, _ in seq:
                copies += len(pred)
                hits += len(pred & set(ids))
                if not (skip_off_step and step[ctx.forward] < 0):
                    pred = set(ids)
        return copies, hits

    out = tmp_path / "dg.npz"
    res = CliRunner().invoke(app, ["trace", "tiny:diffusion_gemma", "-o", str(out), "--limit", "1",
                                   "--max-new-tokens", "12", "--steps", "3", "--block-length", "4"])
    assert res.exit_code == 0, res.output
    tr = RoutingTrace.load(out)
    assert expected(tr) != expected(tr, skip_off_step=False)  # the encoder's routing would predict other experts
    st = simulate(tr, slots_per_layer=0, policy="lru", plan="fp32", prefetch="prev_step", stage_limit=64)
    assert (st.total("prefetch_copies"), st.total("prefetch_hits")) == expected(tr)
    loaded = load_model("tiny:diffusion_gemma")
    rt = OffloadRuntime(loaded, "fp32", slots_per_layer=0, policy="lru", prefetch="prev_step", stage_limit=64,
                        attach=False)
    live_tr = record_prompts(loaded, [prompt_ids(seed=s) for s in range(2)], runtime=rt, max_new_tokens=8, steps=3,
                             block_length=4)
    live = rt.stats()
    assert (live.total("prefetch_copies"), live.total("prefetch_hits")) == expected(live_tr)
