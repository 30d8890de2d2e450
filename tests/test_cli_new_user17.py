"""What a new user met following the README on 2026-12-06 (newuser17), each through the command they ran."""

from __future__ import annotations

import re
from pathlib import Path

from cli_helpers import advisor_in_process

EXAMPLE = Path(__file__).parent.parent / "studies" / "example" / "advisor.db"


def test_pareto_plots_say_the_unit_and_source_of_every_axis_and_keep_the_title_inside(tmp_path, monkeypatch):
    """`advisor pareto STUDY` drew H2D bytes per token as raw numbers (ticks 200000 ... 800000, no unit) beside a
    colour bar in MiB, and its one-line title ran past both edges of the PNG ("ndled-toy-quick: ... 0 over
    budget,"). The axes now carry the unit the tables print and how the values were obtained, the
    colour bar whether it is counted, and the title wraps inside the figure; the HTML plot's axes say the same."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = []
    real = Figure.savefig

    def keep(self, *args, **kwargs):
        drawn.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    r = advisor_in_process("pareto", "bundled-example", "--storage", str(EXAMPLE), "-o", str(tmp_path / "plots"),
                           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (fig,) = drawn
    ax, bar = fig.axes
    assert ax.get_xlabel() == "h2d_bytes_per_token, MiB [counted:trace-replay]", ax.get_xlabel()  # up to 2.9 MiB
    assert max(abs(x) for x, _ in ax.collections[0].get_offsets()) < 1024  # in MiB, not bytes
    assert ax.get_ylabel() == "accuracy [measured:exact-match:toy]", ax.get_ylabel()
    assert bar.get_ylabel() == "peak_gpu_bytes, MiB [counted]", bar.get_ylabel()
    renderer = FigureCanvasAgg(fig).get_renderer()  # pyplot closed the figure once it was saved
    for text in (ax.title, bar.yaxis.label):
        box, inside = text.get_window_extent(renderer), fig.bbox
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, text
    assert "Pareto front of bundled-example" in ax.get_title().replace("\n", " ")
    html = (tmp_path / "plots" / "bundled-example.html").read_text()
    assert re.search(r'"xaxis":\{"title":\{"text":"h2d_bytes_per_token, MiB \[counted:trace-replay\]"', html)
