"""Run a task on a loaded model: batched generation through `advisor.models.generate`, then scoring.

Accuracy is exact match (GSM8K, toy) or pass@1 (HumanEval) with a 95% Wilson interval; the time is the
generation's wall clock on the model's device, and the scoring's (HumanEval: sandboxed unit tests on this
host's CPU) is kept apart. A `runtime` (quantized or offloaded experts) is attached for the run
and the model's previous expert session restored afterwards.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from weakref import WeakKeyDictionary

from advisor.errors import UserError
from advisor.eval.jsonl import tail
from advisor.eval.notes import note_once
from advisor.eval.stats import wilson_interval
from advisor.eval.tasks import Task, select
from advisor.hardware.measure import device_text
from advisor.units import count


@dataclass
class EvalResult:
    """Accuracy of one model (under one runtime) on one task, with where each number came from."""

    task: str
    accuracy: float
    n: int
    correct: int
    ci_low: float
    ci_high: float
    seconds: float
    """Generation (prompts to decoded completions) wall clock, on the model's device."""
    per_example: list[dict] = field(default_factory=list)
    source: str = ""
    device: str = "cpu"
    seconds_source: str = "measured:wall-clock"
    scoring_seconds: float = 0.0
    """Scoring the completions (HumanEval: sandboxed unit tests) on this host's CPU, whatever the device."""

    @property
    def seconds_per_example(self) -> float:
        return self.seconds / self.n if self.n else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers (without the per-example records)."""
        return {
            "task": self.task, "accuracy": self.accuracy, "n": self.n, "correct": self.correct,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "seconds": round(self.seconds, 3),
            "seconds_per_example": round(self.seconds_per_example, 4), "source": self.source,
            "seconds_source": f"{self.seconds_source} ({self.device})", "device": self.device,
            "scoring_seconds": round(self.scoring_seconds, 3), "scoring_seconds_source": SCORING_SOURCE,
        }


SCORING_SOURCE = "measured:wall-clock(this host's CPU)"
"""The label of `EvalResult.scoring_seconds`."""


def default_batch_size(task: Task, pad: str | None = None) -> int:
    return 64 if task.pad_ok else 8 if pad is None else 16


def evaluate(
    loaded,
    task: Task,
    *,
    limit: int | None = None,
    seed: int = 0,
    runtime=None,
    progress: bool = False,
    batch_size: int | None = None,
    on_forward: Callable | None = None,
    max_new_tokens: int | None = None,
    refuse_past: bool = False,
    **gen_overrides: Any,
) -> EvalResult:
    """Generate a completion for every (selected) example of `task` and score it.

    `limit`/`seed` pick a deterministic subset; `runtime` (an ExpertRuntime) computes the experts;
    `max_new_tokens` and `gen_overrides` (steps, block_length, ...) override the task's decoding; `refuse_past`:
    new tokens past the model's positions on their own are refused (`fit_to_positions`).
    """
    import torch

    require_tokenizer(loaded)
    task = task.subset(limit, seed)
    if not task.examples:
        raise UserError(f"task {task.name} has no examples to evaluate")
    new_tokens = max_new_tokens or task.max_new_tokens
    gen_kwargs = {**task.gen_kwargs, **gen_overrides}
    task = fit_to_positions(task, loaded, new_tokens, refuse_past=refuse_past, decoding=gen_kwargs)
    # Prompts of unequal length share a batch when the task allows EOS left-padding (the bundled model was
    # trained that way) or the family decodes autoregressively (padding hidden by an attention mask).
    pad = "eos" if task.pad_ok else "mask" if not loaded.is_diffusion else None
    batches = _batches(loaded.tokenizer, task, batch_size or default_batch_size(task, pad), pad)
    texts: dict[int, str] = {}
    start = time.perf_counter()
    with attached(loaded, runtime), _progress(progress, task) as advance:
        for idx, ids, mask in batches:
            kwargs = {**gen_kwargs, "attention_mask": mask} if mask is not None else gen_kwargs
            new = _generate(loaded, ids, new_tokens, on_forward, kwargs)
            for i, row in zip(idx, new.tolist(), strict=True):
                texts[i] = _decode(loaded.tokenizer, row)
            advance(len(idx))
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)
    seconds = time.perf_counter() - start
    order = sorted(texts)
    examples = [task.examples[i] for i in order]
    completions = [texts[i] for i in order]
    scored = task.score_records(examples, completions)
    scoring = time.perf_counter() - start - seconds
    verdicts = [bool(r["correct"]) for r in scored]
    correct = sum(verdicts)
    low, high = wilson_interval(correct, len(verdicts))
    per_example = [
        {"index": i, "prompt": tail(task.prompt(ex), 200), "completion": c, **r, "correct": v}
        for i, ex, c, r, v in zip(order, examples, completions, scored, verdicts, strict=True)
    ]
    how = "sandboxed-unit-tests" if task.name == "humaneval" else "exact-match"
    on_cpu = loaded.device.type == "cpu"  # a CPU's time depends on how many threads computed it
    return EvalResult(
        task=task.name, accuracy=correct / len(verdicts), n=len(verdicts), correct=correct, ci_low=low,
        ci_high=high, seconds=seconds, per_example=per_example, source=f"measured:{how}",
        device=device_text(loaded.device),
        seconds_source=f"measured:wall-clock({count(torch.get_num_threads(), 'thread')})" if on_cpu else "measured:wall-clock",
        scoring_seconds=scoring,
    )


def accuracy_source(source: str | None, task: str, n: int, device: str) -> str:
    """How an accuracy was obtained, with its task, problem count and device - one label for what `tune` stores
    and what `eval` prints, so the README's `measured:exact-match:TASK(n=..,DEVICE)` reads the same in both."""
    return f"{source or 'measured'}:{task}(n={n},{device})"


def require_tokenizer(loaded) -> None:
    """`UserError` for a model without a tokenizer (tiny:*): a text task's prompts cannot be encoded for it."""
    if loaded.tokenizer is None:  # `advisor eval` refuses a MODEL known to have none before it loads
        from advisor.models import no_tokenizer

        raise no_tokenizer(loaded.name)


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt (with the tokenizer's own special tokens, as `generate_text` does), each text
    tokenized once per tokenizer (`_ENCODED`): eval's up-front positions check, its fit to the positions and its
    batches read the same prompts - three tokenizations of each, seconds on a full few-shot GSM8K."""
    known = _ENCODED.setdefault(tokenizer, {})
    if (ids := known.get(text)) is None:  # a long prompt is said once, by fit_to_positions
        ids = known[text] = array("l", tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
    return list(ids)


_ENCODED: WeakKeyDictionary[Any, dict[str, array]] = WeakKeyDictionary()
"""`encode_prompt`'s token ids by tokenizer and text, kept while the tokenizer (its loaded model) is."""


def workload_prompts(loaded, task: Task | None, n: int, seed: int = 0, max_new_tokens: int | None = None,
                     refuse_past: bool = False, decoding: dict[str, Any] | None = None) -> list[Any]:
    """Token ids [1, L] of `n` prompts of the workload `advisor tune` traces: the task's own examples (the
    evaluation's selection, fitted to the model's positions, and encoding; `refuse_past` and `decoding` as
    `fit_to_positions`), else seeded random ids (tokenizer-less models, tiny:*)."""
    import torch

    tok = loaded.tokenizer
    examples = list(getattr(task, "examples", []))
    if tok is not None and examples and task is not None:
        chosen = fit_to_positions(replace(task, examples=select(examples, n, seed)), loaded,
                                  max_new_tokens or task.max_new_tokens, refuse_past=refuse_past,
                                  decoding=decoding or {})
        out = [torch.tensor([encode_prompt(tok, chosen.prompt(ex))], dtype=torch.long) for ex in chosen.examples]
    else:
        from advisor.models.generate import random_prompt

        fewest, most = RANDOM_PROMPT_TOKENS
        positions, decoding = model_positions(loaded), decoding or {}
        if refuse_past and positions is not None and max_new_tokens is not None and \
                positions_taken(loaded, 0, max_new_tokens, decoding) > positions:
            fits = most_new_tokens(loaded, most, positions, decoding)
            hint = (f"; at most {fits} new tokens fit beside its {most}-token random prompts "
                    f"({NEW_TOKENS_SETTING.format(n=fits)})" if fits > 0 else
                    block_hint(loaded, most, positions, decoding, f"its {most}-token random prompts"))
            # (tiny:*: no text task to fit)
            raise past_positions(loaded.name, max_new_tokens, positions, hint, loaded=loaded, decoding=decoding)
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n):
            length = int(torch.randint(fewest, most + 1, (1,), generator=g))
            out.append(random_prompt(loaded, length, g))
        say_ids_past_positions(loaded, out, max_new_tokens, "random prompts", decoding=decoding)  # (alone past them: refused above)
    if not out:
        raise UserError(f"task {getattr(task, 'name', task)!r} has no examples to build prompts from")
    return out


def say_ids_past_positions(loaded, prompts: list[Any], max_new_tokens: int | None, what: str,
                           setting: str | None = None, *, decoding: dict[str, Any]) -> None:
    """Note once where token-id `prompts` ([1, L] each: `what`, "random prompts" or "--prompt texts") with their
    new tokens, as `decoding` decodes them (`decoded_length`), exceed the model's positions, naming the most new
    tokens that fit every one and where to set them (`setting`, default `NEW_TOKENS_SETTING`); a text task's
    prompts are fitted and said by `fit_to_positions`."""
    positions = model_positions(loaded)
    over = sum(positions_taken(loaded, int(ids.shape[-1]), max_new_tokens, decoding) > positions for ids in prompts) \
        if positions and max_new_tokens else 0
    if not over:
        return
    longest = max(int(ids.shape[-1]) for ids in prompts)
    fits = most_new_tokens(loaded, longest, positions, decoding)
    new = _new_tokens(loaded, max_new_tokens, positions, decoding, {int(ids.shape[-1]) for ids in prompts})
    room = (f"at most {fits} new tokens fit every prompt ({(setting or NEW_TOKENS_SETTING).format(n=fits)})"
            if fits > 0 else block_hint(loaded, longest, positions, decoding, f"the longest ({longest} tokens)")[2:]
            or f"the longest is {longest} tokens on its own, which fewer new tokens cannot help")
    note_once(f"note: {over} of {len(prompts)} {what} with their {new} exceed {loaded.name}'s "
              f"{positions} positions; the model runs past the length it was trained for on them; {room}")


def refuse_past_positions(loaded, task: Task | None, n: int, seed: int, max_new_tokens: int,
                          decoding: dict[str, Any]) -> None:
    """`UserError` where `max_new_tokens`, as `decoding` decodes them, alone exceed the model's positions
    (`workload_prompts`' `refuse_past`, naming the most that fit its `n` prompts): eval says it before its notes,
    tune before its study is created. Where they fit, a task's `n` prompts are encoded (none are for a model
    without a tokenizer or task) and one far past the positions is refused (`_refuse_far_past`)."""
    positions = model_positions(loaded)
    if positions is not None and positions_taken(loaded, 0, max_new_tokens, decoding) > positions:
        workload_prompts(loaded, task, n, seed, max_new_tokens, refuse_past=True, decoding=decoding)
    elif positions is not None and loaded.tokenizer is not None and task is not None and task.examples:
        chosen = replace(task, examples=select(task.examples, n, seed))
        total, length = _measures(chosen, loaded, max_new_tokens, decoding)
        examples, sizes = _fitted(chosen, positions, total, length)
        _refuse_far_past(chosen, loaded, examples, sizes, positions, total,
                         _new_tokens(loaded, max_new_tokens, positions, decoding, set(sizes)))


RANDOM_PROMPT_TOKENS = (8, 16)
"""The fewest and most token ids of `workload_prompts`' random prompts (a model without a tokenizer)."""


def past_positions(what: str, max_new_tokens: int, positions: int, hint: str, model: str | None = None,
                   loaded=None, decoding: dict[str, Any] | None = None) -> UserError:
    """The refusal of new tokens that alone exceed the model's positions (`refuse_past`), `hint` naming what fits;
    `loaded` and `decoding`: the model and its generation's keywords, whose rounding of them is said where it is
    what passes the positions (`_new_tokens`)."""
    whose = f"{model}'s" if model else "its"
    new = _new_tokens(loaded, max_new_tokens, positions, decoding, [0]) if loaded is not None else \
        f"{max_new_tokens} new tokens"
    return UserError(f"{what}: {new} alone exceed {whose} {positions} positions, the length it was trained for{hint}")


def _new_tokens(loaded, max_new_tokens: int, positions: int, decoding: dict[str, Any] | None,
                prompts: Iterable[int]) -> str:
    """"N new tokens", with how the model's sampler decodes them (`WHOLE_BLOCKS`) where that is what takes a
    prompt of one of the lengths `prompts` past `positions` (`positions_taken`)."""
    from advisor.models.generate import WHOLE_BLOCKS

    rounded = any(p + max_new_tokens <= positions < positions_taken(loaded, p, max_new_tokens, decoding)
                  for p in prompts)
    how = WHOLE_BLOCKS.get(loaded.family) if rounded else None
    return f"{max_new_tokens} new tokens" + (f" {how}" if how else "")


def model_positions(loaded) -> int | None:
    """The model's maximum positions (config `max_position_embeddings`, also of a nested text config)."""
    config = getattr(loaded.model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else None
    for c in (config, text):
        value = getattr(c, "max_position_embeddings", None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


NEW_TOKENS_SETTING = "eval, trace: --max-new-tokens {n}; tune: max_new_tokens = {n} under [evaluation] in a --space file"
"""Where the new tokens are set, for `fit_to_positions`'s note ({n}: the number that fits)."""


def fit_to_positions(task: Task, loaded, max_new_tokens: int, setting: str | None = NEW_TOKENS_SETTING, *,
                     refuse_past: bool = False, decoding: dict[str, Any] | None = None) -> Task:
    """Drop few-shot exemplars from prompts that, with the new tokens, exceed the model's positions (the
    prompt gets what the new tokens leave, at least half). Said once; prompts that with their new tokens still
    do not fit are said too, in the same note (the model then runs past the length it was trained for): a prompt
    within its half beside more new tokens than the other half was not. The note says how many new tokens fit every prompt
    and where to give them (`setting`; None where the new tokens are no user's setting), or that no number
    does (prompts as long as the positions on their own). With `refuse_past` (eval's and trace's --max-new-tokens,
    tune's space once the model loads), new tokens that alone exceed the positions are refused with that remedy,
    before they decode for minutes (a trial, whose refusal would fail it inside the study, and a report of its
    study keep the note). `decoding`: the generation's keywords (block_length, steps), whose positions - prompt and
    new tokens as the family's sampler decodes them (`decoded_length`: whole blocks) - are counted; None: one
    forward over each prompt and exactly `max_new_tokens` (the fidelity proxy's answer canvas)."""
    positions = model_positions(loaded)
    if positions is None or loaded.tokenizer is None:
        return task
    total, length = _measures(task, loaded, max_new_tokens, decoding)
    examples, sizes = _fitted(task, positions, total, length)
    shortened = sum(ex is not orig for ex, orig in zip(examples, task.examples, strict=True))
    fewest = min([task.max_shots, *(ex["shots"] for ex, orig in zip(examples, task.examples, strict=True)
                                    if ex is not orig)])
    over = sum(total(size) > positions for size in sizes)  # the prompt's half cannot make room for more new tokens
    new = _new_tokens(loaded, max_new_tokens, positions, decoding, set(sizes))
    n, room = len(examples), f"{loaded.name}'s {positions} positions ({new})"
    if refuse_past and setting is not None and total(0) > positions:  # trace --max-new-tokens 99999: minutes past them
        raise past_positions(task.name, max_new_tokens, positions, _room_hint(task, examples, sizes, positions, length,
                                                                              setting, loaded, decoding), loaded.name, loaded, decoding)
    if refuse_past and setting is not None:
        _refuse_far_past(task, loaded, examples, sizes, positions, total, new)
    dropped = f"dropped few-shot exemplars from {shortened} of {n} prompts"
    if over:  # one note where exemplars were dropped and prompts still run past: the room is said once
        note_once(f"note: {task.name}: " + (f"{dropped} (fewest kept {fewest} of {task.max_shots}), yet " if shortened
                                             else "") +
                  f"{over} of {n} prompts with their new tokens still exceed {room}; the model runs past the length it "
                  f"was trained for on them{_room_hint(task, examples, sizes, positions, length, setting, loaded, decoding)}")
    elif shortened:
        note_once(f"note: {task.name}: {dropped} to fit {room}; fewest kept {fewest} of {task.max_shots}")
    return replace(task, examples=examples) if shortened else task


def _measures(task: Task, loaded, max_new_tokens: int,
              decoding: dict[str, Any] | None) -> tuple[Callable[[int], int], Callable[[dict], int]]:
    """The positions a prompt of N tokens takes with the new tokens (`positions_taken`) and an example's prompt
    tokens (`encode_prompt`), as `fit_to_positions` counts them."""
    return (lambda size: positions_taken(loaded, size, max_new_tokens, decoding),
            lambda ex: len(encode_prompt(loaded.tokenizer, task.prompt(ex))))


def _fitted(task: Task, positions: int, total: Callable[[int], int],
            length: Callable[[dict], int]) -> tuple[list[dict], list[int]]:
    """`fit_to_positions`' examples and their prompts' token counts, few-shot exemplars dropped from a prompt that
    with its new tokens (`total`) exceeds the `positions` until it fits or keeps half (a shortened example is a new
    dict with its "shots"); `length` tokenizes a prompt variant, each once. Says nothing."""
    examples, sizes = [], []
    for ex in task.examples:
        size = length(ex)
        if task.max_shots and total(size) > positions and size > positions // 2:  # (a prompt keeps half)
            shots = ex.get("shots", task.max_shots)
            while shots > 0 and total(size) > positions and size > positions // 2:
                shots -= 1
                size = length({**ex, "shots": shots})
            ex = {**ex, "shots": shots}
        examples.append(ex)
        sizes.append(size)
    return examples, sizes


FAR_PAST_POSITIONS = 8
"""How many times the model's positions one prompt with its new tokens may take: past the positions a model runs
on, noted by `fit_to_positions` (HumanEval's longest prompt takes 5.3 times the bundled model's 256, seconds to
decode), but a 200 KB --data question - 800 times them - decoded for many minutes; `_refuse_far_past` refuses it."""


def _refuse_far_past(task: Task, loaded, examples: list[dict], sizes: list[int], positions: int,
                     total: Callable[[int], int], new: str) -> None:
    """`refuse_far_past` of a task's prompts, each named by its --data file's line (`record_where`), at its
    fewest exemplars."""
    refuse_far_past(loaded, sizes, positions, total, new, lambda i: record_where(task, examples[i]),
                    " without few-shot exemplars" if task.max_shots else "", "the record")


def refuse_far_past(loaded, sizes: list[int], positions: int, total: Callable[[int], int], new: str,
                    name: Callable[[int], str], how: str = "", what: str = "the text") -> None:
    """`UserError` naming (`name(i)`) the first prompt of `sizes` tokens (`how`: as counted) that with its `new`
    tokens takes more than `FAR_PAST_POSITIONS` times the model's `positions` (`total`), and how many prompt
    tokens fit beside them (shorten `what` or drop it): said before any decoding, where it ran for minutes."""
    limit = FAR_PAST_POSITIONS * positions
    far = next((i for i, size in enumerate(sizes) if total(size) > limit), None)
    if far is None:
        return
    low = _most_prompt_tokens(total, positions)
    # new tokens that fill the positions: "shorten it" named no length, though a prompt within the limit runs
    room = (f"at most {low} prompt tokens fit beside the new tokens" if low else
            f"the new tokens fill the positions on their own; a prompt of at most {_most_prompt_tokens(total, limit)} "
            "tokens runs beside them, past the positions, with a note")
    size = sizes[far]
    raise UserError(f"{name(far)}: its prompt is {size} tokens{how}; with {new} it takes {total(size)} positions, "
                    f"more than {FAR_PAST_POSITIONS} times {loaded.name}'s {positions} (it would decode for minutes "
                    f"far past the length the model was trained for); shorten {what} or drop it ({room})")


def _most_prompt_tokens(total: Callable[[int], int], positions: int) -> int:
    """The most prompt tokens whose generation (`total`: the positions taken with the new tokens, growing with the
    prompt) stays within `positions`; 0 where none does."""
    low, high = 0, positions
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if total(mid) <= positions else (low, mid - 1)
    return low


def record_where(task: Task, example: dict) -> str:
    """Where `example` of `task` was read: its --data file's "file:line" (the first record holding its fields),
    else its task_id or the task's name."""
    if task.data is not None:
        from advisor.eval import jsonl

        for where, record in jsonl.records(task.data, task.name):
            if all(record.get(k) == v for k, v in example.items() if k in record):
                return where
    return f"{task.name} {example['task_id']}" if "task_id" in example else f"a {task.name} prompt"


def _room_hint(task: Task, examples: list[dict], sizes: list[int], positions: int, length: Callable,
               setting: str | None, loaded, decoding: dict[str, Any] | None) -> str:
    """`fit_to_positions`'s remedy: the most new tokens beside which every prompt fits (each at its fewest
    exemplars; a few-shot task's at most half the positions, past which its prompts keep half), or how many
    prompts fill the positions on their own, which fewer new tokens cannot help. `decoding` as
    `fit_to_positions`'s."""
    if task.max_shots:
        sizes = [s if ex.get("shots") == 0 else length({**ex, "shots": 0}) for ex, s in zip(examples, sizes, strict=True)]
        sizes.append(positions // 2)  # the prompts keep half: the new tokens fit beside that half too
    fits = most_new_tokens(loaded, max(sizes), positions, decoding)
    if task.max_shots:
        fits = min(fits, positions // 2)
    if fits < 1:
        alone = sum(s >= positions for s in sizes[:len(examples)])
        if not alone and (block := block_hint(loaded, max(sizes), positions, decoding, "the longest prompt")):
            return block
        return (f"; {alone} of them {'is' if alone == 1 else 'are'} {positions} tokens or longer on their own, which "
                "fewer new tokens cannot help (a model with more positions can)")
    return f"; at most {fits} new tokens fit every prompt ({setting.format(n=fits)})" if setting else ""


def block_hint(loaded, prompt: int, positions: int, decoding: dict[str, Any] | None, beside: str) -> str:
    """"; a single block of N beside `beside` exceeds them ...": where no new tokens fit beside a `prompt`-token
    prompt that fits the positions on its own, because the least the sampler decodes - one block (LLaDA2),
    one canvas (DiffusionGemma) of `decoding`'s length - passes them; "" where that is not why. Fewer new tokens
    cannot help there; a shorter block length can."""
    if decoding is None or prompt >= positions or positions_taken(loaded, prompt, 1, decoding) <= positions:
        return ""
    from advisor.models.generate import decoded_block_length

    block = decoded_block_length(loaded, max_new_tokens=1, **decoding)
    unit = "canvas" if loaded.family == "diffusion_gemma" else "block"
    return (f"; a single {unit} of {block} beside {beside} already exceeds them, whatever the new tokens: a "
            "shorter --block-length fits")


def positions_taken(loaded, prompt: int, max_new_tokens: int, decoding: dict[str, Any] | None) -> int:
    """The positions a generation of `max_new_tokens` beside a `prompt`-token prompt puts through the model:
    `decoding` (the generation's keywords) as the family's sampler decodes it (`decoded_length`: whole blocks);
    None: one forward over the prompt and exactly the new tokens (the fidelity proxy's answer canvas)."""
    if decoding is None:
        return prompt + max_new_tokens
    from advisor.models.generate import decoded_length

    return decoded_length(loaded, prompt, max_new_tokens, **decoding)


def most_new_tokens(loaded, prompt: int, positions: int, decoding: dict[str, Any] | None) -> int:
    """The most new tokens whose generation beside a `prompt`-token prompt stays within `positions`
    (`positions_taken`, which grows with them), 0 where none does: the number every positions hint names."""
    low, high = 0, max(0, positions - prompt + 1)  # none puts fewer than prompt + new - 1 through (autoregressive)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if positions_taken(loaded, prompt, mid, decoding) <= positions else (low, mid - 1)
    return low


def _batches(tokenizer, task: Task, batch_size: int, pad: str | None = None) -> list[tuple[list[int], Any, Any]]:
    """(example indices, input ids [B, L], attention mask or None) batches. Prompts of unequal length share
    a batch only when `pad` allows it: "eos" left-pads with EOS and no mask, "mask" left-pads and masks;
    otherwise batches group prompts of identical length."""
    import torch

    encoded = [encode_prompt(tokenizer, task.prompt(ex)) for ex in task.examples]
    filler = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    if filler is None:
        filler, pad = 0, None if pad == "eos" else pad
    if pad is not None:
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        by_len: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded):
            by_len.setdefault(len(ids), []).append(i)
        groups = [g[i : i + batch_size] for g in by_len.values() for i in range(0, len(g), batch_size)]
    out = []
    for group in groups:
        width = max(len(encoded[i]) for i in group)
        rows = [[filler] * (width - len(encoded[i])) + encoded[i] for i in group]
        mask = None
        if pad == "mask" and any(len(encoded[i]) < width for i in group):
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in group])
        out.append((group, torch.tensor(rows, dtype=torch.long), mask))
    return out


def _generate(loaded, ids, max_new_tokens: int, on_forward, gen_kwargs: dict):
    from advisor.models.generate import generate

    return generate(loaded, ids, max_new_tokens=max_new_tokens, on_forward=on_forward, **gen_kwargs)


def _decode(tokenizer, row: list[int]) -> str:
    eos = tokenizer.eos_token_id
    if eos is not None and eos in row:
        row = row[: row.index(eos)]
    return tokenizer.decode(row, skip_special_tokens=True)


@contextmanager
def attached(loaded, runtime) -> Iterator[None]:
    """Attach `runtime` for the evaluation; afterwards restore whatever session was attached before. None: the
    model's own weights, through the advisor seam as every plan's runtime computes them (`through_seam`), so
    `eval MODEL` measures what a tune trial's full-precision plan and the fidelity reference do (transformers'
    default kernel, grouped_mm, decodes a bf16 DiffusionGemma to other tokens)."""
    if runtime is None:
        from advisor.models.view import through_seam

        with through_seam(loaded):
            yield
        return
    from advisor.models.view import attach_runtime, detach_runtime
    from advisor.quant.apply import fast_runtime

    runtime = fast_runtime(loaded, runtime, outputs_only=True)  # (outputs alone: no slot traffic, no timing)

    previous = getattr(loaded.moe[0].experts_module, "_advisor", None)
    attach_runtime(loaded.model, runtime, layers=loaded.moe)
    try:
        yield
    finally:
        detach_runtime(loaded.model)
        if previous is not None:
            attach_runtime(loaded.model, previous.session.runtime, previous.session.observers, layers=loaded.moe)


@contextmanager
def _progress(enabled: bool, task: Task) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{task.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        handle = bar.add_task(task.name, total=len(task.examples))
        yield lambda n: bar.advance(handle, n)
