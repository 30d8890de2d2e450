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

from advisor.results.front import source_kinds  # noqa: E402
from advisor.tune.plots import place_labels  # noqa: E402
from advisor.units import binary_unit, h2d_unit  # noqa: E402

PRECISION_COLORS = {"fp16": "#1f77b4", "bf16": "#1f77b4", "int8": "#ff7f0e", "int4": "#2ca02c"}
# Every cache policy gets its own colour AND marker (readable in grey print and for colour-blind readers);
# Belady's MIN, the offline bound, is always black crosses on a dotted line.
_POLICY_LOOK = [("#d62728", "o"), ("#1f77b4", "s"), ("#2ca02c", "^"), ("#9467bd", "D"), ("#ff7f0e", "v"),
                ("#8c564b", "P"), ("#e377c2", "<"), ("#17becf", ">"), ("#bcbd22", "h")]
_KNOWN_POLICIES = ["lru", "lfu", "block_aware", "lfu_decay", "fifo", "static_hot", "flru", "tide"]
DPI = 110


def _color(precision: str, i: int = 0) -> str:
    return PRECISION_COLORS.get(precision.split(":")[0], f"C{(i + 3) % 10}")


def policy_style(policy: str) -> dict[str, Any]:
    """Line style of one cache policy, the same in every figure."""
    if policy == "belady":
        return {"color": "black", "marker": "x", "linestyle": ":", "linewidth": 1.8, "markersize": 7}
    if policy not in _KNOWN_POLICIES:
        _KNOWN_POLICIES.append(policy)
    i = _KNOWN_POLICIES.index(policy)
    color, marker = _POLICY_LOOK[i % len(_POLICY_LOOK)]
    # hollow markers of different sizes: where policies coincide, their markers nest and all stay visible
    return {"color": color, "marker": marker, "linestyle": "-", "linewidth": 1.3, "markersize": 5 + 2.5 * (i % 4),
            "markerfacecolor": "none", "markeredgewidth": 1.3}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def _bytes_word(unit: str) -> str:
    """A binary unit as an axis label reads it before "per generated token": "bytes" for "B" ("H2D B per
    generated token" read as a letter), KiB, MiB ... as they are."""
    return "bytes" if unit == "B" else unit


def transfer_vs_slots(sweep: Any, path: Path, *, x: str = "slots") -> Path:
    """H2D bytes (top row) and transfer time (bottom row) per generated token vs GPU expert slots (or cache bytes).

    One column per precision, one curve per cache policy (colour and marker per policy) and Belady's MIN (black
    crosses); the no-cache baseline (at the study's 16-bit format) as a horizontal line. Rows share their y axis, so columns compare.
    """
    precisions = list(dict.fromkeys(p.precision for p in sweep.points))
    policies = sorted({p.policy for p in sweep.points if p.policy != "belady"})
    n = max(1, len(precisions))
    fig, axes = plt.subplots(2, n, figsize=(4.3 * n, 7.4), sharey="row", squeeze=False)
    # cache bytes in the unit their largest fills (`format_bytes`, as the tables print them): a tiny model's in KiB
    mem_unit, mem_size = binary_unit(max((p.cache_bytes for p in sweep.points), default=0))
    xlabel = "GPU expert slots per MoE layer" if x == "slots" else f"GPU expert-cache memory ({mem_unit}, all layers)"
    unit, size = h2d_unit(sweep.baseline_bytes_per_token)  # the report's tables' unit
    for ip, prec in enumerate(precisions):
        top, bottom = axes[0][ip], axes[1][ip]
        for pol in [*policies, "belady"]:
            pts = sorted((p for p in sweep.points if p.precision == prec and p.policy == pol), key=lambda p: p.slots)
            if not pts:
                continue
            xs = [p.slots if x == "slots" else p.cache_bytes / mem_size for p in pts]
            label = "Belady's MIN (bound)" if pol == "belady" else pol
            top.plot(xs, [p.bytes_per_token / size for p in pts], label=label, **policy_style(pol))
            bottom.plot(xs, [p.transfer_ms_per_token for p in pts], label=label, **policy_style(pol))
        top.axhline(sweep.baseline_bytes_per_token / size, color="grey", linewidth=1.2, linestyle="--",
                    label=f"{sweep.baseline_format}, no cache")
        bottom.axhline(sweep.baseline_ms_per_token, color="grey", linewidth=1.2, linestyle="--",
                       label=f"{sweep.baseline_format}, no cache")
        top.set_title(f"{prec} experts", color=_color(prec, ip), fontweight="bold")
        bottom.set_xlabel(xlabel)
        for ax in (top, bottom):
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")  # where it covers the fewest points and lines
    axes[0][0].set_ylabel(f"H2D {_bytes_word(unit)} per generated token (counted)")
    axes[1][0].set_ylabel(f"transfer ms per generated token\n({sweep.time_source})", fontsize=8)
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
    missing = [r.plan for r in rows if r.accuracy is None]
    if missing:  # an empty bar reads as 0: say it was not measured
        axes[0].text(0.5, 0.5, f"not measured: {', '.join(missing)}", ha="center", va="center", wrap=True,
                     transform=axes[0].transAxes, color="dimgrey")
    kl = [r.fidelity_kl if r.fidelity_kl is not None else float("nan") for r in rows]
    top1 = [r.fidelity_top1 if r.fidelity_top1 is not None else float("nan") for r in rows]
    axes[1].bar([i - 0.2 for i in xs], top1, width=0.4, color=colors, edgecolor="black", linewidth=0.5,
                label="top-1 agreement (left axis)")
    axes[1].set(ylabel="top-1 agreement with full precision", ylim=(0, 1.15), title="Fidelity vs full precision")
    ax2 = axes[1].twinx()
    ax2.bar([i + 0.2 for i in xs], kl, width=0.4, color="white", edgecolor="black", hatch="///",
            label="KL(full || plan) (right axis)")
    ax2.set_ylabel("KL(full || plan), nats")
    finite = [k for k in kl if k == k]
    ax2.set_ylim(0, 1.15 * max(finite) if finite and max(finite) > 0 else 1.0)
    h1, l1 = axes[1].get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    axes[1].legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    for ax in axes:
        ax.set_xticks(list(xs), [lab.replace(" (", "\n(") for lab in labels], rotation=0, fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def pareto(trials: Sequence[Any], front_numbers: set[int], recommended: Sequence[Any], path: Path,
           x: str = "h2d_bytes_per_token", y: str = "accuracy", *, h2d: tuple[str, int]) -> Path:
    """Every finished trial as `x` (time per token, or H2D bytes per token) vs `y` (accuracy, or fidelity_top1 in
    a study without task accuracy), coloured by GPU memory; the stored front (over all the study's objectives, so
    not a line in this plane) and recommendations marked. H2D bytes are drawn in `h2d` (name, bytes), the unit of
    the report's tables (`advisor.units.h2d_unit`)."""
    ylabel, yword = (("top-1 agreement with full precision (higher is better)", "top-1 agreement")
                     if y == "fidelity_top1" else ("task accuracy (higher is better)", "accuracy"))
    pts = [t for t in trials if x in t.values]
    kind = source_kinds(t.sources.get(x) for t in pts)  # as stored: time per token is measured in a live study
    scale, xlabel = (1.0, f"time per generated token, ms ({kind}; lower is better)") if x == "time_per_token" \
        else (1.0 / h2d[1], f"H2D {_bytes_word(h2d[0])} per generated token ({kind}; lower is better)")
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    xs = [t.values[x] * scale for t in pts]
    ys = [t.values.get(y, float("nan")) for t in pts]
    # in the unit the largest peak fills, as the budgets beside the stars say it (a tiny study's 106.8 KiB)
    mem_unit, mem_size = binary_unit(max((t.values.get("peak_gpu_bytes", 0.0) for t in pts), default=0))
    mem = [t.values.get("peak_gpu_bytes", 0.0) / mem_size for t in pts]
    sc = ax.scatter(xs, ys, c=mem, cmap="viridis", s=30, alpha=0.8, label="trial")
    fig.colorbar(sc, ax=ax, label=f"peak GPU memory ({mem_unit})")
    front = [t for t in pts if t.number in front_numbers]
    if front:
        ax.scatter([t.values[x] * scale for t in front], [t.values.get(y, float("nan")) for t in front],
                   s=110, facecolors="none", edgecolors="red", linewidths=1.2, label="Pareto front (all objectives)")
    marks = [(r.values.get(x, float("nan")) * scale, r.accuracy) for r in recommended]
    for mx, my in marks:
        ax.scatter([mx], [my], marker="*", s=260, color="gold", edgecolor="black", zorder=5)
    if recommended:
        ax.scatter([], [], marker="*", s=160, color="gold", edgecolor="black", label="recommended (budget)")
    ax.set(xlabel=xlabel, ylabel=ylabel,
           title="Trials of the study: " + ("time" if x == "time_per_token" else "transfer") + f" vs {yword} vs memory")
    ax.grid(alpha=0.3)
    ax.margins(x=0.12, y=0.12)  # room for labels inside the axes
    ax.legend(fontsize=8, loc="best")  # where it covers the fewest points
    fig.tight_layout()
    place_labels(ax, marks, [r.label for r in recommended], fontsize=8, marker_px=10,
                 avoid=list(zip(xs, ys, strict=True)))
    return _save(fig, path)


def block_reuse(rows: Sequence[dict[str, Any]], hit_curves: Sequence[dict[str, Any]], path: Path) -> Path:
    """Block diffusion: experts per forward, step-to-step overlap, and hit rate vs slots at each block length.

    Top left: distinct experts per MoE layer per forward as a fraction of the layer's experts, over the whole
    sequence (solid) and over the block's own tokens (hatched). Top right: Jaccard overlap of consecutive
    forwards within a block. Bottom: one panel per block length, one curve per policy (colour and marker) and
    Belady's MIN (black crosses); several models are told apart by line style.
    """
    from matplotlib.gridspec import GridSpec

    models = list(dict.fromkeys(r["model"] for r in rows))
    lengths = sorted({r["block_length"] for r in rows} | {c["block_length"] for c in hit_curves})
    n = max(1, len(lengths))
    fig = plt.figure(figsize=(4.6 * n, 8.4))
    grid = GridSpec(2, 2 * n, figure=fig)
    ws, ov = fig.add_subplot(grid[0, :n]), fig.add_subplot(grid[0, n:])
    width = 0.8 / max(1, 2 * len(models))
    for im, m in enumerate(models):
        rs = sorted((r for r in rows if r["model"] == m), key=lambda r: r["block_length"])
        pos = [lengths.index(r["block_length"]) for r in rs]
        e = [r.get("num_experts") or 1 for r in rs]
        whole = [r["distinct_mean"] / ei for r, ei in zip(rs, e, strict=True)]
        ws.bar([i + 2 * im * width for i in pos], whole, width=width, color=f"C{im}", label=f"{m}: whole sequence")
        ov.plot([r["block_length"] for r in rs], [r["jaccard_within_block"] for r in rs], marker="o",
                color=f"C{im}", label=f"{m}: whole sequence")
        if all("block_tokens" in r for r in rs):
            blk = [r["block_tokens"]["distinct_mean"] / ei for r, ei in zip(rs, e, strict=True)]
            ws.bar([i + (2 * im + 1) * width for i in pos], blk, width=width, color="white", edgecolor=f"C{im}",
                   hatch="///", label=f"{m}: block's tokens")
            ov.plot([r["block_length"] for r in rs], [r["block_tokens"]["jaccard_within_block"] for r in rs],
                    marker="s", linestyle="--", color=f"C{im}", label=f"{m}: block's tokens")
    ws.set_xticks([i + width * (2 * len(models) - 1) / 2 for i in range(n)], [str(v) for v in lengths])
    ws.set(xlabel="block length", ylabel="distinct experts / layer / forward\n(fraction of the layer's experts)",
           ylim=(0, 1.35), title="Working set of one denoising step")
    ov.set(xlabel="block length", ylabel="Jaccard(step t, step t+1)", ylim=(0, 1.05),
           title="Overlap of consecutive steps in a block")
    ov.set_xticks(lengths)
    styles = ["-", "--", "-."]
    for il, length in enumerate(lengths):
        ax = fig.add_subplot(grid[1, 2 * il:2 * il + 2])
        for c in (c for c in hit_curves if c["block_length"] == length):
            st = policy_style(c["policy"])
            im = models.index(c["model"]) if c["model"] in models else 0
            if im:  # further models: hollow markers, their own line style
                st["markerfacecolor"] = "none"
                st["linestyle"] = "-." if c["policy"] == "belady" else styles[im % len(styles)]
            who = "Belady's MIN" if c["policy"] == "belady" else c["policy"]
            ax.plot(c["slots_fraction"], c["hit_rate"], label=(f"{c['model']}: " if len(models) > 1 else "") + who,
                    **st)
        ax.set(xlabel="GPU slots per layer / experts per layer", ylabel="hit rate", ylim=(0, 1.05),
               title=f"Cache hit rate, block length {length}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in (ws, ov):
        ax.grid(alpha=0.3)
    ws.legend(fontsize=7, loc="upper center", ncol=2)
    ov.legend(fontsize=7, loc="lower right")
    return _save(fig, path)
