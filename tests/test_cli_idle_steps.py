"""LLaDA-MoE's steps past a block's tokens: LLaDA's schedule gives them 0 tokens, yet each runs a forward. The
schedule is kept (it is what users deploy); eval and trace say how many steps unmask nothing and the --steps that
skips them."""

from __future__ import annotations

from typer.testing import CliRunner


def invoke(*args: str):
    from advisor.cli import app

    return CliRunner().invoke(app, list(args))


IDLE = ("note: bundled decodes as llada_moe: 9 of the 16 steps unmask nothing: a block of 7 tokens is done after 7 "
        "of its 16 steps, and LLaDA's sampler still runs a forward at each; --steps 7 decodes one token per step "
        "without them")


def test_trace_says_the_steps_that_unmask_nothing(tmp_path):
    from advisor.offload.trace import RoutingTrace

    out = tmp_path / "t.npz"
    res = invoke("trace", "bundled", "-o", str(out), "--limit", "1", "--max-new-tokens", "7", "--threads", "1")
    assert res.exit_code == 0, res.output
    assert IDLE in " ".join(res.output.split()), res.output
    assert RoutingTrace.load(out).n_forwards == 16  # the schedule ran as asked: the note counts, it changes nothing
    matched = invoke("trace", "bundled", "-o", str(out), "--limit", "1", "--max-new-tokens", "7", "--steps", "7",
                     "--threads", "1")
    assert matched.exit_code == 0 and "note:" not in matched.output, matched.output
    assert RoutingTrace.load(out).n_forwards == 7


def test_eval_says_it_alike():
    """eval has no --steps (the task's or model's steps decode): its note names trace's, not an option eval
    refuses ("No such option: --steps"). At 80 columns the `advisor trace --steps 7` it names stays on one line
    (rich broke it after `advisor trace`, which pasted as two commands), as tune prints the note."""
    from advisor.cli import app

    res = CliRunner().invoke(app, ["eval", "bundled", "--limit", "1", "--max-new-tokens", "7", "--no-progress",
                                   "--threads", "1"], terminal_width=80)
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert any("`advisor trace --steps 7`" in ln for ln in lines) and max(map(len, lines)) <= 80, res.stderr
    said = ("note: bundled decodes as llada_moe: 9 of the 16 steps unmask nothing: a block of 7 tokens is done after "
            "7 of its 16 steps, and LLaDA's sampler still runs a forward at each; 7 steps decode one token per step "
            "without them (`advisor trace --steps 7`; this command takes no --steps)")
    assert said in " ".join(res.output.split()), res.output
    from typer.main import get_command

    assert "--steps" not in {o for p in get_command(app).commands["eval"].params for o in p.opts}  # as it says
