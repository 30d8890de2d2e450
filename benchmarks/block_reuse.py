"""Block diffusion and the expert cache: how block length (8/16/32) changes expert reuse, hit rates and transfer.

    python benchmarks/block_reuse.py                       # bundled model (if present) + LLaDA-MoE-shaped models
    python benchmarks/block_reuse.py --quick               # smaller, for a smoke run (seconds)
    python benchmarks/block_reuse.py -o benchmarks/results/block_reuse

Measured from routing traces (counted, no timing involved):
  * distinct experts per MoE layer per forward (the working set one denoising step needs), over the whole
    sequence and over the block's own tokens (what a sampler that caches the other positions computes);
  * Jaccard overlap of consecutive forwards' expert sets, within a block vs across a block boundary;
  * FP16 no-cache bytes per generated token, and hit rate vs slots (LRU, block-aware, Belady's MIN).
Models: the bundled dLLM on its task prompts, and random-weight models with LLaDA-MoE's routing shape
(64 experts, top-8, no shared expert) at toy width - routing of random weights is not trained routing, so
those rows show the mechanics (how block length and step reuse interact), not LLaDA-MoE's own numbers.
Writes block_reuse.json and block_reuse.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def llada_moe_shaped(seed: int = 0, *, experts: int = 64, top_k: int = 8, layers: int = 4, hidden: int = 64) -> Any:
    """A random LLaDA-MoE with the published routing shape (64 experts, top-8) at toy width."""
    from advisor.models import tiny
    from advisor.models.load import loaded_from

    model = tiny.llada_moe_shaped(seed, experts=experts, top_k=top_k, layers=layers, hidden=hidden, expert_ffn=32)
    return loaded_from(model, None, "llada_moe", f"random LLaDA-MoE-shaped (E={experts}, k={top_k}, seed={seed})")


def random_prompts(n: int, vocab: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab - 8, (1, int(torch.randint(12, 25, (1,), generator=g))), generator=g)
            for _ in range(n)]


def bundled_case(n_prompts: int) -> tuple[Any, list[torch.Tensor]] | None:
    """The bundled model with its task's first prompts, or None when the bundled model is not trained yet."""
    from advisor.errors import UserError
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model

    try:
        loaded = load_model("bundled")
    except UserError as e:
        print(f"bundled model skipped: {e}", file=sys.stderr)
        return None
    from advisor.eval.run import encode_prompt

    task = get_task("toy", limit=n_prompts)  # the same prompts, encoded as evaluation and tuning encode them
    prompts = [torch.tensor([encode_prompt(loaded.tokenizer, task.prompt(ex))]) for ex in task.examples]
    return loaded, prompts


def run(block_lengths: tuple[int, ...], n_prompts: int, seeds: tuple[int, ...], blocks: int) -> dict[str, Any]:
    from advisor.report.blocks import block_length_study

    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    cases: list[tuple[str, Any, list[torch.Tensor]]] = []
    b = bundled_case(n_prompts)
    if b is not None:
        cases.append(("bundled", *b))
    for s in seeds:
        loaded = llada_moe_shaped(seed=s)
        cases.append((f"llada-moe-shaped-s{s}", loaded, random_prompts(n_prompts, 256, seed=100 + s)))
    for label, loaded, prompts in cases:
        t0 = time.perf_counter()
        res = block_length_study(loaded, prompts, block_lengths, label=label, blocks=blocks)
        for r in res["rows"]:
            r["seconds"] = time.perf_counter() - t0
        rows += res["rows"]
        curves += res["curves"]
        print(f"{label}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return {"schema": "moe-advisor/block-reuse@1", "device": "cpu", "source": "counted:routing-traces",
            "block_lengths": list(block_lengths), "prompts": n_prompts, "blocks_per_prompt": blocks,
            "rows": rows, "curves": curves}


def print_table(result: dict[str, Any]) -> None:
    print(f"{'model':<28} {'L':>3} {'fwd':>5} {'E':>4} {'distinct/layer':>14} {'block tok':>9} {'J within':>9} "
          f"{'J across':>9} {'J blk tok':>9} {'no-cache KiB/tok':>17}  hit@50% (lru / block_aware / belady)")
    for r in result["rows"]:
        hits = {c["policy"]: c for c in result["curves"]
                if c["model"] == r["model"] and c["block_length"] == r["block_length"]}

        def at_half(c: dict[str, Any]) -> float:
            i = min(range(len(c["slots_fraction"])), key=lambda i: abs(c["slots_fraction"][i] - 0.5))
            return c["hit_rate"][i]

        hs = " / ".join(f"{at_half(hits[p]):.3f}" for p in ("lru", "block_aware", "belady") if p in hits)
        jw = r["jaccard_within_block"]
        ja = r["jaccard_across_blocks"]
        bt = r["block_tokens"]
        jb = bt["jaccard_within_block"]
        print(f"{r['model']:<28} {r['block_length']:>3} {r['forwards']:>5} {r['num_experts']:>4} "
              f"{r['distinct_mean']:>14.2f} {bt['distinct_mean']:>9.2f} {jw if jw is None else f'{jw:.3f}':>9} "
              f"{ja if ja is None else f'{ja:.3f}':>9} {jb if jb is None else f'{jb:.3f}':>9} "
              f"{r['no_cache_bytes_per_token'] / 1024:>17.1f}  {hs}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--block-lengths", default="8,16,32")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--blocks", type=int, default=2, help="blocks generated per prompt")
    ap.add_argument("--quick", action="store_true", help="2 prompts, one seed")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "benchmarks" / "results" / "block_reuse")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    lengths = tuple(int(x) for x in a.block_lengths.split(","))
    seeds = (0,) if a.quick else tuple(int(x) for x in a.seeds.split(","))
    result = run(lengths, 2 if a.quick else a.prompts, seeds, a.blocks)
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = a.out / "block_reuse.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(a.out / "block_reuse.json")
    from advisor.report.plots import block_reuse

    block_reuse(result["rows"], [c for c in result["curves"] if c["policy"] != "block_aware"],
                a.out / "block_reuse.png")
    print_table(result)
    print(f"wrote {a.out / 'block_reuse.json'} and block_reuse.png", file=sys.stderr)
    print("RESULT " + " ".join(
        f"{r['model']}_L{r['block_length']}_distinct={r['distinct_mean']:.2f} "
        f"{r['model']}_L{r['block_length']}_distinct_block_tokens={r['block_tokens']['distinct_mean']:.2f}"
        for r in result["rows"] if r["model"] in ("bundled", "llada-moe-shaped-s0")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
