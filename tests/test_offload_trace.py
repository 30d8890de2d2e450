"""Routing traces: recording, the file format, and the CLI commands built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from advisor.cli import app
from advisor.errors import UserError
from advisor.offload.trace import RoutingTrace, TraceRecorder, merge, record_trace
from tests.offload_helpers import GEN_KW, cli_trace, prompt_ids, tiny_llada


@pytest.fixture(scope="module")
def trace():
    return record_trace(tiny_llada(), prompt_ids(), **GEN_KW)


def test_trace_records_every_forward_layer_and_token(trace):
    assert trace.n_layers == 2 and trace.num_experts == [16, 16]
    assert trace.n_forwards == 4
    assert list(trace.fwd_block) == [0, 0, 1, 1] and list(trace.fwd_step) == [0, 1, 0, 1]
    assert len(trace.rec_forward) == trace.n_forwards * trace.n_layers
    top_k = trace.meta["top_k"][0]
    per_record = np.add.reduceat(trace.tokens.astype(np.int64), trace.rec_ptr[:-1])
    assert set(per_record.tolist()) == {(3 + 8) * top_k}  # every token of the sequence, every forward
    blk = np.add.reduceat(trace.block_tokens.astype(np.int64), trace.rec_ptr[:-1])
    assert set(blk.tolist()) == {4 * top_k}  # the 4 tokens of the block being denoised
    assert trace.generated_tokens == 8 and trace.meta["seq_len"] == 11
    assert trace.fwd_len.tolist() == [11] * 4  # each forward runs over prompt + answer
    seqs = trace.access_sequences()
    for layer, seq in enumerate(seqs):
        for (ids, ctx, tokens), r in zip(seq, np.flatnonzero(trace.rec_layer == layer), strict=True):
            a, b = trace.rec_ptr[r], trace.rec_ptr[r + 1]
            assert ids == tuple(trace.experts[a:b].tolist()) and list(ids) == sorted(set(ids))
            assert tokens == tuple(trace.tokens[a:b].tolist()) and min(tokens) > 0
            assert ctx.forward == trace.rec_forward[r]
    block = trace.access_sequences("block")
    assert all(set(b) <= set(a) and sum(tb) == 4 * top_k for sa, sb in zip(seqs, block, strict=True)
               for (a, _, _), (b, _, tb) in zip(sa, sb, strict=True))
    assert trace.nbytes / trace.n_lookups <= 32


def test_recorder_keeps_distinct_experts_and_token_counts():
    rec = TraceRecorder({"num_experts": [6], "is_diffusion": True, "prompt_len": 2, "block_length": 2, "batch": 1})
    rec.on_forward(type("F", (), {"index": 0, "step": 0, "block": 1})())
    # 6 positions (prompt 2, block 0 at 2-3, block 1 at 4-5); top-2 each; -1 and 9 are out of range
    idx = torch.tensor([[0, 1], [0, 2], [3, 0], [5, -1], [1, 0], [9, 1]])
    rec(0, idx, torch.ones(6, 2))
    t = rec.trace()
    assert t.experts.tolist() == [0, 1, 2, 3, 5] and t.tokens.tolist() == [4, 3, 1, 1, 1]
    assert t.block_tokens.tolist() == [1, 2, 0, 0, 0]  # rows 4 and 5 are block 1
    assert t.access_sequences("block")[0][0][0] == (0, 1)


def test_a_diffusion_gemma_recorder_without_on_forward_says_to_pass_it():
    """A DiffusionGemma forward that did not announce itself (no `on_forward`, or one without a block span)
    raised `block_start`'s bare "take the block's place from ForwardInfo.block_span" from inside a forward
    hook, naming nothing a recorder's user does. No CLI command reaches it (`record_trace` always passes
    `rec.on_forward`); the message now says what to pass."""
    rec = TraceRecorder({"num_experts": [4], "family": "diffusion_gemma", "is_diffusion": True, "prompt_len": 2,
                         "block_length": 2, "batch": 1})
    with pytest.raises(ValueError, match=r"pass rec\.on_forward to generate\(\.\.\., on_forward=\.\.\.\)"):
        rec(0, torch.tensor([[0, 1], [2, 3]]))
    rec.on_forward(type("F", (), {"index": 0, "step": 0, "block": 0, "block_span": (0, 2)})())
    rec(0, torch.tensor([[0, 1], [2, 3]]))  # announced with its span: recorded
    assert rec.trace().block_tokens.tolist() == [1, 1, 1, 1]


def test_llada2_trace_counts_the_tokens_of_its_aligned_blocks():
    """LLaDA2 decodes blocks aligned to multiples of the block length (the first holds the prompt's end) and
    forwards only up to the current block's end: each forward's in-block tokens are that block's positions."""
    from advisor.models.load import load_model

    loaded = load_model("tiny:llada2")
    tr = record_trace(loaded, prompt_ids(3), max_new_tokens=8, block_length=4, steps=4)
    top_k = tr.meta["top_k"][0]
    blk = np.add.reduceat(tr.block_tokens.astype(np.int64), tr.rec_ptr[:-1])
    assert set(tr.fwd_block.tolist()) == {0, 1, 2}  # positions 0-3 (prompt 0-2), 4-7, 8-11
    assert set(blk.tolist()) == {4 * top_k}


def test_generated_tokens_stop_at_eos_in_autoregressive_decoding():
    """Per-token numbers divide by the tokens really generated: an autoregressive generation that ends at eos
    counts up to its eos, not the filler after it."""
    from advisor.models.generate import generate
    from advisor.models.load import load_model

    loaded = load_model("tiny:qwen3_moe")
    ids = prompt_ids(3)
    full = record_trace(loaded, ids, max_new_tokens=8)
    assert full.n_forwards == full.generated_tokens == 8
    second = int(generate(loaded, ids, max_new_tokens=2)[0, 1])  # make the second token the eos
    loaded.model.generation_config.eos_token_id = second
    stopped = record_trace(loaded, ids, max_new_tokens=8)
    assert stopped.n_forwards == stopped.generated_tokens == 2


def test_llada2_generated_tokens_stop_at_eos_not_at_the_canvas_never_decoded():
    """LLaDA2 stops after the block in which the answer has its eos (the rest is eos filler, never decoded): its
    per-token numbers divide by the answer up to its eos, as the reference returns it, not by max_new_tokens."""
    from advisor.models.load import load_model

    loaded = load_model("tiny:llada2")
    eos = loaded.model.config.eos_token_id

    def answer_eos_third(_module, args, kwargs, out):  # positions 0-9 say token 5; from 10 on (answer's third), eos
        # the sampler asks for the block's logits only (logits_to_keep): place them in the sequence
        from advisor.models.llada_moe import kept_positions

        positions = torch.arange(args[0].shape[1])[kept_positions(kwargs.get("logits_to_keep", 0))]
        logits = out.logits.clone()
        logits[:, positions < 10, 5] = 1e4
        logits[:, positions >= 10, eos] = 1e4
        out.logits = logits
        return out

    handle = loaded.model.register_forward_hook(answer_eos_third, with_kwargs=True)
    try:
        tr = record_trace(loaded, prompt_ids(8), max_new_tokens=32, block_length=8, steps=8)
    finally:
        handle.remove()
    assert set(tr.fwd_block.tolist()) == {0}  # one block decoded: positions 8-15, eos at 10
    assert tr.generated_tokens == 3


def test_save_load_round_trip_and_bad_files(tmp_path, trace):
    path = trace.save(tmp_path / "t.npz")
    back = RoutingTrace.load(path)
    for name in ("experts", "tokens", "block_tokens", "rec_forward", "rec_layer", "rec_ptr", "fwd_block"):
        assert np.array_equal(getattr(back, name), getattr(trace, name))
    assert back.access_sequences() == trace.access_sequences()
    (tmp_path / "bad.npz").write_bytes(b"not a trace")
    with pytest.raises(UserError):
        RoutingTrace.load(tmp_path / "bad.npz")
    with pytest.raises(UserError):
        RoutingTrace.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "v1.npz", experts=np.zeros((2, 2)), rec_start=np.zeros(1))
    with pytest.raises(UserError, match="re-record"):
        RoutingTrace.load(tmp_path / "v1.npz")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".trace-")]  # no temp files left
    both = merge([trace, back])
    assert both.n_forwards == 2 * trace.n_forwards and both.generated_tokens == 16
    assert list(both.fwd_index) == sorted(both.fwd_index)
    assert both.access_sequences()[0][: len(trace.access_sequences()[0])] == trace.access_sequences()[0]


def test_recorder_infers_forwards_without_on_forward():
    rec = TraceRecorder({"num_experts": [4, 4]})
    idx = torch.tensor([[0, 1], [2, 3]])
    w = torch.full((2, 2), 0.5)
    for _ in range(3):
        rec(0, idx, w)
        rec(1, idx, w)
    t = rec.trace()
    assert t.n_forwards == 3 and list(t.rec_forward) == [0, 0, 1, 1, 2, 2]


def test_cli_trace_and_simulate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "tr.npz"
    cli_trace(runner, out)
    assert RoutingTrace.load(out).n_forwards == 4
    js = tmp_path / "r.json"
    res = runner.invoke(app, ["simulate", str(out), "--slots", "3", "--precision", "int8", "--json", str(js)],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "belady" in res.output and "modelled:" in res.output
    import json

    rows = json.loads(js.read_text())["results"]
    assert {r["policy"] for r in rows} >= {"lru", "block_aware", "belady (bound)"}
    assert all(r["vs_belady_hit_rate"] <= 1.0 + 1e-9 for r in rows)
    res = runner.invoke(app, ["simulate", str(out), "--slots", "x"])
    assert res.exit_code != 0
    res = runner.invoke(app, ["simulate", str(out), "--slots", "3", "--policy", "tide,flru", "--miss", "cpu",
                              "--json", str(js)], terminal_width=200)
    assert res.exit_code == 0, res.output
    rows = {r["policy"]: r for r in json.loads(js.read_text())["results"]}
    assert rows["tide"]["cpu_tokens"] > 0 and rows["tide"]["demand_bytes"] == 0 and rows["tide"]["miss"] == "cpu"


def test_cli_trace_meta_records_the_block_length_decoded_not_the_one_asked(tmp_path):
    # LLaDA-MoE cuts a block to max_new_tokens: 32 asked for 4 new tokens decodes one block of 4. The meta said 32
    # (the block scope counted the same positions only because the sequence ends with the block).
    runner = CliRunner()
    meta = {}
    for asked in (32, 4):
        res = runner.invoke(app, ["trace", "tiny:llada_moe", "-o", str(tmp_path / f"{asked}.npz"), "--limit", "1",
                                  "--max-new-tokens", "4", "--steps", "4", "--block-length", str(asked)])
        assert res.exit_code == 0, res.output
        meta[asked] = RoutingTrace.load(tmp_path / f"{asked}.npz").meta
    assert meta[32]["block_length"] == meta[4]["block_length"] == 4
    assert (meta[32]["block_length_asked"], meta[4]["block_length_asked"]) == (32, 4)
    a, b = RoutingTrace.load(tmp_path / "32.npz"), RoutingTrace.load(tmp_path / "4.npz")
    assert a.block_tokens is not None and np.array_equal(a.block_tokens, b.block_tokens)


def test_cli_block_scope_of_diffusion_gemma_counts_its_decoder_forwards_canvas(tmp_path):
    """DiffusionGemma's decoder forwards run over the canvas alone (the block being denoised) and its encoder
    forwards over the prompt, then the canvas just committed. The recorder placed the block at prompt_len +
    block * block_length of a prompt + answer sequence, past every row either forward has: token scope "block"
    counted nothing and `simulate --token-scope block` replayed 0 look-ups. Now: every token of a decoder
    forward, none of an encoder forward."""
    import json

    from advisor.report.blocks import forwards_from_trace

    runner = CliRunner()
    out, js = tmp_path / "dg.npz", tmp_path / "r.json"
    res = runner.invoke(app, ["trace", "tiny:diffusion_gemma", "-o", str(out), "--limit", "1", "--max-new-tokens",
                              "8", "--steps", "3", "--block-length", "4"])
    assert res.exit_code == 0, res.output
    tr = RoutingTrace.load(out)
    # per block: the encoder forward that opens it (no denoising step: -1), then 3 decoder forwards (denoising
    # steps 0-2) over its canvas
    assert tr.fwd_step.tolist() == [-1, 0, 1, 2] * 2 and tr.fwd_block.tolist() == [0] * 4 + [1] * 4
    step = dict(zip(tr.fwd_index.tolist(), tr.fwd_step.tolist(), strict=True))
    decoder = np.array([step[f] >= 0 for f in tr.rec_forward.tolist()])
    per_record = np.add.reduceat(tr.tokens.astype(np.int64), tr.rec_ptr[:-1])
    in_block = np.add.reduceat(tr.block_tokens.astype(np.int64), tr.rec_ptr[:-1])
    assert set(per_record[decoder].tolist()) == {4 * tr.meta["top_k"][0]}  # the 4-token canvas, top-k each
    assert np.array_equal(in_block[decoder], per_record[decoder]) and not in_block[~decoder].any()
    decoder_lookups = int(np.diff(tr.rec_ptr)[decoder].sum())
    assert 0 < decoder_lookups < tr.n_lookups
    lookups = {}
    for scope in ("block", "all"):
        res = runner.invoke(app, ["simulate", str(out), "--token-scope", scope, "--policy", "lru", "--json", str(js)],
                            terminal_width=200)
        assert res.exit_code == 0, res.output
        row = next(r for r in json.loads(js.read_text())["results"] if r["policy"] == "lru")
        assert row["hits"] + row["misses"] == row["lookups"]
        lookups[scope] = row["lookups"]
    assert lookups == {"block": decoder_lookups, "all": tr.n_lookups}
    # the block-reuse numbers (`advisor report`'s block section) compare the decoder forwards, no empty encoder one
    fwds = forwards_from_trace(tr, "block")
    assert [f.step for f in fwds] == [0, 1, 2] * 2 and all(all(f.layers) for f in fwds)


def test_cli_trace_of_diffusion_gemma_says_what_each_forward_ran_over(tmp_path):
    """The trace's meta said seq_len = prompt + new tokens for DiffusionGemma, a sequence none of its forwards runs
    over: its decoder forwards run over the canvas, its encoder forwards over the prompt, then the canvas just
    committed. The trace now gives each forward's length (fwd_len, counted from the rows its MoE layers routed),
    and seq_len is None for DiffusionGemma, as for autoregressive decoding. A trace written before fwd_len existed
    still loads (fwd_len None) and replays."""
    import json

    runner, out, old, js = CliRunner(), tmp_path / "dg.npz", tmp_path / "old.npz", tmp_path / "s.json"
    res = runner.invoke(app, ["trace", "tiny:diffusion_gemma", "-o", str(out), "--limit", "1", "--max-new-tokens",
                              "12", "--steps", "2", "--block-length", "4"])
    assert res.exit_code == 0, res.output
    tr = RoutingTrace.load(out)
    prompt, canvas = tr.meta["prompt_len"], tr.meta["block_length"]
    assert prompt != canvas and tr.meta["seq_len"] is None
    assert tr.fwd_step.tolist() == [-1, 0, 1] * 3
    # block 0's encoder forward reads the prompt, the next ones the canvas just committed; decoders the canvas
    assert tr.fwd_len.tolist() == [prompt, canvas, canvas] + [canvas] * 6
    with np.load(out) as z:  # as written before fwd_len: the same file without it
        np.savez_compressed(old, **{k: z[k] for k in z.files if k != "fwd_len"})
    before = RoutingTrace.load(old)
    assert before.fwd_len is None and merge([before, tr]).fwd_len is None
    for path in (old, out):
        res = runner.invoke(app, ["simulate", str(path), "--policy", "lru", "--slots", "2", "--json", str(js)])
        assert res.exit_code == 0, res.output
        assert json.loads(js.read_text())["results"][0]["lookups"] == tr.n_lookups


def test_record_random_prompts_merges_seeded_prompts():
    from advisor.offload.trace import record_random_prompts

    loaded = tiny_llada()
    two = record_random_prompts(loaded, 2, seed=5, prompt_len=3, **GEN_KW)
    g = torch.Generator().manual_seed(5)
    vocab = int(loaded.model.config.vocab_size)
    by_hand = merge([record_trace(loaded, torch.randint(3, vocab - 3, (1, 3), generator=g), **GEN_KW)
                     for _ in range(2)])
    assert two.n_forwards == 2 * 4 and two.generated_tokens == 16
    assert two.access_sequences() == by_hand.access_sequences()


def test_diffusion_gemma_generated_tokens_stop_at_eos_where_its_generate_stops():
    """DiffusionGemma's generate stops after the canvas holding eos and pads after it: per-token numbers divide
    by the answer up to its eos, not by max_new_tokens (the canvases never decoded were counted)."""
    from advisor.models.load import load_model

    loaded = load_model("tiny:diffusion_gemma")
    loaded.model.generation_config.eos_token_id, loaded.model.generation_config.pad_token_id = 7, 0

    def answer_eos_third(_module, _args, out):  # the canvas says 5 5 then eos
        out = out.clone()
        out[..., :2, 5] = 1e4
        out[..., 2:, 7] = 1e4
        return out

    handle = loaded.model.get_output_embeddings().register_forward_hook(answer_eos_third)
    try:
        tr = record_trace(loaded, prompt_ids(4), max_new_tokens=32, block_length=8, steps=4)
    finally:
        handle.remove()
    assert set(tr.fwd_block.tolist()) == {0}  # one canvas of 8 decoded, eos third
    assert tr.generated_tokens == 3


def test_cli_trace_says_diffusion_gemma_decodes_whole_canvases(tmp_path):
    """DiffusionGemma's generate decodes whole canvases, as many as the new tokens need: 10 new tokens at canvas
    length 4 denoise 3 canvases (12 tokens) and keep 10, which the trace's forwards show and its per-token
    numbers divide by. LLaDA-MoE's whole blocks were said in a note; DiffusionGemma's were not."""
    out = tmp_path / "dg.npz"
    run = CliRunner().invoke
    res = run(app, ["trace", "tiny:diffusion_gemma", "-o", str(out), "--limit", "1", "--max-new-tokens", "10",
                    "--block-length", "4", "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert ("note: tiny:diffusion_gemma decodes as diffusion_gemma: 10 new tokens at canvas (block) length 4 decode "
            "3 whole canvases (12 tokens, cut to 10)") in " ".join(res.output.split()), res.output
    tr = RoutingTrace.load(out)
    assert tr.n_forwards == 3 * (1 + 2) and tr.generated_tokens == 10  # 3 canvases (an encoder pass and 2 steps)
    exact = run(app, ["trace", "tiny:diffusion_gemma", "-o", str(out), "--limit", "1", "--max-new-tokens", "12",
                      "--block-length", "4", "--steps", "2"])
    assert exact.exit_code == 0 and "decodes as" not in exact.output, exact.output
