"""Figure labels are readable: `place_labels` keeps labels off each other, off every marker it is told about
and inside the axes - also for points at the axes' edge (where a naive label is clipped)."""

from __future__ import annotations


def test_labels_overlap_nothing_and_stay_inside():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from advisor.tune.plots import place_labels

    fig, ax = plt.subplots(figsize=(6, 4))
    marks = [(0.0, 0.96), (0.02, 0.96), (1.0, 0.955), (0.05, 0.92)]  # two close, one at the right edge
    others = [(x / 5, 0.94 + (x % 2) * 0.004) for x in range(6)]
    ax.scatter(*zip(*others, strict=True))
    ax.scatter(*zip(*marks, strict=True), marker="*", s=200)
    ax.margins(x=0.12, y=0.12)
    fig.tight_layout()
    place_labels(ax, marks, [f"#{i} @ 1.5 MiB" for i in range(len(marks))], fontsize=8, marker_px=10,
                 avoid=others)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == len(marks)
    inside = ax.get_window_extent(renderer)
    to_px = ax.transData.transform
    for i, b in enumerate(boxes):
        assert inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1, ax.texts[i]
        assert not any(b.overlaps(o) for o in boxes[:i]), ax.texts[i]
        for x, y in [*marks, *others]:
            px, py = to_px((x, y))
            assert not (b.x0 < px + 4 and px - 4 < b.x1 and b.y0 < py + 4 and py - 4 < b.y1), (ax.texts[i], x, y)
    plt.close(fig)
