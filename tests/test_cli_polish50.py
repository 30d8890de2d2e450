"""Polish pass 50's findings, through the CLI as a user runs it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from tests.cli_helpers import advisor_entry, advisor_in_process, flat

EXAMPLE = Path(__file__).parent.parent / "studies" / "example" / "advisor.db"


def test_studies_and_pareto_name_the_gpu_profile_a_study_was_tuned_for(tmp_path):
    """`studies` and `pareto` did not say which --gpu profile a study was tuned for (its link and GPU price the
    modelled times; a resume with another is refused), only tune's header did. Both name it now where the study
    stores one, within 80 columns; a listing of studies tuned without --gpu has no gpu column."""
    from advisor.hardware.profiles import get_gpu

    shutil.copy(EXAMPLE, tmp_path / "g.db")
    plain = flat(advisor_in_process("studies", "--storage", "g.db", cwd=tmp_path, env={"COLUMNS": "80"}).stdout)
    assert "gpu" not in plain, plain
    with sqlite3.connect(tmp_path / "g.db") as c:  # the example study as if tuned with --gpu 'RTX 4090'
        hw = json.dumps(get_gpu("RTX 4090").to_dict())
        c.execute("UPDATE advisor_study SET hardware = ?", (hw,))
        c.execute("UPDATE advisor_front SET hardware = ?", (hw,))
    for columns in ("80", "200"):
        r = advisor_in_process("studies", "--storage", "g.db", cwd=tmp_path, env={"COLUMNS": columns})
        assert r.returncode == 0, r.stdout + r.stderr
        assert max(map(len, r.stdout.splitlines())) <= int(columns), r.stdout
        assert "gpu RTX 4090 24GB" in flat(r.stdout) or "│ RTX 4090 24GB │" in r.stdout, r.stdout
    r = advisor_in_process("pareto", "bundled-example", "--storage", "g.db", "--no-plots", cwd=tmp_path,
                           env={"COLUMNS": "80"})
    assert r.returncode == 0 and max(map(len, r.stdout.splitlines())) <= 80, r.stdout + r.stderr
    assert "space example, budget 2.73 MiB, gpu RTX 4090 24GB (39 points" in flat(r.stdout), r.stdout


def test_studies_shows_a_gpu_profile_name_with_brackets_as_written(tmp_path):
    """A profile's name is free text (`advisor profile --name 'rtx [home]'`); the studies table's cells were rich
    markup, so e49a65c's gpu cell showed 'rtx [home] box' as 'rtx  box' and '[/]' in one was a MarkupError
    traceback. Every cell is plain text (a study or model name too)."""
    from advisor.hardware.profiles import get_gpu

    shutil.copy(EXAMPLE, tmp_path / "g.db")
    for name in ("rtx [home] box", "rtx [/] box"):
        hw = json.dumps({**get_gpu("RTX 4090").to_dict(), "name": name})
        with sqlite3.connect(tmp_path / "g.db") as c:
            c.execute("UPDATE advisor_study SET hardware = ?", (hw,))
        r = advisor_in_process("studies", "--storage", "g.db", cwd=tmp_path, env={"COLUMNS": "200"})
        assert r.returncode == 0 and f"│ {name} │" in r.stdout, r.stdout + r.stderr


def test_pareto_plots_show_a_gpu_profile_name_as_written(tmp_path):
    """A profile's name is free text, and `pareto`'s plot titles carry it: in the PNG '$\\frac$' was parsed as
    matplotlib mathtext (a ValueError traceback, exit 1), in the HTML plotly read '<b>rtx</b>' as bold and dropped
    the tags. Neither title (nor the page's hover text) is markup now."""
    from advisor.hardware.profiles import get_gpu

    name = "<b>rtx</b> & $\\frac$ box"
    shutil.copy(EXAMPLE, tmp_path / "g.db")
    with sqlite3.connect(tmp_path / "g.db") as c:  # the example study as if tuned with a profile of that name
        c.execute("UPDATE advisor_front SET hardware = ?", (json.dumps({**get_gpu("RTX 4090").to_dict(), "name": name}),))
    r = advisor_entry("pareto", "bundled-example", "--storage", "g.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    page = (tmp_path / "studies" / "plots" / "bundled-example.html").read_text()
    assert "gpu &lt;b&gt;rtx&lt;\\u002fb&gt; &amp; $\\\\frac$ box (39 points" in page, page[-3000:]
