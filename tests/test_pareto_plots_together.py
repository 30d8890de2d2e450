"""`advisor pareto` writes its PNG and HTML plots together: an interrupt (Ctrl-C, SIGTERM) left the new PNG in
place without its HTML page (or beside the last run's), though the line said "nothing is half-written"."""

from __future__ import annotations

import shutil

import pytest

from tests.cli_helpers import advisor_entry
from tests.example_study import EXAMPLE_DB


def test_an_interrupt_while_the_html_is_made_leaves_no_plot(tmp_path, monkeypatch):
    import signal

    import plotly.graph_objects as go

    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C: the handler in force raises

    monkeypatch.setattr(go.Figure, "to_html", interrupted)  # the page is being made when the signal comes
    monkeypatch.setattr(go.Figure, "write_html", interrupted)
    shutil.copy(EXAMPLE_DB, tmp_path / "example.db")
    r = advisor_entry("pareto", "bundled-example", "--storage", "example.db", "-o", "plots", cwd=tmp_path)
    assert r.returncode == 130 and r.stderr.strip().endswith("error: interrupted; nothing is half-written - run "
                                                              "the same command again"), r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["example.db"]  # no PNG, no folder made for it


@pytest.mark.parametrize("before", [False, True], ids=["new", "over an earlier run's"])
def test_both_plots_are_written(tmp_path, before):
    shutil.copy(EXAMPLE_DB, tmp_path / "example.db")
    if before:
        (tmp_path / "plots").mkdir()
        (tmp_path / "plots" / "bundled-example.png").write_bytes(b"old")
    r = advisor_entry("pareto", "bundled-example", "--storage", "example.db", "-o", "plots", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    png, html = (tmp_path / "plots" / f"bundled-example.{ext}" for ext in ("png", "html"))
    assert png.read_bytes().startswith(b"\x89PNG") and "plotly" in html.read_text(encoding="utf-8")
    assert "plots: plots/bundled-example.png  plots/bundled-example.html" in r.stdout
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["bundled-example.html", "bundled-example.png"]
