"""The live runtime under a real (tiny) dLLM: outputs unchanged, counters equal to the simulator's, real copies."""

from __future__ import annotations

import pytest
import torch

from advisor.models.generate import generate
from advisor.offload.policies import POLICIES
from advisor.offload.simulate import belady, plan_expert_bytes, simulate
from advisor.offload.trace import record_trace
from tests.offload_helpers import GEN_KW, prompt_ids, run_offloaded, tiny_llada


@pytest.fixture(scope="module")
def loaded():
    return tiny_llada()


@pytest.fixture(scope="module")
def reference(loaded):
    ids = prompt_ids()
    return ids, generate(loaded, ids, **GEN_KW)


@pytest.mark.parametrize("prefetch", ["none", "prev_step"])
@pytest.mark.parametrize("policy", POLICIES)
def test_runtime_counters_equal_simulator_and_outputs_equal_resident(loaded, reference, policy, prefetch):
    ids, ref = reference
    hot = {0: [3, 5, 7], 1: [1, 2]} if policy == "static_hot" else None
    kw = {"steps_per_block": 2} if policy == "tide" else {}  # the runtime is told; replay reads the trace
    rt, trace, out = run_offloaded(loaded, ids, slots_per_layer=4, policy=policy, prefetch=prefetch, hot=hot,
                                   policy_kw=kw)
    assert torch.equal(out, ref)
    st = rt.stats()
    sim = simulate(trace, slots_per_layer=4, policy=policy, plan="fp32", prefetch=prefetch, hot=hot)
    assert st.counters() == sim.counters()  # hits, misses, bytes, copies, evictions: per layer and per forward
    assert st.lookups > 0 and st.misses > 0 and st.hits > 0
    assert 0 < st.hit_rate < 1
    assert st.transfer_source.startswith("modelled:") and st.transfer_ms > 0
    # the runtime's slots hold exactly the experts the policy says are resident, byte for byte
    for layer, cache in enumerate(rt.caches):
        assert set(rt.slot_of[layer]) == set(cache.policy.resident)
        for e, s in rt.slot_of[layer].items():
            packed = rt.store[(layer, e)]
            assert torch.equal(rt.slots[layer][s][: packed.nbytes], packed.host)


def test_policies_really_differ_on_this_model(loaded, reference):
    ids, _ = reference
    trace = record_trace(loaded, ids, **GEN_KW)
    hits = {p: simulate(trace, slots_per_layer=3, policy=p, plan="fp32").hits for p in POLICIES}
    assert len(set(hits.values())) > 1
    bound = belady(trace, 3, plan="fp32").hits
    assert all(h <= bound for h in hits.values())


def test_quantized_plan_bytes_and_outputs_match_the_quantized_resident_runtime(loaded, reference):
    from advisor.models.view import detach_runtime
    from advisor.quant.apply import quantize_experts

    ids, _ = reference
    qrt = quantize_experts(loaded, "int8")
    try:
        q_ref = generate(loaded, ids, **GEN_KW)
    finally:
        detach_runtime(loaded.model)
    rt, trace, out = run_offloaded(loaded, ids, plan="int8", slots_per_layer=2, policy="lru")
    assert torch.equal(out, q_ref)
    counted = plan_expert_bytes("int8", [16, 16], [32, 32], [16, 16])
    assert rt.store.expert_bytes(0) == counted[0] == [q.nbytes for (lay, _), q in sorted(qrt.store.items()) if lay == 0]
    st = rt.stats()
    assert st.counters() == simulate(trace, slots_per_layer=2, policy="lru", plan="int8").counters()
    assert st.bytes_h2d == st.misses * counted[0][0]


def test_lookahead_prefetch_counts_its_bytes_and_keeps_outputs(loaded, reference):
    ids, ref = reference
    rt, trace, out = run_offloaded(loaded, ids, slots_per_layer=4, policy="lru", prefetch="lookahead")
    assert torch.equal(out, ref)
    st = rt.stats()
    pref = sum(d["prefetch_bytes"] for d in st.per_layer)
    demand = sum(d["demand_bytes"] for d in st.per_layer)
    assert pref > 0 and st.bytes_h2d == pref + demand
    assert st.per_layer[0]["prefetch_copies"] == 0  # nothing predicts the first MoE layer
    served = sum(d["prefetch_hits"] for d in st.per_layer)
    assert st.lookups == st.hits + st.misses + served
    oracle = simulate(trace, slots_per_layer=4, policy="lru", plan="fp32", prefetch="lookahead")
    assert oracle.misses <= simulate(trace, slots_per_layer=4, policy="lru", plan="fp32").misses
    assert any("oracle" in n for n in oracle.notes)


def test_zero_slots_streams_everything(loaded, reference):
    ids, ref = reference
    rt, trace, out = run_offloaded(loaded, ids, slots_per_layer=0, policy="lru")
    assert torch.equal(out, ref)
    st = rt.stats()
    assert st.hits == 0 and st.misses == st.lookups == st.total("streamed")


def test_top3_routing_sums_expert_outputs_in_the_resident_order():
    """With k >= 3 the order of the weighted sum matters in floating point: outputs must still be equal."""
    lm = tiny_llada(num_experts=8, top_k=3, seed=1)
    ids = prompt_ids(seed=1)
    ref = generate(lm, ids, **GEN_KW)
    rt, trace, out = run_offloaded(lm, ids, slots_per_layer=3, policy="block_aware")
    assert torch.equal(out, ref)
    assert rt.stats().counters() == simulate(trace, slots_per_layer=3, policy="block_aware", plan="fp32").counters()


@pytest.mark.parametrize(("policy", "hot", "kw"), [("static_hot", {0: [3, 5, 7], 1: [1, 2]}, {}),
                                                   ("lfu_decay", None, {"decay": 0.5}),
                                                   ("tide", None, {"tau": 2, "steps_per_block": 2})])
def test_reset_cache_restarts_the_same_policy_from_empty(loaded, reference, policy, hot, kw):
    from advisor.offload.runtime import OffloadRuntime

    ids, ref = reference
    rt = OffloadRuntime(loaded, "fp32", slots_per_layer=4, policy=policy, hot=hot, policy_kw=kw)
    try:
        assert torch.equal(generate(loaded, ids, on_forward=rt.on_forward, **GEN_KW), ref)
        first = rt.stats().counters()
        assert first["per_layer"][0]["lookups"] > 0
        rt.reset_cache()
        assert all(not c.policy.resident for c in rt.caches) and rt.stats().lookups == 0
        assert torch.equal(generate(loaded, ids, on_forward=rt.on_forward, **GEN_KW), ref)
        assert rt.stats().counters() == first  # same policy, same settings, from empty slots
    finally:
        rt.close()


@pytest.mark.parametrize("family", ["llada_moe", "qwen3_moe"])
@pytest.mark.parametrize("policy", ["tide", "lfu_decay", "flru"])
def test_runtime_counters_equal_simulator_over_several_prompts(family, policy):
    """Several generations through one runtime (what `tune --mode live` runs) number their forwards on, as the
    merged trace does: the policies that read the forward number decide alike, and per-forward rows stay apart."""
    from advisor.models.load import load_model
    from advisor.offload.runtime import OffloadRuntime
    from advisor.offload.trace import record_prompts

    model = load_model(f"tiny:{family}")
    gen = dict(max_new_tokens=5) if family == "qwen3_moe" else GEN_KW
    kw = {"tau": 4, "steps_per_block": 1 if family == "qwen3_moe" else 2} if policy == "tide" else {}
    prompts = [prompt_ids(seed=s) for s in range(3)]
    rt = OffloadRuntime(model, "fp32", slots_per_layer=2, policy=policy, policy_kw=kw, attach=False)
    trace = record_prompts(model, prompts, runtime=rt, **gen)
    live = rt.stats()
    sim = simulate(trace, slots_per_layer=2, policy=policy, plan="fp32", policy_kw=kw)
    assert len(live.forward_ids) == trace.n_forwards == 3 * (5 if family == "qwen3_moe" else 4)
    assert live.counters() == sim.counters()


def test_prev_step_staging_stays_within_the_counted_peak(loaded, reference):
    """prev_step stages every layer's experts at the forward's start: the staged bytes alive at once never pass
    what `counted_peak_bytes` allows for prefetch on an offloaded model."""
    from advisor.offload.runtime import OffloadRuntime
    from advisor.quant.plan import PrecisionPlan
    from advisor.tune.config import ModelShape, counted_peak_bytes

    ids, _ = reference
    slots = 10  # of 16: each layer stages up to min(slots, 16 - slots) = 6 experts
    big = tiny_llada(num_experts=16, top_k=8)
    rt = OffloadRuntime(big, "fp32", slots_per_layer=slots, policy="lru", prefetch="prev_step")
    alive = []

    def on_forward(info):
        rt.on_forward(info)
        alive.append(sum(b.numel() for row in rt.staged for b in row.values()))

    try:
        generate(big, ids, on_forward=on_forward, **GEN_KW)
    finally:
        rt.close()
    n = len(rt.moe)
    shape = ModelShape((16,) * n, (8,) * n, tuple(m.hidden_size for m in rt.moe),
                       tuple(m.intermediate_size for m in rt.moe), "fp32", 0, staging=True)
    plan = PrecisionPlan.parse("fp32")
    allowance = (counted_peak_bytes(shape, plan, [slots] * n, "prev_step", miss="cpu")
                 - counted_peak_bytes(shape, plan, [slots] * n, "none", miss="cpu"))
    assert max(alive) > rt.store.max_bytes(0) * (16 - slots)  # more than one layer's worth is staged at once
    assert max(alive) <= allowance


def test_streamed_experts_stay_within_the_counted_peak_before_tides_slots_fill(monkeypatch):
    """tide admits nothing between refreshes, and DiffusionGemma's first forward, the encoder pass over the prompt,
    is none: with 6 slots of 8 it streamed every expert it used into temporary buffers (6 experts) beside the empty
    slot pool, where `counted_peak_bytes` allows the 2 experts without a slot. Streamed experts take the look-up's
    free slots first; the counters (bytes, copies) are the same, so replay still equals the runtime."""
    from advisor.models.generate import steps_per_block
    from advisor.models.load import load_model
    from advisor.offload.runtime import OffloadRuntime
    from advisor.offload.trace import record_prompts
    from advisor.quant.plan import PrecisionPlan
    from advisor.tune.config import ModelShape, counted_peak_bytes

    loaded = load_model("tiny:diffusion_gemma")
    gen = dict(max_new_tokens=8, steps=4, block_length=4)
    kw = {"tau": 4, "steps_per_block": steps_per_block(loaded, **gen)}
    slots = 6
    rt = OffloadRuntime(loaded, "fp32", slots_per_layer=slots, policy="tide", policy_kw=kw, attach=False)
    temporary: list[int] = []  # per look-up: bytes of the device buffers it allocated
    real_empty, lookup = torch.empty, rt.experts_for

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if temporary and temporary[-1] >= 0 and kwargs.get("dtype") is torch.uint8:
            temporary[-1] += t.numel()
        return t

    def experts_for(layer, ids, tokens=None):
        temporary.append(0)
        try:
            return lookup(layer, ids, tokens)
        finally:
            temporary.append(-1)  # allocations until the next look-up are none of its buffers

    monkeypatch.setattr(torch, "empty", empty)
    rt.experts_for = experts_for
    trace = record_prompts(loaded, [prompt_ids(seed=0)], runtime=rt, **gen)
    monkeypatch.undo()
    n = len(rt.moe)
    shape = ModelShape(tuple(m.num_experts for m in rt.moe), (2,) * n, tuple(m.hidden_size for m in rt.moe),
                       tuple(m.intermediate_size for m in rt.moe), "fp32", 0, staging=True)
    plan = PrecisionPlan.parse("fp32")
    allowance = (counted_peak_bytes(shape, plan, [slots] * n, "none", miss="copy")
                 - counted_peak_bytes(shape, plan, [slots] * n, "none", miss="cpu"))
    assert rt.stats().per_layer[0]["streamed"] > rt.moe[0].num_experts - slots  # more than the unslotted stream
    assert max(temporary) <= allowance
    assert rt.stats().counters() == simulate(trace, slots_per_layer=slots, policy="tide", plan="fp32",
                                             policy_kw={"tau": 4}).counters()


def test_empty_forwards_layers_without_tokens_and_repeated_experts_count_alike_live_and_replayed():
    """Edge cases of the routing the experts modules get: a forward with no tokens in any layer, a layer with no
    tokens, a token routed to the same expert twice. The recorder keeps each as the runtime looks it up (an empty
    look-up; a repeated expert's tokens counted per routing), so replay's counters equal the live ones at every
    slot count from none to more than the experts, for every miss policy; before, a layer with no tokens made
    the recorder raise (numpy cannot reshape 0 rows to (0, -1))."""
    from advisor.hardware.profiles import DEFAULT_PROFILE
    from advisor.models.samplers import ForwardInfo
    from advisor.offload.runtime import OffloadRuntime
    from advisor.offload.timing import CpuProfile, DeviceCompute, ModelCosts
    from advisor.offload.trace import TraceRecorder, trace_meta

    loaded = tiny_llada(num_experts=8, top_k=2)
    m = trace_meta(loaded)
    rows = [[1, 0.001], [2, 0.002], [256, 100.0]]  # input: 1-token misses go to the CPU under hybrid
    cpu = CpuProfile({f"{m['hidden'][0]}x{m['intermediate'][0]}": {f: rows for f in ("bf16", "int8", "int4", "int3")}},
                     1, "test")
    costs = ModelCosts("fp32", m["hidden"], m["intermediate"], cpu, DeviceCompute({"fp32": 0.01}, 32, 16, 32, "test"),
                       DEFAULT_PROFILE)
    g = torch.Generator().manual_seed(0)
    none = torch.zeros(0, 2, dtype=torch.long)
    routing = [[torch.randint(0, 8, (4, 2), generator=g) for _ in range(2)] for _ in range(6)]
    routing[2] = [none, none]  # an empty forward
    routing[3][1] = none  # a layer with no tokens
    routing[4] = [torch.tensor([[3, 3], [3, 5], [5, 5]])] * 2  # tokens routed to one expert twice
    for slots, miss in ((0, "copy"), (1, "cpu"), (3, "hybrid"), (8, "copy"), (100, "cpu")):
        rt = OffloadRuntime(loaded, "fp32", slots_per_layer=slots, policy="lru", prefetch="prev_step", miss=miss,
                            costs=costs)
        rec = TraceRecorder(m)
        rt.session.observers.append(rec)
        try:
            for f, layers in enumerate(routing):
                info = ForwardInfo(index=f, step=f % 2, block=f // 2)
                rec.on_forward(info)
                rt.on_forward(info)
                for layer, idx in enumerate(layers):
                    h = torch.randn(idx.shape[0], m["hidden"][layer], generator=g)
                    out = loaded.moe[layer].experts_module(h, idx, torch.rand(idx.shape, generator=g))
                    assert out.shape == h.shape
        finally:
            rt.close()
        st = rt.stats()
        sim = simulate(rec.trace(), slots_per_layer=slots, policy="lru", plan="fp32", prefetch="prev_step", miss=miss,
                       costs=costs)
        assert st.counters() == sim.counters() and st.per_layer == sim.per_layer, (slots, miss)
        assert st.times == pytest.approx(sim.times), (slots, miss)
        assert [row[0]["lookups"] + row[1]["lookups"] for row in st.per_forward][2] == 0
        assert st.lookups > 0
