"""Prompts fit the model: few-shot exemplars dropped for a model with few positions (said once), and
prompts of unequal length batched where the family's decoding allows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import advisor_in_process

from advisor.eval.run import encode_prompt, fit_to_positions, model_positions
from advisor.eval.tasks import get_task
from advisor.models.generate import generate
from advisor.models.load import load_model
from tests.eval_helpers import tiny_toy_model_dir

DATA = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    """A tiny model saved like the bundled one (character tokenizer, 256 positions)."""
    return tiny_toy_model_dir(tmp_path_factory.mktemp("fit"))


def test_few_shot_prompts_drop_exemplars_to_fit_the_models_positions_said_once(toy_dir, tmp_path, monkeypatch):
    """Through the CLI in this process (a subprocess paid ~5 s of CPU importing torch and transformers again),
    with nothing said yet, as in a fresh process: a note is said once per process."""
    from advisor.eval import notes

    monkeypatch.setattr(notes, "_said", set())
    out = tmp_path / "r.json"
    proc = advisor_in_process("eval", str(toy_dir), "--task", "gsm8k", "--data", str(DATA), "--limit", "3",
                              "--max-new-tokens", "16", "--no-progress", "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    err = " ".join(proc.stderr.split())  # the note wraps at the terminal's width
    assert err.count("dropped few-shot exemplars") == 1 and "'s 256 positions (16 new tokens)" in err, err
    assert "note: gsm8k: dropped" in err, err  # a note, as every other command's, not bare text
    assert json.loads(out.read_text())["n"] == 3


def test_eval_tokenizes_each_prompt_once(toy_dir, tmp_path, monkeypatch):
    """`eval` tokenized every prompt three times - its up-front positions check, its fit to the positions (each
    few-shot variant) and its batches - seconds on a full few-shot GSM8K on the bundled model: through the CLI,
    with a precision (its fidelity prompts read the same texts), each text goes through the tokenizer once."""
    from collections import Counter

    from transformers import PreTrainedTokenizerBase

    calls: Counter[str] = Counter()
    tokenize = PreTrainedTokenizerBase.__call__

    def counted(self, text, *args, **kwargs):
        calls[text] += 1
        return tokenize(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", counted)
    proc = advisor_in_process("eval", str(toy_dir), "--task", "gsm8k", "--data", str(DATA), "--max-new-tokens", "8",
                              "--precision", "int8", "--fidelity-prompts", "2", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(calls) > 8 and max(calls.values()) == 1, calls.most_common(3)  # 8 prompts, their variants, answers


def test_fitted_prompts_keep_as_many_exemplars_as_fit(toy_dir):
    loaded = load_model(str(toy_dir))
    task = get_task("gsm8k", path=str(DATA))
    positions = model_positions(loaded)
    assert positions == 256
    fitted = fit_to_positions(task, loaded, 16)
    for ex in fitted.examples:
        length = len(encode_prompt(loaded.tokenizer, fitted.prompt(ex)))
        assert length <= positions - 16
        more = {**ex, "shots": ex["shots"] + 1}
        assert ex["shots"] == task.max_shots or len(encode_prompt(loaded.tokenizer, fitted.prompt(more))) > 240
    assert fit_to_positions(task, loaded, 16).examples == fitted.examples  # deterministic
    roomy = fit_to_positions(get_task("gsm8k", path=str(DATA), style="zero-shot"), loaded, 16)
    assert all("shots" not in ex for ex in roomy.examples)


def test_autoregressive_families_batch_left_padded_prompts_with_the_same_output():
    loaded = load_model("tiny:qwen3_moe")
    rows = [[5, 9, 11, 23, 40, 7], [17, 3, 8]]
    alone = [generate(loaded, torch.tensor([r]), max_new_tokens=6)[0].tolist() for r in rows]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    together = generate(loaded, ids, max_new_tokens=6, attention_mask=mask).tolist()
    assert together == alone


def test_traced_and_fidelity_prompts_fit_the_models_positions_too(toy_dir):
    """The prompts `advisor tune` traces and measures fidelity on are the task's, fitted as evaluation fits
    them: they once kept every exemplar and ran ~870-token prompts through a 256-position model."""
    from advisor.eval.fidelity import task_inputs
    from advisor.eval.run import workload_prompts

    loaded = load_model(str(toy_dir))
    task = get_task("gsm8k", path=str(DATA))
    assert max(len(encode_prompt(loaded.tokenizer, task.prompt(ex))) for ex in task.examples) > 256
    traced = workload_prompts(loaded, task, 3, seed=0, max_new_tokens=16)
    assert len(traced) == 3 and all(ids.shape[1] <= 256 - 16 for ids in traced)
    inputs = task_inputs(loaded, task, n=3, canvas=16)
    assert inputs["input_ids"].shape[1] <= 256


def test_prompts_that_with_their_new_tokens_pass_the_positions_are_said(toy_dir, capsys):
    """`advisor eval --task gsm8k` on a 256-position model (its default 256 new tokens) said exemplars were
    dropped "to fit" and nothing more: the prompt is kept to half the positions, so with more new tokens than the
    other half every prompt still ran past them, unsaid."""
    loaded = load_model(str(toy_dir))
    task = get_task("gsm8k", path=str(DATA), style="zero-shot")
    size = max(len(encode_prompt(loaded.tokenizer, task.prompt(ex))) for ex in task.examples)
    assert size + 16 <= 256 < size + 240  # fits beside 16 new tokens, not beside 240
    fit_to_positions(task, loaded, 16)
    assert "still exceed" not in capsys.readouterr().err
    fit_to_positions(task, loaded, 240)
    err = " ".join(capsys.readouterr().err.split())  # the note wraps at the terminal's width
    assert f"note: gsm8k: {len(task.examples)} of {len(task.examples)} prompts with their new tokens still exceed" in err
    assert "256 positions (240 new tokens)" in err


def test_prompts_past_the_positions_say_how_many_new_tokens_fit(toy_dir, capsys):
    """`advisor eval bundled --task gsm8k` (256 positions, 256 new tokens by default) said every prompt ran past
    the model's positions, and not what to give instead: the note names the new tokens that fit every prompt
    and where to give them; for humaneval, whose prompts fill the positions on their own, that fewer cannot help.
    Through `fit_to_positions`, which eval, tune and trace call (eval's 240 new tokens decoded for ~60 s)."""
    loaded = load_model(str(toy_dir))
    task = get_task("gsm8k", path=str(DATA))
    fit_to_positions(task, loaded, 240)
    err = " ".join(capsys.readouterr().err.split())  # the note wraps at the terminal's width
    assert f"{len(task.examples)} of {len(task.examples)} prompts with their new tokens still exceed" in err, err
    assert "at most 128 new tokens fit every prompt (eval, trace: --max-new-tokens 128; tune:" in err, err
    fitted = fit_to_positions(task, loaded, 128)
    assert "still exceed" not in capsys.readouterr().err  # the number given fits
    assert all(len(encode_prompt(loaded.tokenizer, fitted.prompt(ex))) <= 128 for ex in fitted.examples)
    fit_to_positions(get_task("humaneval"), loaded, 16)
    err = " ".join(capsys.readouterr().err.split())
    assert "still exceed" in err and "256 tokens or longer on their own, which fewer new tokens cannot help" in err, err


def test_trace_fits_task_prompts_beside_its_max_new_tokens(toy_dir, tmp_path, monkeypatch):
    """`advisor trace --task gsm8k --max-new-tokens 8` fitted its prompts beside the task's 256 new tokens: the
    notes said exemplars dropped and prompts past the positions '(256 new tokens)', and so told to give the
    --max-new-tokens already given. It fits them beside the new tokens it decodes."""
    from advisor.eval import notes

    monkeypatch.setattr(notes, "_said", set())
    proc = advisor_in_process("trace", str(toy_dir), "--task", "gsm8k", "--data", str(DATA), "--limit", "1",
                              "--max-new-tokens", "2", "--steps", "2", "-o", "t.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    err = " ".join(proc.stderr.split())
    assert "256 new tokens" not in err and "positions (2 new tokens)" in err, err


@pytest.mark.parametrize("command", [("trace", "-o", "t.npz"), ("eval", "--json", "e.json")], ids=lambda c: c[0])
def test_new_tokens_past_the_positions_on_their_own_are_refused_with_what_fits(toy_dir, tmp_path, command):
    """`trace --max-new-tokens 99999` (eval's too) on a model of 256 positions decoded far past them for many
    minutes after a note; new tokens that alone exceed the positions are refused before they decode, naming the
    most that fit every prompt, and nothing is written. The refusal is the only line (eval said its decoding
    note first)."""
    from cli_helpers import advisor_entry

    proc = advisor_entry(command[0], str(toy_dir), "--limit", "1", "--max-new-tokens", "257", *command[1:],
                         cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()  # the only line: eval's decoding note came before it
    assert line.startswith("error: toy: 257 new tokens alone exceed ") and "'s 256 positions" in line, line
    assert "; at most " in line and " new tokens fit every prompt (eval, trace: --max-new-tokens " in line, line
    assert list(tmp_path.iterdir()) == []


def test_new_tokens_past_the_positions_beside_prompt_texts_are_refused_or_said(toy_dir, tmp_path, monkeypatch):
    """`trace --prompt TEXT --max-new-tokens 257` on a model of 256 positions decoded past them without a word,
    where the task's prompts are refused: refused alike in one line, naming what fits beside the longest text, and
    nothing written. Within the positions alone but past them beside the text, it is said once, as of a task's."""
    from cli_helpers import advisor_entry

    from advisor.eval import notes

    proc = advisor_entry("trace", str(toy_dir), "--prompt", "hello", "--max-new-tokens", "257", "-o", "t.npz",
                         cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: --prompt: 257 new tokens alone exceed ") and "'s 256 positions" in line, line
    assert "; at most " in line and " new tokens fit beside the longest --prompt text (" in line, line
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(notes, "_said", set())
    proc = advisor_in_process("trace", str(toy_dir), "--prompt", "hello", "--max-new-tokens", "255", "--threads", "1",
                              "-o", "t.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    err = " ".join(proc.stderr.split())
    assert "note: 1 of 1 --prompt texts with their 255 new tokens exceed " in err and "'s 256 positions" in err, err
    assert " new tokens fit every prompt (--max-new-tokens " in err, err


@pytest.mark.parametrize("model", ["toy", "toy --offload", "tiny:mixtral"])
def test_a_tune_space_whose_new_tokens_pass_the_positions_is_refused_before_the_study(toy_dir, tmp_path, model):
    """A --space with max_new_tokens past the model's positions got a note and a study whose trials ran past them
    (refused inside a trial, the trial failed); it is refused after the load, before the study is created, naming
    the most that fit: a text task's prompts as eval says it, a tiny:* model's (no tokenizer) beside its random
    prompts. The refusal is the only line: an offloaded model's activation probe decoded those new tokens first,
    after the note that its prompts run past the positions."""
    from cli_helpers import advisor_entry

    spec, objective = (str(toy_dir), "accuracy") if model.startswith("toy") else (model, "fidelity_top1")
    offload = ["--offload"] if model.endswith("--offload") else []
    (tmp_path / "s.toml").write_text(f'name = "s"\n[objectives]\n{objective} = "maximize"\npeak_gpu_bytes = "minimize"\n'
                                     '[precision]\nformats = ["int8"]\n[evaluation]\ntrace_prompts = 1\n'
                                     "fidelity_prompts = 1\nmax_new_tokens = 600\n")
    proc = advisor_entry("tune", spec, *offload, "--space", "s.toml", "--trials", "1", "--storage", "sqlite:///s.db",
                         cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()  # the only line
    assert " 600 new tokens alone exceed " in line and " positions, the length it was trained for; at most " in line
    assert "tune: max_new_tokens = " in line and proc.stdout == "", (line, proc.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_tune_refusal_names_what_fits_every_prompt_its_accuracy_decodes(toy_dir, tmp_path):
    """tune's refusal of new tokens past the positions named the most that fit its trace_prompts prompts only: with
    trace_prompts = 1 and limit = 500 it said 209 where eval --limit 500 (the same 500 prompts the study's accuracy
    decodes) says 208. It names what fits the accuracy's prompts and the traces' together."""
    from cli_helpers import advisor_entry

    (tmp_path / "s.toml").write_text('name = "s"\n[objectives]\naccuracy = "maximize"\npeak_gpu_bytes = "minimize"\n'
                                     '[precision]\nformats = ["int8"]\n[evaluation]\ntrace_prompts = 1\n'
                                     "fidelity_prompts = 1\nlimit = 500\nmax_new_tokens = 600\n")
    tune = advisor_entry("tune", str(toy_dir), "--space", "s.toml", "--trials", "1", "--storage", "sqlite:///s.db",
                         cwd=tmp_path)
    ev = advisor_entry("eval", str(toy_dir), "--limit", "500", "--max-new-tokens", "600", cwd=tmp_path)
    said = [p.stderr.split("; at most ")[-1].split(" new tokens fit")[0] for p in (tune, ev)]
    assert tune.returncode == ev.returncode == 2 and said[0] == said[1], (tune.stderr, ev.stderr)


def test_random_prompts_past_the_positions_beside_their_new_tokens_are_said(capsys):
    """A tiny:* model's random prompts (no tokenizer) beside new tokens within its positions alone but past them
    together ran past the positions without a word (eval's task prompts get a note; more new tokens are refused):
    the note says so and names the most that fit every prompt."""
    from advisor.eval.run import workload_prompts

    loaded = load_model("tiny:mixtral")  # 512 positions; seed 0's one prompt has 16 ids
    [ids] = workload_prompts(loaded, None, 1, seed=0, max_new_tokens=500)
    err = " ".join(capsys.readouterr().err.split())
    assert ids.shape[-1] == 16 and "note: 1 of 1 random prompts with their 500 new tokens exceed tiny:mixtral's 512 " \
        "positions; the model runs past" in err and "at most 497 new tokens fit every prompt" in err, err
    workload_prompts(loaded, None, 1, seed=0, max_new_tokens=497)  # the last of them is never fed back: 16 + 496
    assert "note" not in capsys.readouterr().err


@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral"])
def test_autoregressive_positions_are_the_tokens_fed_to_the_model(family):
    """Autoregressive decoding feeds the prompt and every new token but the last, which is never fed back: the
    positions counted (`positions_taken`) were prompt + new tokens, one more than the model processes, so every
    positions hint named one new token fewer than fits (497 beside 16 ids on tiny:mixtral's 512, above). Counted
    here by the position ids the model is given (greedy, no eos: every new token decoded)."""
    from advisor.eval.run import positions_taken

    loaded = load_model(f"tiny:{family}")
    seen: list[int] = []
    hook = loaded.model.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(int(kw["position_ids"].max()) + 1), with_kwargs=True)
    try:
        loaded.model.generation_config.eos_token_id = None
        for prompt, new in ((5, 4), (3, 1)):
            seen.clear()
            generate(loaded, torch.randint(3, 100, (1, prompt)), max_new_tokens=new)
            assert max(seen) == positions_taken(loaded, prompt, new, {}) == prompt + new - 1, (prompt, new, seen)
    finally:
        hook.remove()


def test_positions_hints_count_the_whole_blocks_llada_moe_decodes(toy_dir, tmp_path, monkeypatch):
    """LLaDA-MoE decodes whole blocks, yet the positions checks counted --max-new-tokens alone: on the bundled
    model (256 positions, blocks of 8) `trace --prompt hi --max-new-tokens 255` advised 254, which decodes 32 blocks
    (258 positions beside the 2-token prompt) and said nothing; `eval --max-new-tokens 250 --limit 1` advised 209,
    27 blocks (263 positions beside the 47-token prompt). The hints count what the sampler puts through the model
    (here trace's blocks of 32, the model's default, and the toy task's of 8), and the number each names then
    passes without a note."""
    from advisor.eval import notes

    def said(*args: str) -> str:
        monkeypatch.setattr(notes, "_said", set())
        proc = advisor_in_process(*args, "--threads", "1", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return " ".join(proc.stderr.split())

    trace = ("trace", str(toy_dir), "--prompt", "hi", "--steps", "8", "-o", "t.npz")
    err = said(*trace, "--max-new-tokens", "254")  # 2 + 8 x 32 = 258
    assert "with their 254 new tokens in whole blocks exceed " in err and "(--max-new-tokens 224)" in err, err
    assert "positions" not in said(*trace, "--max-new-tokens", "224")
    err = said("eval", str(toy_dir), "--max-new-tokens", "250", "--limit", "1", "--no-progress")
    assert "still exceed " in err and "--max-new-tokens 208;" in err, err
    assert "positions" not in said("eval", str(toy_dir), "--max-new-tokens", "208", "--limit", "1", "--no-progress")


def test_new_tokens_whose_whole_blocks_alone_exceed_the_positions_are_refused(toy_dir, tmp_path):
    """--block-length 48: 250 new tokens (within 256 positions, beside the 2-token prompt too) decode 6 blocks of
    48, 288 positions, and decoded past them without a word; refused before decoding, naming 240 (5 blocks), and
    nothing written."""
    from cli_helpers import advisor_entry

    proc = advisor_entry("trace", str(toy_dir), "--prompt", "hi", "--max-new-tokens", "250", "--block-length", "48",
                         "-o", "t.npz", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: --prompt: 250 new tokens in whole blocks alone exceed ") and \
        line.endswith("(2 tokens): --max-new-tokens 240"), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("family", "how", "fits"), [("llada2", "in whole blocks at multiples of the block length", 464),
                                                     ("diffusion_gemma", "in whole canvases", 480)],
                         ids=["llada2", "diffusion_gemma"])
def test_llada2_blocks_and_diffusion_gemma_canvases_count_against_the_positions(tmp_path, capsys, family, how, fits):
    """LLaDA2 decodes a canvas of whole blocks aligned to multiples of the block length, DiffusionGemma whole
    canvases after the prompt: 500 new tokens in blocks of 48 take 528 of a tiny model's 512 positions and decoded
    past them; refused before decoding, naming what fits beside the 16-token random prompts, which then passes."""
    from cli_helpers import advisor_entry

    from advisor.eval.run import workload_prompts

    proc = advisor_entry("trace", f"tiny:{family}", "--limit", "1", "--max-new-tokens", "500", "--block-length", "48",
                         "-o", "t.npz", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert f"500 new tokens {how} alone exceed its 512 positions" in line, line
    assert f"(eval, trace: --max-new-tokens {fits};" in line, line
    capsys.readouterr()
    workload_prompts(load_model(f"tiny:{family}"), None, 4, max_new_tokens=fits, refuse_past=True,
                     decoding={"block_length": 48})
    assert "positions" not in capsys.readouterr().err


@pytest.mark.parametrize(("family", "unit"), [("llada2", "block"), ("diffusion_gemma", "canvas")])
def test_a_block_past_the_positions_is_named_where_no_new_tokens_fit(tmp_path, capsys, family, unit):
    """LLaDA2 and DiffusionGemma decode at least one whole block (canvas): `trace tiny:diffusion_gemma
    --block-length 600` was refused with no remedy, and with blocks of 500 its note said "the longest is 16 tokens
    on its own, which fewer new tokens cannot help" of a 16-token prompt on 512 positions. Both now name the block
    and the remedy, a shorter --block-length."""
    from cli_helpers import advisor_entry

    from advisor.eval.run import workload_prompts

    proc = advisor_entry("trace", f"tiny:{family}", "--limit", "1", "--max-new-tokens", "8", "--block-length", "600",
                         "-o", "t.npz", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.endswith(f"; a single {unit} of 600 beside its 16-token random prompts already exceeds them, "
                         "whatever the new tokens: a shorter --block-length fits"), line
    if family == "diffusion_gemma":  # LLaDA2's block of 500 holds a prompt of up to 492 beside 8 new tokens
        capsys.readouterr()
        workload_prompts(load_model(f"tiny:{family}"), None, 1, max_new_tokens=8, decoding={"block_length": 500})
        err = " ".join(capsys.readouterr().err.split())
        assert "on its own" not in err and "a single canvas of 500 beside the longest (" in err, err


@pytest.mark.parametrize("command", ["eval", "trace", "tune"])
def test_a_data_record_far_past_the_positions_is_refused_naming_its_line(toy_dir, tmp_path, command):
    """A --data record under the 1 MiB line limit but far past the model's positions (a 200 KB question on the
    bundled model's 256) got a note that it runs past them, then decoded for many minutes: a prompt that with its
    new tokens takes more than `FAR_PAST_POSITIONS` times the positions is refused before any decoding, naming its
    file:line and what fits, and nothing is written (tune: before its study)."""
    from cli_helpers import advisor_entry

    from advisor.eval.run import FAR_PAST_POSITIONS

    rows = [{"question": "What is 2 + 2?", "answer": "#### 4"},
            {"question": "Add " + "one and " * (FAR_PAST_POSITIONS * 256 // 8) + "one.", "answer": "#### 9"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.toml").write_text('name = "s"\n[objectives]\naccuracy = "maximize"\npeak_gpu_bytes = "minimize"\n'
                                     '[precision]\nformats = ["int8"]\n[evaluation]\ntrace_prompts = 2\n'
                                     "fidelity_prompts = 1\nlimit = 2\nmax_new_tokens = 8\n")
    args = {"eval": ["--max-new-tokens", "8", "--json", "e.json"], "trace": ["--max-new-tokens", "8", "-o", "t.npz"],
            "tune": ["--space", "s.toml", "--trials", "1", "--storage", "sqlite:///s.db"]}[command]
    proc = advisor_entry(command, str(toy_dir), "--task", "gsm8k", "--data", "d.jsonl", *args, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()  # the only line
    assert line.startswith("error: ") and "d.jsonl:2: its prompt is " in line and "'s 256 (" in line, line
    assert "; shorten the record or drop it (at most 248 prompt tokens fit beside the new tokens)" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "s.toml"]


def test_tune_refuses_a_fidelity_prompt_far_past_the_positions(toy_dir, tmp_path):
    """tune's up-front check read the accuracy's (`limit`) and the traces' (`trace_prompts`) examples only: its
    fidelity prompts, of another count, are other examples (here the first of four), so a record far past the
    positions among them alone ran. Refused before the study as the others are, naming its line."""
    from cli_helpers import advisor_entry

    from advisor.eval.run import FAR_PAST_POSITIONS
    from advisor.eval.tasks import select

    index = list(range(4))
    assert 0 in select(index, 3) and 0 not in select(index, 2)  # fidelity's 3 hold the first; limit's, traces' 2 not
    far = {"question": "Add " + "one and " * (FAR_PAST_POSITIONS * 256 // 8) + "one.", "answer": "#### 9"}
    rows = [far] + [{"question": f"What is 2 + {i}?", "answer": f"#### {2 + i}"} for i in range(3)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.toml").write_text('name = "s"\n[objectives]\naccuracy = "maximize"\npeak_gpu_bytes = "minimize"\n'
                                     '[precision]\nformats = ["int8"]\n[evaluation]\ntrace_prompts = 2\n'
                                     "fidelity_prompts = 3\nlimit = 2\nmax_new_tokens = 8\n")
    proc = advisor_entry("tune", str(toy_dir), "--task", "gsm8k", "--data", "d.jsonl", "--space", "s.toml",
                         "--trials", "1", "--storage", "sqlite:///s.db", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()  # the only line
    assert line.startswith("error: ") and "d.jsonl:1: its prompt is " in line and "'s 256 (" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "s.toml"]


def test_a_prompt_text_far_past_the_positions_is_refused(toy_dir, tmp_path):
    """`trace --prompt TEXT` far past the model's positions (16,000 tokens on 256) was said in a note, then decoded
    for minutes: refused as a --data record is, naming the text, in one line, nothing written."""
    from cli_helpers import advisor_entry

    proc = advisor_entry("trace", str(toy_dir), "--prompt", "hi", "--prompt", "one and " * 300,
                         "--max-new-tokens", "8", "-o", "t.npz", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()  # the only line
    assert line.startswith("error: --prompt text 2: its prompt is ") and "'s 256 (it would decode" in line, line
    assert line.endswith("; shorten the text or drop it (at most 248 prompt tokens fit beside the new tokens)"), line
    assert list(tmp_path.iterdir()) == []
    # new tokens filling the positions (HumanEval's 256 on the bundled model): "shorten it" named no length
    proc = advisor_entry("trace", str(toy_dir), "--prompt", "one and " * 300, "--max-new-tokens", "256",
                         "-o", "t.npz", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().endswith("; shorten the text or drop it (the new tokens fill the positions on their "
                                        "own; a prompt of at most 1792 tokens runs beside them, past the positions, "
                                        "with a note)"), proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_eval_json_marks_a_prompt_kept_as_its_end(toy_dir, tmp_path):
    """`eval --json` kept a prompt's last 200 characters as "prompt", which read as the whole prompt: one past them
    is kept as its end led by "..." (as a HumanEval record's sandbox detail), a shorter one whole."""
    rows = [{"question": "Add " + "one and " * 30 + "one.", "answer": "#### 31"},
            {"question": "What is 2 + 2?", "answer": "#### 4"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = advisor_in_process("eval", str(toy_dir), "--task", "gsm8k", "--data", "d.jsonl", "--style", "zero-shot",
                              "--max-new-tokens", "2", "--no-progress", "--json", "r.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    long, short = [r["prompt"] for r in json.loads((tmp_path / "r.json").read_text())["per_example"]]
    assert long.startswith("...and one ") and len(long) == 203 and long.endswith("one.\nAnswer:"), long
    assert short == "Question: What is 2 + 2?\nAnswer:"
