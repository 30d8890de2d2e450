"""Train the bundled model: a small LLaDA-MoE masked-diffusion LM on the toy arithmetic task.

    python -m scripts.train_bundled                 # the shipped run (writes advisor/models/bundled/)
    python -m scripts.train_bundled --steps 200 --out /tmp/pilot   # a quick pilot

Reproducible: every hyperparameter is in `TrainConfig`, data come from the seeded generator of
`advisor.eval.toy`, torch is seeded and runs single-threaded (bitwise reproducibility across machines is
not promised by torch's CPU kernels; the recipe and the data are). Progress goes to `<out>/train.log`;
intermediate checkpoints to `<out>/checkpoints/`.

Objective (LLaDA SFT): the prompt is never masked; each answer-canvas token (answer characters then EOS
fill up to `canvas` tokens) is masked with probability t ~ U(eps, 1], and the cross-entropy on masked
positions is averaged per sequence over its masked positions. LLaDA's estimator weights by 1/t and
divides by the canvas length instead: same expectation, but at batch 64 its rare huge weights (small t)
dominate the clipped gradient; a first recipe with it plateaued at ~5% (see TRAINING.md). A Switch-style load-balance loss keeps
all experts in use while routing stays naturally skewed (what an expert cache can exploit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from advisor.files import atomic_dir, write_atomic
from advisor.models.load import BUNDLED_DIR


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    # model (LLaDA-MoE family, toy size)
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_experts: int = 64  # LLaDA-MoE-7B's ratio: 64 experts, top-8 (the 16 x top-2 model before: TRAINING.md)
    num_experts_per_tok: int = 8
    expert_intermediate_size: int = 16  # 8 x 16 = 128 active expert units per token, as 2 x 64 before
    initializer_range: float = 0.02
    renormalize_top_k: bool = True  # experts carry full weight (see LLaDAMoESparseMoeBlock); the 7B does not
    router_init_std: float | None = None  # None: initializer_range. Larger = peakier routing from the start
    # data / objective
    canvas: int = 16  # answer tokens generated per problem (answer + EOS fill) = toy.CANVAS
    batch_size: int = 64
    mask_eps: float = 1e-3
    aux_loss_coef: float = 0.001  # 0.01 kept 64 experts near-uniform (entropy 0.98+); real routers are skewed
    loss_weighting: str = "per_masked"  # "per_masked" (low variance) or "inv_t" (LLaDA's 1/t estimator)
    suffix_mask_prob: float = 0.5  # share of sequences masked as the block sampler sees them (see diffusion_loss)
    # optimisation
    steps: int = 3000  # length of the learning-rate schedule
    stop_at: int | None = 2750  # stop early: the shipped checkpoint is step 2750 of the 3000-step schedule
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    # monitoring / decoding used for the recorded metrics
    eval_every: int = 250
    eval_examples: int = 64
    checkpoint_every: int = 250
    block_length: int = 8
    decode_steps: int = 16
    save_dtype: str = "float32"
    difficulty: dict = field(default_factory=lambda: dataclasses.asdict(_default_difficulty()))


def _default_difficulty():
    from advisor.eval.toy import DEFAULT_DIFFICULTY

    return DEFAULT_DIFFICULTY


def build_model(cfg: TrainConfig, tokenizer):
    import torch

    from advisor.models.llada_moe import LLaDAMoEConfig, LLaDAMoEModelLM

    mconf = LLaDAMoEConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        dense_intermediate_size=4 * cfg.hidden_size,
        expert_intermediate_size=cfg.expert_intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_experts=cfg.num_experts,
        num_experts_per_tok=cfg.num_experts_per_tok,
        max_position_embeddings=256,
        initializer_range=cfg.initializer_range,
        rope_theta=10000.0,
        pad_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        mask_token_id=tokenizer.mask_token_id,
        bos_token_id=None,
        router_aux_loss_coef=cfg.aux_loss_coef,
        advisor_renormalize_top_k=cfg.renormalize_top_k,
    )
    torch.manual_seed(cfg.seed)
    model = LLaDAMoEModelLM(mconf)
    if cfg.router_init_std is not None:
        # The LLaDA-MoE router does not renormalise its top-k probabilities: with a near-uniform softmax over
        # 16 experts, top-2 weights start near 1/16 and the experts barely contribute until routing sharpens.
        gen = torch.Generator().manual_seed(cfg.seed + 7)
        with torch.no_grad():
            for layer in model.model.layers:
                gate = getattr(layer.mlp, "gate", None)
                if gate is not None:
                    gate.weight.copy_(torch.randn(gate.weight.shape, generator=gen) * cfg.router_init_std)
    return model


class Batcher:
    """Turns the endless train stream into (input ids, canvas start) batches, prompts left-padded with EOS.

    Left padding without an attention mask is deliberate: batched generation pads prompts the same way,
    so the model learns to ignore leading EOS tokens."""

    def __init__(self, cfg: TrainConfig, tokenizer):
        from advisor.eval import toy

        self.cfg, self.tok = cfg, tokenizer
        self.stream = toy.generate("train", seed=cfg.seed, diff=toy.Difficulty(**_tuples(cfg.difficulty)))
        self.prompt = toy.prompt

    def next(self):

        exs = [next(self.stream) for _ in range(self.cfg.batch_size)]
        prompts = [self.tok(self.prompt(e.question), add_special_tokens=False)["input_ids"] for e in exs]
        answers = [self.tok(e.answer, add_special_tokens=False)["input_ids"] for e in exs]
        return encode_batch(prompts, answers, self.cfg.canvas, self.tok.eos_token_id)


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if v is not None else None for k, v in d.items()}


def encode_batch(prompts: list[list[int]], answers: list[list[int]], canvas: int, eos: int):
    import torch

    plen = max(len(p) for p in prompts)
    rows = []
    for p, a in zip(prompts, answers, strict=True):
        if len(a) > canvas:
            raise ValueError(f"answer of {len(a)} tokens exceeds the canvas of {canvas}")
        rows.append([eos] * (plen - len(p)) + p + a + [eos] * (canvas - len(a)))
    return torch.tensor(rows, dtype=torch.long), plen


def router_capture(model):
    """Collect every MoE layer's router logits during a forward (for the load-balance loss)."""
    captured: list = []
    handles = []
    for layer in model.model.layers:
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None:
            handles.append(gate.register_forward_hook(lambda _m, _i, out: captured.append(out)))
    return captured, handles


def load_balance_loss(logits_per_layer: list, top_k: int):
    """Switch-Transformer auxiliary loss: E * sum_e (fraction of routed slots to e) * (mean prob of e)."""
    import torch
    import torch.nn.functional as F

    total = 0.0
    for logits in logits_per_layer:
        probs = F.softmax(logits.float(), dim=-1)
        idx = probs.topk(top_k, dim=-1).indices
        frac = torch.zeros_like(probs).scatter_(1, idx, 1.0).mean(0) / top_k
        total = total + probs.shape[-1] * (frac * probs.mean(0)).sum()
    return total / max(1, len(logits_per_layer))


def grouped_moe_forward(block, x):
    """`LLaDAMoESparseMoeBlock.forward` with the experts as three grouped matmuls (training only).

    The model's own forward runs one small matmul chain per routed expert, a python loop that dominates a
    64-expert training step on CPU; here the routed slots are sorted by expert and every expert runs in one
    `grouped_mm` over stacked weights. Same routing, same SwiGLU, same weighted sum (only the order of the
    float additions differs); tests/test_eval_train.py checks the logits against the model's forward."""
    import torch
    import torch.nn.functional as F

    shape = x.shape
    hidden = x.reshape(-1, shape[-1])
    _, index, weights = block.route(hidden)
    flat = index.reshape(-1)
    order = flat.argsort(stable=True)
    token = order // index.shape[1]
    offs = torch.bincount(flat, minlength=block.num_experts).cumsum(0).to(torch.int32)
    experts = block.experts

    def stack(name: str):  # [E, in, out]: rebuilt every step, so gradients reach each expert's own Linear
        return torch.stack([getattr(e, name).weight for e in experts]).transpose(1, 2)

    xs = hidden[token]
    act = experts.act_fn(F.grouped_mm(xs, stack("gate_proj"), offs=offs)) * F.grouped_mm(xs, stack("up_proj"), offs=offs)
    y = F.grouped_mm(act, stack("down_proj"), offs=offs) * weights.reshape(-1)[order, None].to(hidden.dtype)
    return torch.zeros_like(hidden).index_add(0, token, y).reshape(shape)


@contextmanager
def grouped_experts(model):
    """Run every MoE block of `model` through `grouped_moe_forward` inside the block (training steps)."""
    from advisor.models.llada_moe import LLaDAMoESparseMoeBlock

    blocks = [m for m in model.modules() if isinstance(m, LLaDAMoESparseMoeBlock)]
    for b in blocks:
        b.forward = lambda x, b=b: grouped_moe_forward(b, x)
    try:
        yield
    finally:
        for b in blocks:
            del b.forward


def diffusion_loss(model, ids, canvas_start: int, cfg: TrainConfig, gen):
    """LLaDA's masked-diffusion SFT loss on the answer canvas, plus the weighted load-balance loss."""
    import torch
    import torch.nn.functional as F

    mask_id = model.config.mask_token_id
    b, length = ids.shape
    n_canvas = length - canvas_start
    t = torch.rand(b, 1, generator=gen) * (1 - cfg.mask_eps) + cfg.mask_eps
    masked = torch.rand(b, n_canvas, generator=gen) < t
    if cfg.suffix_mask_prob > 0:
        # As the block sampler sees the canvas: a clean prefix, a partly masked current block, a fully masked
        # future. Without it the model learns to copy results from their later mentions ("59-8=", "#### 51")
        # instead of computing them, and block decoding, which writes the first mention first, fails.
        pos = torch.arange(n_canvas)[None]
        cut = torch.randint(0, n_canvas, (b, 1), generator=gen)
        suffix = (pos >= cut) | ((pos >= cut - cfg.block_length) & masked)
        use = torch.rand(b, 1, generator=gen) < cfg.suffix_mask_prob
        masked = torch.where(use, suffix, masked)
    masked = masked.to(ids.device)
    t = t.to(ids.device)
    noisy = ids.clone()
    noisy[:, canvas_start:][masked] = mask_id
    captured, handles = router_capture(model)
    try:
        with grouped_experts(model):
            logits = model(noisy).logits[:, canvas_start:]
    finally:
        for h in handles:
            h.remove()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, canvas_start:].reshape(-1), reduction="none")
    ce = ce.view(b, n_canvas) * masked
    if cfg.loss_weighting == "inv_t":
        loss = (ce / t).sum() / (b * n_canvas)
    else:  # same expectation (E[#masked] = t * n_canvas) without the 1/t spikes of small t
        loss = (ce.sum(1) / masked.sum(1).clamp(min=1)).mean()
    aux = load_balance_loss(captured, model.config.num_experts_per_tok)
    return loss, aux


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def expert_usage(model, ids) -> list[list[int]]:
    """Per MoE layer, how many routed slots each expert received on `ids` (for the metrics file)."""
    import torch

    captured, handles = router_capture(model)
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
    k = model.config.num_experts_per_tok
    return [
        torch.bincount(lg.topk(k, dim=-1).indices.reshape(-1), minlength=lg.shape[-1]).tolist() for lg in captured
    ]


def save(model, tokenizer, out: Path, meta: dict, dtype: str) -> None:
    """Write config.json, model.safetensors, tokenizer files and metadata into `out` (via a temp dir)."""
    import shutil

    import torch

    with atomic_dir(out) as tmp:
        tmp.chmod(0o755)
        device = model.device
        # The decoding the model was trained and measured with travels in its config (see load.gen_defaults).
        gen = meta.get("generation", {})
        model.config.advisor_generation = {k: gen[k] for k in ("steps", "block_length") if k in gen}
        model.to("cpu", getattr(torch, dtype)).save_pretrained(tmp, safe_serialization=True)
        model.to(device, torch.float32)
        tokenizer.save_pretrained(tmp)
        (tmp / "advisor_bundled.json").write_text(json.dumps(meta, indent=2) + "\n")
        for extra in ("TRAINING.md", "metrics.json"):
            if (out / extra).exists() and not (tmp / extra).exists():
                shutil.copy2(out / extra, tmp / extra)


def quick_accuracy(model, tokenizer, examples, cfg: TrainConfig) -> float:
    """Exact-match accuracy of the final number on `examples` with the project's LLaDA sampler."""
    import torch

    from advisor.eval.gsm8k import extract_strict
    from advisor.eval.toy import prompt
    from advisor.models.samplers import llada_generate

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            chunk = examples[i : i + 64]
            prompts = [tokenizer(prompt(e.question), add_special_tokens=False)["input_ids"] for e in chunk]
            plen = max(len(p) for p in prompts)
            x = torch.tensor([[tokenizer.eos_token_id] * (plen - len(p)) + p for p in prompts], device=model.device)
            out = llada_generate(
                model, x, mask_id=tokenizer.mask_token_id, gen_length=cfg.canvas,
                steps=cfg.decode_steps, block_length=cfg.block_length,
            )
            texts = tokenizer.batch_decode(out[:, plen:], skip_special_tokens=True)
            correct += sum(extract_strict(t) == str(e.result) for t, e in zip(texts, chunk, strict=True))
    model.train()
    return correct / len(examples)


def train(cfg: TrainConfig, out: Path, log_path: Path | None = None, device: str = "cpu") -> dict:
    import torch

    from advisor.eval import toy
    from advisor.eval.chartok import build_tokenizer

    torch.set_num_threads(int(os.environ.get("ADVISOR_TRAIN_THREADS", "1")))
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer()
    model = build_model(cfg, tokenizer).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.betas,
    )
    batcher = Batcher(cfg, tokenizer)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    monitor = toy.validation_set(cfg.eval_examples, diff=toy.Difficulty(**_tuples(cfg.difficulty)))
    log_path = log_path or out.parent / f"{out.name}.train.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("a")

    def emit(rec: dict) -> None:
        log.write(json.dumps(rec) + "\n")
        log.flush()

    emit({"event": "start", "params": n_params, "config": dataclasses.asdict(cfg)})
    start, cpu_start = time.perf_counter(), time.process_time()
    history = []
    ema = None
    last_step = min(cfg.steps, cfg.stop_at or cfg.steps)
    for step in range(last_step):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        ids, canvas_start = batcher.next()
        ids = ids.to(device)
        loss, aux = diffusion_loss(model, ids, canvas_start, cfg, gen)
        opt.zero_grad(set_to_none=True)
        (loss + cfg.aux_loss_coef * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 25 == 0:
            emit({"step": step, "loss": round(loss.item(), 4), "ema": round(ema, 4), "aux": round(float(aux.detach()), 4),
                  "elapsed_s": round(time.perf_counter() - start, 1)})
        last = step + 1 == last_step
        if (step + 1) % cfg.eval_every == 0 or last:
            acc = quick_accuracy(model, tokenizer, monitor, cfg)
            history.append({"step": step + 1, "monitor_accuracy": acc,
                            "elapsed_s": round(time.perf_counter() - start, 1)})
            emit({"event": "eval", **history[-1]})
        if (step + 1) % cfg.checkpoint_every == 0 and not last:
            save(model, tokenizer, out.parent / f"{out.name}.checkpoints" / f"step{step + 1}",
                 {"step": step + 1}, "float32")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    meta = {
        "task": "toy",
        "trained_by": "python -m scripts.train_bundled",
        "train_config": dataclasses.asdict(cfg),
        "params": n_params,
        "train_seconds": round(seconds, 1),
        "train_seconds_source": f"measured:wall-clock ({device}, torch threads={torch.get_num_threads()})",
        # On a shared machine the wall clock includes time spent waiting for a core; this is the core's own time.
        "train_cpu_seconds": round(cpu_seconds, 1),
        "train_cpu_seconds_source": "measured:process-cpu-time",
        "device": device,
        "generation": {"max_new_tokens": cfg.canvas, "steps": cfg.decode_steps, "block_length": cfg.block_length,
                       "remasking": "low_confidence"},
        "monitor_history": history,
    }
    save(model, tokenizer, out, meta, cfg.save_dtype)
    emit({"event": "done", "seconds": round(seconds, 1)})
    log.close()
    return meta


def routing_stats(loaded, examples, prompt_fn) -> dict:
    """How unevenly the router uses experts on the task's text (what an expert cache can exploit)."""
    import torch

    tok = loaded.tokenizer
    rows = [tok(prompt_fn(e) + e["answer"], add_special_tokens=False)["input_ids"] for e in examples]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tok.eos_token_id] * (width - len(r)) + r for r in rows])
    usage = expert_usage(loaded.model, ids)
    out = []
    for layer, counts in enumerate(usage):
        total = sum(counts)
        share = sorted((c / total for c in counts), reverse=True)
        entropy = -sum(p * math.log(p) for p in share if p > 0) / math.log(len(share))
        out.append({"layer": layer, "counts": counts, "top4_share": round(sum(share[:4]), 4),
                    "min_share": round(share[-1], 5), "normalized_entropy": round(entropy, 4)})
    return {"source": f"counted (top-k routing of {len(rows)} test prompts + answers, teacher-forced)",
            "layers": out}


REUSE_BLOCK_LENGTHS = (8, 16, 32)


def block_reuse(loaded, task, n_prompts: int = 8) -> dict:
    """Distinct experts per MoE layer per forward and step-to-step reuse at block lengths 8/16/32.

    Each of `n_prompts` test prompts generates two blocks at each length (one token per step), as
    `benchmarks/block_reuse.py` does; counted over the whole sequence and over the block's own tokens."""
    import torch

    from advisor.eval.run import encode_prompt
    from advisor.report.blocks import block_length_study

    prompts = [torch.tensor([encode_prompt(loaded.tokenizer, task.prompt(ex))]) for ex in task.examples[:n_prompts]]
    res = block_length_study(loaded, prompts, REUSE_BLOCK_LENGTHS, label="bundled", policies=("lru",),
                             fractions=(0.25, 0.5))
    keep = ("block_length", "prompts", "forwards", "num_experts", "distinct_mean", "distinct_max",
            "jaccard_within_block", "jaccard_across_blocks", "block_tokens")
    rows = [{k: r[k] for k in keep} for r in res["rows"]]
    for r in rows:
        r["distinct_fraction"] = round(r["distinct_mean"] / r["num_experts"], 4)
        r["block_tokens"]["distinct_fraction"] = round(r["block_tokens"]["distinct_mean"] / r["num_experts"], 4)
    return {"source": f"counted (routing traces of {len(prompts)} test prompts, 2 blocks each, one token per step)",
            "rows": rows}


def finalize(out: Path = BUNDLED_DIR, sweep_json: Path | None = None) -> dict:
    """Measure the saved model on the full held-out test set and write metrics.json + TRAINING.md."""
    import torch

    from advisor.eval.run import evaluate
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model

    torch.set_num_threads(1)
    loaded = load_model(str(out))
    task = get_task("toy")
    res = evaluate(loaded, task)
    meta = json.loads((out / "advisor_bundled.json").read_text())
    cfg = meta["train_config"]
    metrics = {
        "params": sum(p.numel() for p in loaded.model.parameters()),
        "checkpoint_bytes": (out / "model.safetensors").stat().st_size,
        "moe_layers": len(loaded.moe), "num_experts": cfg["num_experts"], "top_k": cfg["num_experts_per_tok"],
        "test_accuracy": {**res.summary(), "decoding": meta["generation"]},
        "routing": routing_stats(loaded, task.examples[:128], task.prompt),
        "block_reuse": block_reuse(loaded, task),
        **{k: meta[k] for k in ("train_seconds", "train_seconds_source", "train_cpu_seconds",
                                "train_cpu_seconds_source") if k in meta},
        "monitor_history": meta["monitor_history"],
    }
    if sweep_json is not None:
        metrics["precision_sweep"] = json.loads(Path(sweep_json).read_text())
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_atomic(out / "TRAINING.md", training_md(meta, metrics))
    return metrics


def training_md(meta: dict, metrics: dict) -> str:
    """The human-readable record of how the shipped checkpoint was made and what it scores."""
    cfg = meta["train_config"]
    acc = metrics["test_accuracy"]
    lines = [
        "# The bundled model",
        "",
        "A small LLaDA-MoE masked-diffusion LM (`advisor/models/llada_moe.py`: bidirectional attention, softmax",
        "top-k routed SwiGLU experts, mask-token diffusion) trained on the synthetic arithmetic word problems",
        "of `advisor/eval/toy.py` (GSM8K answer format: the working, then `#### N`). Its top-k router weights are",
        "renormalised (`advisor_renormalize_top_k`, a project extension; the published LLaDA-MoE does not).",
        "",
        "## Reproduce",
        "",
        "    python -m scripts.train_bundled            # trains and writes this directory",
        "    python -m scripts.train_bundled --finalize # measures it and writes metrics.json / TRAINING.md",
        "",
        f"Recorded run: {meta['train_seconds']:.0f} s ({meta['train_seconds_source']})"
        + (f", {meta['train_cpu_seconds']:.0f} s of one core ({meta['train_cpu_seconds_source']}; the machine was "
           "shared, so the wall clock includes waiting for the core)" if "train_cpu_seconds" in meta else "")
        + f"; training device: {meta.get('device', 'cpu')}.",
        "",
        "## Architecture",
        "",
        f"- {metrics['params']:,} parameters, {cfg['num_hidden_layers']} MoE layers x {cfg['num_experts']} experts, "
        f"top-{cfg['num_experts_per_tok']}, hidden {cfg['hidden_size']}, expert FFN {cfg['expert_intermediate_size']}, "
        f"{cfg['num_attention_heads']} heads",
        f"- character tokenizer (printable ASCII + EOS + mask), `{metrics['checkpoint_bytes']:,}` bytes of "
        f"safetensors ({cfg['save_dtype']})",
        "",
        "## Recipe (all in `TrainConfig`)",
        "",
        "```json",
        json.dumps(cfg, indent=2),
        "```",
        "",
        "## Held-out accuracy",
        "",
        f"- full precision: **{acc['accuracy']:.1%}** ({acc['correct']}/{acc['n']}, 95% Wilson CI "
        f"{acc['ci_low']:.1%}-{acc['ci_high']:.1%}), {acc['source']}, decoding {acc['decoding']}, "
        f"{acc['seconds_per_example']:.3f} s/example ({acc['seconds_source']})",
        "- validation accuracy during training (64 problems, disjoint from train and test):",
        "",
    ]
    lines += [f"  - step {h['step']}: {h['monitor_accuracy']:.1%}" for h in metrics["monitor_history"]]
    sweep = metrics.get("precision_sweep")
    if sweep:
        lines += ["", "## Accuracy vs expert precision (benchmarks/accuracy_vs_precision.py)", "",
                  "| format | accuracy | 95% CI | KL | top-1 | expert bytes | s/example |", "|---|---|---|---|---|---|---|"]
        for r in sweep:
            lines.append(f"| {r['format']} | {r['accuracy']:.1%} ({r['correct']}/{r['n']}) | {r['ci_low']:.0%}-"
                         f"{r['ci_high']:.0%} | {r['fidelity_kl']:.2e} | {r['fidelity_top1']:.1%} | "
                         f"{r['expert_bytes']:,} | {r['seconds_per_example']:.3f} |")
    routing = metrics["routing"]["layers"]
    lines += ["", "## Routing", "", f"Source: {metrics['routing']['source']}.", ""]
    lines += [f"- layer {r['layer']}: top-4 experts take {r['top4_share']:.0%} of routed slots, least used "
              f"{r['min_share']:.1%}, normalized entropy {r['normalized_entropy']:.2f}" for r in routing]
    reuse = metrics.get("block_reuse")
    if reuse:
        lines += ["", "## Experts per denoising step (benchmarks/block_reuse.py measures the same)", "",
                  f"Source: {reuse['source']}. Distinct experts per MoE layer per forward (of "
                  f"{metrics['num_experts']}), and the Jaccard overlap of consecutive forwards within a block:", "",
                  "| block length | whole sequence | block's own tokens | overlap, whole sequence | overlap, block tokens |",
                  "|---|---|---|---|---|"]
        for r in reuse["rows"]:
            bt = r["block_tokens"]
            lines.append(f"| {r['block_length']} | {r['distinct_mean']:.1f} ({r['distinct_fraction']:.0%}) | "
                         f"{bt['distinct_mean']:.1f} ({bt['distinct_fraction']:.0%}) | "
                         f"{r['jaccard_within_block']:.2f} | {bt['jaccard_within_block']:.2f} |")
    lines += ["", "## History", "",
              "- Two-step problems (`a-b=r. r+c=s. #### s`, operands spread through the sentence), LLaDA's 1/t loss:",
              "  ~5% held-out after 1200/1800/3000 steps (GPU sweep). Per-masked-token loss, easier ranges, a",
              "  masked-future curriculum (`suffix_mask_prob`) and a peakier router init: 3-12% within the CPU budget.",
              "- Diagnosis: the model must find operands ~45 characters from the answer (content-based copying is",
              "  slow to learn), and with the result written twice it learns to copy the result from its later",
              "  mention instead of computing it; top-2 of 16 un-renormalised router weights (~0.3) also damp the",
              "  experts.",
              "- Fixes, each needed: operands right-aligned at fixed distances from the answer, the working written",
              "  without the result, one step of 2-digit +/- 2..49, top-k renormalisation, a 16-token canvas.",
              "- Shipped until 2026-12-03: 16 experts per layer, top-2, expert FFN 64, step 1200 of a 1500-step",
              "  schedule (lr 2e-3, load-balance 0.01): 96.6% held-out (int2 91.6%), validation 23% at step 750 and",
              "  98% at step 1200, 449 s. Its routing was nearly uniform (entropy 0.98-0.99; one forward used 15.8 of",
              "  16 experts at block 8), so LRU, LFU and Belady's bound almost coincided on it.",
              "- LLaDA-MoE-7B's ratio, 64 experts, top-8, expert FFN 16 (the same 128 active expert units per token),",
              "  load-balance 0.001, that recipe otherwise unchanged: validation 0/1.6/6.2/20.3% at steps",
              "  300/600/900/1200 of a 1500-step schedule at 0.89 s of one core per step (the model's per-expert",
              "  loop; log `benchmarks/results/2026-12-03_cpu_train_bundled_64x8.jsonl`).",
              "- Fix: training runs the experts as three grouped matmuls over stacked weights (`grouped_moe_forward`,",
              "  the model's own math; a test compares logits and gradients): ~0.55 s of one core per step, so a",
              "  3000-step schedule fits in 30 minutes. With lr 3e-3 the phase transition came between steps 1750",
              "  and 2500 (validation above). Shipped: the step-2750 checkpoint of that run (= what `stop_at=2750`",
              "  ends with: the in-training evaluation draws no training randomness; 1647 s of one core to there).",
              "  Deterministic: a rerun of the recipe to step 250 wrote bitwise the same weights as the run's",
              "  step-250 checkpoint. Tried beside it, stopped for CPU: lr 5e-3 (0% at step 250, balance loss 2.0",
              "  vs 1.5); sparse upcycling (the 16 x 2 recipe, then each FFN-64 expert split into four FFN-16",
              "  experts with its router row copied, noise 0.02, lr 1e-3): source 91% at step 1200, 81% after 250",
              "  fine-tuning steps. Not shipped: the from-scratch run passed the bar, and its routing is learned",
              "  rather than four copies of a 16-expert router. Log:",
              "  `benchmarks/results/2026-12-03_cpu_train_bundled_64x8_lr3e-3.jsonl`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR)
    parser.add_argument("--log", type=Path, default=None)
    parser.add_argument("--device", default="cpu", help="cpu (the recorded run) or cuda (sweeps)")
    parser.add_argument("--steps", type=int, default=None, help="override TrainConfig.steps (pilots)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override any TrainConfig field (pilots), e.g. --set lr=0.001")
    parser.add_argument("--finalize", action="store_true", help="measure --out and write metrics.json/TRAINING.md")
    parser.add_argument("--sweep", type=Path, default=None, help="accuracy_vs_precision JSON to include")
    args = parser.parse_args(argv)
    if args.finalize:
        metrics = finalize(args.out, args.sweep)
        print(json.dumps(metrics["test_accuracy"], indent=2))
        return
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.steps is not None:
        overrides["steps"] = args.steps
    cfg = dataclasses.replace(TrainConfig(), **overrides)
    meta = train(cfg, args.out, args.log, args.device)
    print(json.dumps({k: meta[k] for k in ("params", "train_seconds", "monitor_history")}, indent=2))


if __name__ == "__main__":
    main()
