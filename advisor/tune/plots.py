"""Pareto-front plots from the stored front rows: a PNG (matplotlib) and an interactive HTML (plotly).

The title and the hover text hold free text - a study's, model's or `advisor profile --name`'s name, sources
that quote it - shown as written: neither is read as markup (matplotlib's `$...$` mathtext, plotly's HTML tags
and entities). Both are made in memory; `pareto` writes them together (`files.write_together`), so an
interrupted run leaves neither half a plot nor one plot without the other.
No torch, no optuna: `advisor pareto` reads the project's own tables.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence

from advisor.results.front import FrontPoint
from advisor.tune.display import config_text, human_bytes
from advisor.units import binary_unit


def _xy(points: Sequence[FrontPoint]) -> tuple[str, str, str]:
    """The metrics on the x axis, the y axis and the colour: the study's own objectives where it stored them, so
    the plotted front is the one it built (a study tuned for time per token drawn against H2D bytes showed front
    points that looked dominated), else H2D bytes (or transfer time), accuracy (or fidelity) and peak memory."""
    objectives = points[0].objectives if points else {}
    x = next((m for m in ("time_per_token", "h2d_bytes_per_token", "transfer_ms_per_token")
              if m in objectives and all(m in p.values for p in points)), None)
    x = x or ("h2d_bytes_per_token" if all("h2d_bytes_per_token" in p.values for p in points)
              else "transfer_ms_per_token")
    y = "accuracy" if all("accuracy" in p.values for p in points) else "fidelity_top1"
    c = "peak_gpu_bytes"
    return x, y, c


def _axis(points: Sequence[FrontPoint], metric: str, kind_only: bool = False) -> tuple[list[float], str]:
    """A metric's values as plotted and its axis label: bytes in the binary unit their largest value fills (as the
    tables print them: "16.93 KiB", not 17336 with no unit), the unit and how the values were obtained in the label
    (the source up to its parameters, e.g. counted:trace-replay; counted, measured or modelled alone for a
    compound one - time per token's gpu=...;copies=...;cpu=... - and with `kind_only`, for the colour bar, where
    peak memory's formula ran off the figure)."""
    values = [p.values.get(metric, 0.0) for p in points]
    unit = "ms" if metric == "time_per_token" else ""
    if metric.endswith("bytes") or metric.endswith("bytes_per_token"):
        unit, size = binary_unit(max((abs(v) for v in values), default=0.0))
        values = [v / size for v in values]

    def source(p: FrontPoint) -> str:
        text = p.sources.get(metric, "?").split("(")[0]
        return text.split(":")[0] if kind_only or "=" in text else text  # a compound model: modelled

    sources = sorted({source(p) for p in points})
    return values, f"{metric}{f', {unit}' if unit else ''} [{', '.join(sources)}]"


# Offsets (points) tried in turn for a label, nearest first: right, above, left, below, then further out.
_LABEL_OFFSETS = [(dx * r, dy * r) for r in (1, 2, 3, 4) for dx, dy in
                  ((5, 4), (5, -10), (-5, 4), (-5, -10), (0, 9), (0, -15), (9, -3), (-9, -3))]


def place_labels(ax, xy: Sequence[tuple[float, float]], texts: Sequence[str], fontsize: float = 7,
                 marker_px: float = 4, avoid: Sequence[tuple[float, float]] = ()) -> None:
    """Annotate each point without two labels overlapping each other, a marker (also those of `avoid`, other
    points drawn on the axes) or the axes' edge.

    Points at the same coordinates share one label ("#3, #19"); each label takes the first offset from
    `_LABEL_OFFSETS` whose box is free (a leader line joins labels placed further out). Matplotlib has no
    overlap avoidance of its own, and a study's front often has near-identical points."""
    merged: dict[tuple[float, float], list[str]] = {}
    for (x, y), t in zip(xy, texts, strict=True):
        merged.setdefault((x, y), []).append(t)
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    inside = ax.get_window_extent(renderer)
    taken = []
    for x, y in [*merged, *avoid]:  # the markers themselves (2 * marker_px square)
        px, py = to_px((x, y))
        taken.append((px - marker_px, py - marker_px, px + marker_px, py + marker_px))

    def cost(b) -> float:
        """Pixels of the box over markers and labels, plus outside the axes (0: a free place)."""
        over = sum(max(0.0, min(b.x1, x1) - max(b.x0, x0)) * max(0.0, min(b.y1, y1) - max(b.y0, y0))
                   for x0, y0, x1, y1 in taken)
        clipped = b.width * b.height - max(0.0, min(b.x1, inside.x1) - max(b.x0, inside.x0)) * \
            max(0.0, min(b.y1, inside.y1) - max(b.y0, inside.y0))
        return over + 10 * clipped

    for (x, y), labels in sorted(merged.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        text = ", ".join(labels)
        best = None
        for i, (dx, dy) in enumerate(_LABEL_OFFSETS):  # the first free place, else the least covered one
            far = i >= 8
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                              ha="left" if dx >= 0 else "right",
                              arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey"} if far else None)
            box = ann.get_window_extent(renderer)
            c = cost(box)
            if best is None or c < best[0]:
                if best is not None:
                    best[1].remove()
                best = (c, ann, box)
            else:
                ann.remove()
            if c == 0:
                break
        assert best is not None
        b = best[2]
        taken.append((b.x0, b.y0, b.x1, b.y1))


def _axes(points: Sequence[FrontPoint]) -> list[tuple[list[float], str]]:
    """The x, y and colour values and labels of both plots."""
    x, y, c = _xy(points)
    return [_axis(points, x), _axis(points, y), _axis(points, c, kind_only=True)]


def render_png(points: Sequence[FrontPoint], title: str) -> bytes:
    """The front as a PNG scatter plot (what `pareto` writes, with `render_html`'s page, by `write_together`)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (xs, x_label), (ys, y_label), (cs, c_label) = _axes(points)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    sc = ax.scatter(xs, ys, c=cs, cmap="viridis", s=46, edgecolors="black", linewidths=0.4)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    # one line ran past both edges of the figure, clipped; '$\frac$' in a profile's name was a mathtext traceback
    ax.set_title(textwrap.fill(title, 95), fontsize=9, parse_math=False)
    cb = fig.colorbar(sc, ax=ax)
    cb.set_label(c_label)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    place_labels(ax, list(zip(xs, ys, strict=True)), [f"#{p.trial_number}" for p in points])
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def render_html(points: Sequence[FrontPoint], title: str) -> str:
    """The front as a self-contained interactive HTML page (plotly), each point's configuration on hover."""
    import plotly.graph_objects as go

    (xs, x_label), (ys, y_label), (cs, c_label) = _axes(points)
    hover = []
    for p in points:
        prec, cache = config_text(p.config)
        lines = [f"trial #{p.trial_number}", f"precision: {prec}", f"cache: {cache}"]
        for m, v in sorted(p.values.items()):
            shown = human_bytes(v) if m.endswith("bytes") or m.endswith("bytes_per_token") else f"{v:.4g}"
            lines.append(f"{m}: {shown} [{p.sources.get(m, '?')}]")
        hover.append("<br>".join(html.escape(line, quote=False) for line in lines))  # (plotly reads tags)
    fig = go.Figure(go.Scatter(
        x=xs, y=ys, mode="markers",
        marker={"size": 11, "color": cs, "colorscale": "Viridis",
                "showscale": True, "colorbar": {"title": c_label}, "line": {"width": 0.5, "color": "black"}},
        text=hover, hoverinfo="text",
    ))
    fig.update_layout(title=html.escape(title, quote=False), xaxis_title=x_label, yaxis_title=y_label,
                      template="plotly_white")
    return fig.to_html(include_plotlyjs=True, full_html=True)
