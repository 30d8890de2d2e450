"""The report's figures, drawn with matplotlib's Agg backend (no display needed) and saved as PNG.

Each function takes plain data (already computed, with its provenance) and writes one file; none of them
computes a metric, so a figure can never disagree with the tables beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)

PRECISION_COLORS = {"fp16": "#1f77b4", "bf16": "#1f77b4", "int8": "#ff7f0e", "int4": "#2ca02c"}
POLICY_STYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))]
DPI = 110


def _color(precision: str, i: int = 0) -> str:
    return PRECISION_COLORS.get(precision.split(":")[0], f"C{(i + 3) % 10}")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def transfer_vs_slots(sweep: Any, path: Path, *, x: str = "slots") -> Path:
    """H2D bytes and transfer time per generated token vs GPU expert slots (or cache bytes).

    One curve per (precision, policy); Belady's MIN as a dotted black-edged curve per precision; the
    FP16-no-cache baseline as a horizontal line.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    precisions = list(dict.fromkeys(p.precision for p in sweep.points))
    policies = sorted({p.policy for p in sweep.points if p.policy != "belady"})
    for ip, prec in enumerate(precisions):
        for jp, pol in enumerate([*policies, "belady"]):
            pts = sorted((p for p in sweep.points if p.precision == prec and p.policy == pol), key=lambda p: p.slots)
            if not pts:
                continue
            xs = [p.slots if x == "slots" else p.cache_bytes / 2**20 for p in pts]
            style = dict(color=_color(prec, ip), linestyle=POLICY_STYLES[jp % len(POLICY_STYLES)], marker=".")
            if pol == "belady":
                style.update(linestyle=":", marker="x", linewidth=2.0)
            label = f"{prec} / {pol}" + (" (bound)" if pol == "belady" else "")
            axes[0].plot(xs, [p.bytes_per_token / 2**20 for p in pts], label=label, **style)
            axes[1].plot(xs, [p.transfer_ms_per_token for p in pts], label=label, **style)
    axes[0].axhline(sweep.baseline_bytes_per_token / 2**20, color="black", linewidth=1, label="fp16, no cache")
    axes[1].axhline(sweep.baseline_ms_per_token, color="black", linewidth=1, label="fp16, no cache")
    xlabel = "GPU expert slots per MoE layer" if x == "slots" else "GPU expert-cache memory (MiB, all layers)"
    axes[0].set(xlabel=xlabel, ylabel="H2D MiB per generated token", title="Bytes copied host->device (counted)")
    axes[1].set(xlabel=xlabel, ylabel="ms per generated token", title=f"Transfer time ({sweep.time_source})")
    for ax in axes:
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2, loc="upper right")
    return _save(fig, path)


def accuracy_by_plan(rows: Sequence[Any], path: Path) -> Path:
    """Task accuracy with its confidence interval, and fidelity (KL, top-1), per precision plan."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    labels = [r.plan for r in rows]
    xs = range(len(rows))
    acc = [r.accuracy if r.accuracy is not None else float("nan") for r in rows]
    lo = [max(0.0, a - r.ci_low) if r.ci_low is not None else 0.0 for a, r in zip(acc, rows, strict=True)]
    hi = [max(0.0, r.ci_high - a) if r.ci_high is not None else 0.0 for a, r in zip(acc, rows, strict=True)]
    colors = [_color(r.plan, i) for i, r in enumerate(rows)]
    axes[0].bar(xs, acc, yerr=[lo, hi], capsize=5, color=colors)
    axes[0].set(ylabel="task accuracy", title="Task accuracy (95% CI)", ylim=(0, 1.05))
    kl = [r.fidelity_kl if r.fidelity_kl is not None else float("nan") for r in rows]
    top1 = [r.fidelity_top1 if r.fidelity_top1 is not None else float("nan") for r in rows]
    axes[1].bar([i - 0.2 for i in xs], top1, width=0.4, color=colors, label="top-1 agreement")
    axes[1].set(ylabel="top-1 agreement with full precision", ylim=(0, 1.05), title="Fidelity vs full precision")
    ax2 = axes[1].twinx()
    ax2.bar([i + 0.2 for i in xs], kl, width=0.4, color="grey", alpha=0.6, label="KL")
    ax2.set_ylabel("KL(full || plan), nats")
    for ax in axes:
        ax.set_xticks(list(xs), labels, rotation=20, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def pareto(trials: Sequence[Any], front_numbers: set[int], recommended: Sequence[Any], path: Path) -> Path:
    """Every finished trial as transfer vs accuracy, coloured by GPU memory; front and recommendations marked."""
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    xs = [t.values["h2d_bytes_per_token"] / 2**20 for t in trials]
    ys = [t.values.get("accuracy", float("nan")) for t in trials]
    mem = [t.values.get("peak_gpu_bytes", 0.0) / 2**20 for t in trials]
    sc = ax.scatter(xs, ys, c=mem, cmap="viridis", s=30, alpha=0.8, label="trial")
    fig.colorbar(sc, ax=ax, label="peak GPU memory (MiB)")
    front = sorted((t for t in trials if t.number in front_numbers), key=lambda t: t.values["h2d_bytes_per_token"])
    if front:
        ax.plot(
            [t.values["h2d_bytes_per_token"] / 2**20 for t in front],
            [t.values.get("accuracy", float("nan")) for t in front],
            "o-", mfc="none", mec="red", color="red", markersize=10, linewidth=1, label="Pareto front",
        )
    for r in recommended:
        ax.scatter([r.bytes_per_token / 2**20], [r.accuracy], marker="*", s=260, color="gold", edgecolor="black",
                   zorder=5)
        ax.annotate(r.label, (r.bytes_per_token / 2**20, r.accuracy), textcoords="offset points", xytext=(6, 6),
                    fontsize=8)
    if recommended:
        ax.scatter([], [], marker="*", s=160, color="gold", edgecolor="black", label="recommended (budget)")
    ax.set(xlabel="H2D MiB per generated token (lower is better)", ylabel="task accuracy (higher is better)",
           title="Trials of the study: transfer vs accuracy vs memory")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def block_reuse(rows: Sequence[dict[str, Any]], hit_curves: Sequence[dict[str, Any]], path: Path) -> Path:
    """Block diffusion: distinct experts per forward, step-to-step overlap and hit rate vs slots by block length."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = 0.8 / max(1, len(models))
    for im, m in enumerate(models):
        rs = sorted((r for r in rows if r["model"] == m), key=lambda r: r["block_length"])
        idx = [i + im * width for i in range(len(rs))]
        axes[0].bar(idx, [r["distinct_mean"] for r in rs], width=width, label=m, color=f"C{im}")
        axes[1].plot([r["block_length"] for r in rs], [r["jaccard_within_block"] for r in rs], "o-", color=f"C{im}",
                     label=f"{m}: within block")
        axes[1].plot([r["block_length"] for r in rs], [r["jaccard_across_blocks"] for r in rs], "s--",
                     color=f"C{im}", label=f"{m}: across blocks")
        axes[0].set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(rs))],
                           [str(r["block_length"]) for r in rs])
    axes[0].set(xlabel="block length", ylabel="distinct experts / layer / forward", title="Working set per forward")
    axes[1].set(xlabel="block length", ylabel="Jaccard(step t, step t+1)", ylim=(0, 1.05),
                title="Routing overlap of consecutive forwards")
    lengths = sorted({c["block_length"] for c in hit_curves})
    pols = list(dict.fromkeys(c["policy"] for c in hit_curves))
    for c in hit_curves:
        style = ":" if c["policy"] == "belady" else POLICY_STYLES[pols.index(c["policy"]) % 4]
        axes[2].plot(c["slots_fraction"], c["hit_rate"], linestyle=style, marker=".x+"[models.index(c["model"]) % 3] if c["model"] in models else ".",
                     color=f"C{lengths.index(c['block_length'])}",
                     label=(f"{c['model']} " if len(models) > 1 else "") + f"L={c['block_length']} {c['policy']}")
    axes[2].set(xlabel="GPU slots per layer / experts per layer", ylabel="hit rate", ylim=(0, 1.05),
                title="Cache hit rate by block length")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)
