"""CLI: `advisor trace` (record routing) and `advisor simulate` (replay it through the cache policies).

Heavy libraries (torch, transformers) are imported inside the command bodies only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from advisor.commands import (
    OUTPUT,
    SEED_RANGE,
    device_option,
    gpu_profile,
    output_option,
    profiles_dir_option,
    refuse_canvas_past_memory,
    refuse_out_of_memory,
    say_busy_host,
    set_threads,
    threads_option,
    user_path,
)
from advisor.models import (
    DIFFUSION_FAMILIES,
    check_model_spec,
    check_weights,
    config_family,
    model_name,
    spec_config,
)
from advisor.units import MAX_LENGTH, MAX_PROMPTS, count, dtype_format

if TYPE_CHECKING:
    import torch

    from advisor.eval.tasks import Task
    from advisor.hardware.profiles import HardwareProfile
    from advisor.models.load import LoadedModel
    from advisor.offload.stats import CacheStats
    from advisor.offload.timing import ModelCosts
    from advisor.offload.trace import RoutingTrace

DEFAULT_TRACE_PROMPTS = 4
"""Prompts `advisor trace` decodes without --limit or --prompt."""


def _prompts(loaded: LoadedModel, task: Task | None, prompt: list[str] | None, limit: int,
             seed: int, max_new_tokens: int, decoding: dict[str, Any]) -> tuple[list[torch.Tensor], int | None, bool]:
    """(token-id prompts, the task's generation length, synthetic?): --prompt texts, else the prompts `advisor
    tune` traces (`workload_prompts`: the examples of `task`, read before torch imported - None only with --prompt,
    fitted to the model's positions beside --max-new-tokens (0: the task's), as `decoding` (--block-length)
    decodes them; or seeded ids for tokenizer-less tiny models)."""
    import torch

    from advisor.eval.run import encode_prompt, workload_prompts

    synthetic = loaded.tokenizer is None
    if prompt and not synthetic:
        ids = [torch.tensor([encode_prompt(loaded.tokenizer, t)], dtype=torch.long) for t in prompt]
        _refuse_prompt_past_positions(loaded, ids, max_new_tokens or TRACE_NEW_TOKENS, decoding)
        return ids, None, False
    n = len(prompt) if prompt else limit
    return (workload_prompts(loaded, task, n, seed, max_new_tokens or None, refuse_past=True, decoding=decoding),
            getattr(task, "max_new_tokens", None), synthetic)


TRACE_NEW_TOKENS = 32
"""New tokens `advisor trace` decodes per prompt without --max-new-tokens or a task's own (--prompt texts)."""


def _refuse_prompt_past_positions(loaded: LoadedModel, ids: list[torch.Tensor], max_new_tokens: int,
                                  decoding: dict[str, Any]) -> None:
    """--prompt texts: new tokens that alone exceed the model's positions (as `decoding` decodes them:
    `advisor.eval.run.positions_taken`) are refused, as a task's prompts are (`advisor.eval.run.fit_to_positions`),
    naming the most that fit beside the longest text; a text far past them with its new tokens is refused too
    (`advisor.eval.run.refuse_far_past`); with the texts past them, said once (`say_ids_past_positions`). They
    decoded past the positions without a word."""
    from advisor.eval.run import (
        block_hint,
        model_positions,
        most_new_tokens,
        past_positions,
        positions_taken,
        refuse_far_past,
        say_ids_past_positions,
    )

    positions = model_positions(loaded)
    if positions is not None and positions_taken(loaded, 0, max_new_tokens, decoding) > positions:
        longest = max(int(t.shape[-1]) for t in ids)
        fits = most_new_tokens(loaded, longest, positions, decoding)
        hint = (f"; at most {fits} new tokens fit beside the longest --prompt text ({longest} tokens): "
                f"--max-new-tokens {fits}" if fits > 0 else
                block_hint(loaded, longest, positions, decoding, f"the longest --prompt text ({longest} tokens)"))
        raise past_positions("--prompt", max_new_tokens, positions, hint, loaded.name, loaded, decoding)
    sizes = [int(t.shape[-1]) for t in ids]
    if positions is not None:  # one far past the positions decoded for minutes after the note below
        refuse_far_past(loaded, sizes, positions, lambda n: positions_taken(loaded, n, max_new_tokens, decoding),
                        f"{max_new_tokens} new tokens", lambda i: f"--prompt text {i + 1}" if len(ids) > 1 else "--prompt")
    say_ids_past_positions(loaded, ids, max_new_tokens, "--prompt texts", "--max-new-tokens {n}", decoding=decoding)


def _refuse_denoising(name: str, family: str, steps: int, block_length: int) -> None:
    """--steps or --block-length for a model of an autoregressive `family`: refused, where generate ignored them
    without a word."""
    if family in DIFFUSION_FAMILIES or not (steps or block_length):
        return
    from advisor.errors import UserError

    given = " and ".join(f for f, v in (("--steps", steps), ("--block-length", block_length)) if v)
    raise UserError(f"{given}: {name} ({family}) decodes autoregressively, one token per forward, with no denoising "
                    "steps or blocks; drop them")


def _read_note(nbytes: int, read_s: float, decode_s: float, forwards: int) -> str:
    """What reading the routed experts from the checkpoint cost an offloaded trace."""
    from advisor.units import format_bytes

    share = f", {100 * read_s / decode_s:.0f}% of the {decode_s:.1f} s of decoding" if decode_s > 0 else ""
    return (f"offloaded: {forwards} forwards read {format_bytes(nbytes, 2)} of routed experts from the checkpoint "
            f"at full precision (counted) in {read_s:.2f} s (measured{share}); --resident, when the model fits in "
            "memory, skips these reads")


def trace_cmd(
    model: str = typer.Argument(..., help="HF id, local directory, tiny:<family> or 'bundled'."),
    output: str = output_option(..., "Trace file to write (.npz)."),
    task: str = typer.Option("toy", "--task", help="Task whose prompts to decode (toy, gsm8k, humaneval)."),
    data: str = typer.Option(None, "--data", callback=user_path, help="Local data file of the task (GSM8K jsonl / HumanEval "
                             "jsonl[.gz]), as `tune` and `eval` take it."),
    prompt: list[str] = typer.Option(None, "--prompt", help="Prompt text (repeatable); overrides --task."),
    limit: int = typer.Option(None, "--limit", min=1, max=MAX_PROMPTS, help="Number of the task's prompts "
                              "(default 4); with --prompt, the texts given are the prompts."),
    max_new_tokens: int = typer.Option(0, "--max-new-tokens", min=0, max=MAX_LENGTH, help="0 = the task's / model's default."),
    steps: int = typer.Option(0, "--steps", min=0, max=MAX_LENGTH, help="Denoising steps (dLLMs); 0 = model default."),
    block_length: int = typer.Option(0, "--block-length", min=0, max=MAX_LENGTH, help="Block length (dLLMs); 0 = model default."),
    device: str = device_option(),
    seed: int = typer.Option(0, "--seed", **SEED_RANGE, help="Seed of the task's prompt choice (of the random token "
                             "ids a model without a tokenizer decodes)."),
    offload: bool = typer.Option(None, "--offload/--resident", help="Keep routed experts in the checkpoint (read "
                                 "per forward at full precision) / load the whole model. Default: offload when the "
                                 "checkpoint is bigger than the device's free memory."),
    threads: int = threads_option(),
) -> None:
    """Record which experts every token of every forward uses while the model decodes."""
    from advisor.errors import refuse_empty
    from advisor.tune.interrupt import import_runtime

    for text in prompt or []:  # an unset "$PROMPT" traced an empty prompt, without a word
        refuse_empty({"--prompt": text}, "the text to decode")
    # '' loaded the current directory as the model; --data '' was "file '.' is a directory"; --task '' was refused
    # only once torch had imported and the model had loaded ("nothing to trace", after a busy host's note)
    refuse_empty({"MODEL": model, "--task": task, "--data": data, OUTPUT: output},
                 "a value (see `advisor trace --help`)")
    if prompt:  # each would have been left unread without a word: the texts given are what is decoded
        from advisor.errors import UserError

        for flag, value in (("--limit", limit), ("--data", data)):
            if value is not None:
                raise UserError(f"{flag} picks the task's prompts, but --prompt gives them ({count(len(prompt), 'text')}); "
                                f"drop {flag} or --prompt")
    limit = limit or DEFAULT_TRACE_PROMPTS
    from advisor.errors import refuse_without_cuda_driver

    refuse_without_cuda_driver(device)  # no CUDA at all: before the task's hub lookup and torch's imports
    model = check_model_spec(model)  # a mistyped MODEL before torch imports
    from advisor.eval.tasks import get_task
    from advisor.files import check_writable

    the_task = None if prompt else get_task(task, path=data)  # a bad --task or --data before torch
    config = spec_config(model)  # known without torch for tiny:*, bundled, a local directory, a cached hub id
    family = config_family(config)
    if family is not None:
        _refuse_denoising(model_name(model), family, steps, block_length)  # before torch and the load
    # before torch imports and the model decodes, not after; a missing directory (a typo) is refused, as
    # `export -o` and `eval --json` refuse it, not created; so is `-o dir/`
    check_writable(output, create_dirs=False, option=OUTPUT)
    check_weights(model)  # a broken download before torch imports and before a busy host's note
    import_runtime()
    import time

    from rich.console import Console

    from advisor.models.load import check_device, load_model
    from advisor.offload.trace import merge, record_trace

    output = Path(output)  # read as text: '' was Path('.'), refused as "cannot write ." (a directory)
    dev = check_device(device)  # no CUDA here: known once torch has imported, said before a busy host's note
    refuse_canvas_past_memory(model, config, max_new_tokens, dev)  # before the notes, not after them
    busy = set_threads(threads)
    loaded = load_model(model, device=device, offload=offload)
    # refusals the loaded model decides before any note (--max-new-tokens past its positions: `_prompts`)
    _refuse_denoising(loaded.name, loaded.family, steps, block_length)  # a hub id's family is known only now
    decoding = {"block_length": block_length} if block_length else {}  # what `generate` gets below, --steps aside
    prompts, task_new, synthetic = _prompts(loaded, the_task, prompt, limit, seed, max_new_tokens, decoding)
    say_busy_host(busy)  # once the model has loaded: a model the load refuses is refused in one line, not after it
    err = Console(stderr=True)
    # notes are plain text (a model directory b[red] is no markup), broken where rich breaks them
    from advisor.terminal import print_rich, print_wrapped

    if loaded.offloaded:
        print_rich(err, f"loading: {loaded.load_note}", markup=False)
    gen_kw: dict = {"max_new_tokens": max_new_tokens or task_new or TRACE_NEW_TOKENS}
    if steps:
        gen_kw["steps"] = steps
    if block_length:
        gen_kw["block_length"] = block_length
    from advisor.models.generate import decoding_note

    note = decoding_note(loaded, steps_option="--steps", **gen_kw)
    if note:  # LLaDA-MoE's whole blocks of equal steps: what runs, where it is not what was asked
        print_rich(err, f"note: {note}", markup=False)
    ck = loaded.checkpoint
    read0, secs0, t0 = (ck.bytes_read, ck.read_seconds, time.perf_counter()) if ck is not None else (0, 0.0, 0.0)
    with refuse_out_of_memory(f"decoding {gen_kw['max_new_tokens']} new tokens per prompt on {loaded.device}",
                              "give a smaller --max-new-tokens"):
        traces = [record_trace(loaded, ids.to(device), meta={"task": task if not prompt else "prompt",
                                                              "device": str(loaded.device)}, **gen_kw)
                  for ids in prompts]
    if ck is not None:  # the one cost an offloaded trace has over a resident one: say it, with its source
        print_rich(err, _read_note(ck.bytes_read - read0, ck.read_seconds - secs0, time.perf_counter() - t0,
                                   sum(t.n_forwards for t in traces)), markup=False)
    trace = merge(traces)
    if synthetic:
        trace.meta["note"] = "model has no tokenizer: prompts are seeded random token ids"
    path = trace.save(output, create_dirs=False, option=OUTPUT)
    if synthetic:  # what was decoded is not the text or task asked for: say so where the user looks
        print_rich(err, f"note: {loaded.name} has no tokenizer: traced {count(len(prompts), 'prompt')} of random "
                        f"token ids (seed {seed}), not the " + ("--prompt text" if prompt else f"{task} task's prompts"),
                   markup=False)
    print_wrapped(Console(), f"wrote {path}: {trace.n_forwards} forwards x {trace.n_layers} MoE layers, "  # a path is
                  f"{trace.generated_tokens} generated tokens, {trace.n_lookups} expert look-ups (counted), "  # no markup
                  f"on {loaded.device}")


def simulate_cmd(
    trace_file: str = typer.Argument(..., callback=user_path, help="Trace recorded with `advisor trace`."),
    slots: str = typer.Option("50%", "--slots", help="Slots per layer: 4, 50%, 0.5 or 4,4,6,8 (per layer)."),
    policy: str = typer.Option("all", "--policy", help="lru, lfu, lfu_decay, fifo, static_hot, block_aware, flru, "
                               "tide, several comma-separated, or all."),
    precision: str = typer.Option(None, "--precision", help="Precision plan (int8, int4:g64, layers=0-1:int8,...); "
                                  "default: the traced model's own dtype."),
    prefetch: str = typer.Option("none", "--prefetch", help="none, lookahead (oracle in replay), prev_step."),
    gpu: str = typer.Option(None, "--gpu", help="Hardware profile for modelled times (default PCIe 4.0 x16); with CPU "
                           "expert times (`advisor profile --model`) also the time per token, CPU compute included."),
    profiles_dir: Path | None = profiles_dir_option(),
    token_scope: str = typer.Option("all", "--token-scope", help="all, or block (only the denoised block)."),
    miss: str = typer.Option("copy", "--miss", help="Where misses compute: copy (to the GPU), cpu (on the host) "
                             "or hybrid (per layer and forward, split as the tuner does; needs --gpu with CPU "
                             "expert times, `advisor profile --model`)."),
    tau: int = typer.Option(None, "--tau", min=1, help="tide's refresh interval in denoising steps (default: the "
                            "tuner's default cache.tau, 4)."),
    json_out: str = typer.Option(None, "--json", callback=user_path, help="Also write the results as JSON here."),
) -> None:
    """Replay a routing trace through the cache policies and compare with Belady's MIN."""
    import json

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from advisor.errors import UserError, choose, refuse_empty
    from advisor.files import check_writable, write_atomic
    from advisor.offload.miss import MISS_POLICIES
    from advisor.offload.policies import DEFAULT_TAU, POLICIES
    from advisor.offload.slots import PREFETCH

    # an unset "$GPU" or "$PLAN" modelled the default link or the traced dtype, without a word
    refuse_empty({"--gpu": gpu, "--precision": precision, "TRACE_FILE": trace_file, "--json": json_out},
                 "a value (see `advisor simulate --help`)")  # as text: '' was Path('.'), "a directory"
    trace_file = Path(trace_file)
    from advisor.offload.simulate import belady, simulate
    from advisor.offload.trace import RoutingTrace
    from advisor.tune.display import human_bytes

    if json_out:
        # a missing directory is refused, as by every file option
        check_writable(json_out, create_dirs=False, option="--json")
    # a policy named twice (lru,LRU) is one row, not two equal ones
    names = POLICIES if policy.strip().lower() == "all" else list(dict.fromkeys(p.strip().lower() for p in policy.split(",")))
    for name in names:  # fixed names, read in any case (`choose`), but the refusal also offers "all"
        if name not in POLICIES:
            raise UserError(f"unknown cache policy '{name}'; choose from: {', '.join(POLICIES)}, all")
    if tau is not None and "tide" not in names:  # it would change nothing, without a word
        raise UserError(f"--tau {tau} is tide's refresh interval, but --policy {policy} has no tide")
    tau = tau or DEFAULT_TAU
    prefetch, token_scope = choose(prefetch, PREFETCH, "--prefetch"), choose(token_scope, ("all", "block"), "--token-scope")
    miss = miss.strip().lower()
    if miss not in MISS_POLICIES:
        raise UserError(f"--miss must be copy, cpu or hybrid, got {miss!r}")
    trace = RoutingTrace.load(trace_file)
    profile = gpu_profile(gpu, profiles_dir)  # an empty --gpu was refused above
    plan = None
    if precision:  # a plan naming layers or experts the traced model lacks is refused, not silently cut
        from advisor.quant.plan import PrecisionPlan

        plan = PrecisionPlan.parse(precision)
        plan.check_fits(trace.num_experts)
    seqs = trace.access_sequences(token_scope)
    tokens = trace.generated_tokens  # 0: the trace does not say (a bare TraceRecorder's): show totals, say so
    per = max(tokens, 1)
    # time per token as the tuner models it (device + copies + CPU compute), where the profile has CPU times
    costs, lacking, measure = _time_model(trace, precision or dtype_format(trace.meta.get("dtype")) or "bf16", profile)
    if costs is None and miss == "hybrid":  # its split is that time model's: without CPU times, no decision
        raise UserError(f"--miss hybrid splits each layer's misses between the CPU and the link by measured CPU "
                        f"expert times, but {lacking}; {measure}")
    no_cpu_times = "" if costs is not None else (  # (--json's time_not_modelled; --miss cpu's note)
        f"the CPU compute of the misses is not modelled: {lacking}, so 'transfer' (copies only) leaves it out and "
        f"--miss cpu looks faster than it is; {measure}" if miss == "cpu" else
        f"time per token is not modelled: the tuner's time model needs CPU expert times (it prices misses on the "
        f"CPU too), and {lacking}; {measure}")
    best = belady(trace, slots, plan=plan, profile=profile, sequences=seqs, miss=miss, costs=costs)
    rows = [(n, simulate(trace, slots_per_layer=slots, policy=n, plan=plan, prefetch=prefetch, profile=profile,
                      sequences=seqs, miss=miss, policy_kw={"tau": tau} if n == "tide" else None, costs=costs))
            for n in names]
    caps = best.capacity  # what the typed --slots came to (a count above the experts is all of them)
    per_layer = str(caps[0]) if len(set(caps)) == 1 else ",".join(map(str, caps))
    # what the typed --slots came to where it differs ("50% (= 4 per layer)"); "8 (= 8 per layer)" said it twice
    shown_slots = (f"{slots} per layer" if "".join(slots.split()) in (per_layer, ",".join(map(str, caps)))
                   else f"{slots} (= {per_layer} per layer)")
    dtype = trace.meta.get("dtype")  # "float32" as recorded: named as every other command names formats (fp32)
    shown = precision or dtype_format(dtype) or dtype
    table = Table(title=f"{trace_file.name}: slots {shown_slots}, precision {shown}, "
                        f"prefetch {prefetch}, misses {miss}, "
                        + (f"{tokens} tokens" if tokens else "generated tokens not recorded"),
                  show_edge=False, pad_edge=False)
    cells, out = [], []
    for name, st in [*rows, ("belady (bound)", best)]:
        # 0 hits of 0 the bound finds (no slots, or every look-up a first one): no ratio, '-' as tables show one
        ratio = st.hit_rate / best.hit_rate if best.hit_rate else None
        cells.append([f"tide (tau {tau})" if name == "tide" else name, f"{st.hits}", f"{st.misses}", f"{st.hit_rate:.3f}", human_bytes(st.bytes_h2d / per),
                      f"{st.transfer_ms / per:.3f}", f"{st.total('cpu_tokens')}",
                      "-" if ratio is None else f"{ratio:.3f}"])
        out.append({**st.to_dict(n_tokens=tokens or None), "policy": name, "vs_belady_hit_rate": ratio,
                    **({"tau": tau} if name == "tide" else {})})
    unit = ("per token", "ms/token") if tokens else ("in total", "ms total")
    headers = ("policy", "hits", "misses", "hit\nrate", f"H2D\n{unit[0]}", f"transfer\n{unit[1]}", "CPU\ntokens",
               "vs\nBelady")
    for i, col in enumerate(headers):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    for row in cells:
        table.add_row(*row)
    from advisor.terminal import print_fitted, print_rich, print_wrapped

    console = Console()
    # the table where it fits, else one block per policy: a trace's counts (millions of look-ups) or a narrow
    # terminal made rich crop the table's right columns (vs Belady, CPU tokens) at the edge, without a word
    print_fitted(console, table, [(row[0], [(" ".join(h.split()), v) for h, v in zip(headers[1:], row[1:],
                                                                                       strict=True)])
                                  for row in cells])
    from advisor.hardware.profiles import DEFAULT_PROFILE

    link = profile or DEFAULT_PROFILE  # which link the times are modelled for: a catalogue row, a measured profile
    recorded = f" recorded on {trace.meta['device']}" if trace.meta.get("device") else ""
    print_rich(console, escape(f"counts: counted (replayed trace{recorded}); transfer: {best.transfer_source} "
                               f"[{link.name}: {link.source}]; " + (
                                   f"tokens: {tokens} generated (counted)" if tokens else
                                   "tokens: none recorded in the trace, so H2D and transfer are totals")))
    if costs is not None:
        _print_times(console, rows, per, unit[1], miss, tau, costs.source)
    elif miss == "cpu":  # the misses' CPU compute is in no column: say so, and how to model it
        print_wrapped(console, f"note: {no_cpu_times}")  # rich broke its `advisor profile --model M` in two
    if not best.hit_rate:
        print_wrapped(console, "note: vs Belady is '-': Belady's MIN hits nothing at these slots, so there is no hit "
                               "rate to compare with")
    for note in {n for _, st in rows for n in st.notes}:
        print_rich(console, f"note: {note}")
    staged = {name: st.total('prefetch_hits') for name, st in rows if st.total('prefetch_hits')}
    if staged:  # lookups = hits + prefetch hits + misses: say where the look-ups the table leaves out went
        print_rich(console, "note: prefetch hits (look-ups served by a prefetched expert, in neither hits nor "
                            "misses): " + ", ".join(f"{name} {n}" for name, n in staged.items())
                            + "; Belady's MIN is computed without prefetch, so a policy with it can pass the bound")
    if json_out:
        write_atomic(json_out, json.dumps(
            {"trace": str(trace_file), "model": trace.meta.get("model"), "slots": slots,
             "precision": shown, "link": {"name": link.name, "source": link.source},
             **({"time_model": costs.source} if costs is not None else {"time_not_modelled": no_cpu_times}),
             "results": out}, indent=2), create_dirs=False, option="--json")
        print_wrapped(Console(stderr=True), f"wrote {json_out}")


def _time_model(trace: RoutingTrace, plan: str, profile: HardwareProfile | None
                ) -> tuple[ModelCosts | None, str, str]:
    """(the time model the tuner prices `plan` with on `trace`'s expert shapes - `model_costs`: device compute,
    copies, CPU compute with overlap, hybrid's split - or None; what the profile lacks; the command measuring
    it): None where the hardware profile lacks measured CPU expert times for the trace's expert shapes and the
    plan's CPU kernels (nothing is measured here)."""
    from advisor.offload.timing import CpuProfile, kernels_text, model_costs, plan_kernels, shape_key

    hidden, inter = trace.meta["hidden"], trace.meta["intermediate"]
    shapes = list(dict.fromkeys((int(h), int(i)) for h, i in zip(hidden, inter, strict=True)))
    kernels = plan_kernels(plan)
    stored = getattr(profile, "cpu_experts", None)
    lack = CpuProfile.from_dict(stored).lacking(shapes, kernels) if stored else dict.fromkeys(shapes, kernels)
    if not lack:
        return model_costs(plan, hidden, inter, stored, profile), "", ""
    whose = f"profile {profile.name!r}" if profile is not None else "the default link (no --gpu)"
    model = trace.meta.get("model")
    measure = (f"--model {model}" if model else
               " ".join(f"--expert-shape {shape_key(h, i)}" for h, i in shapes))
    return None, (f"{whose} has no measured CPU expert times for "
                  f"{', '.join(kernels_text(shape_key(*s), f) for s, f in lack.items())}"), (
        f"`advisor profile {measure}` (with --cpu on a host without CUDA) measures them; then give that profile "
        "as --gpu")


def _print_times(console: Any, rows: list[tuple[str, CacheStats]], per: int, unit: str, miss: str, tau: int,
                 source: str) -> None:
    """The modelled time of each policy's replay, with its terms (`advisor.offload.timing`), and their source."""
    from rich.table import Table

    from advisor.terminal import print_fitted, print_wrapped

    terms = (("device", "gpu_ms"), ("copies", "copy_ms"), ("background", "background_ms"), ("CPU", "cpu_ms"),
             ("time", "layer_ms"))
    table = Table(title=f"modelled time, misses {miss}: each MoE layer's look-up takes max(copies + device, CPU, "
                        "copies + background copies)", show_edge=False, pad_edge=False)
    headers = ["policy", *(f"{h}\n{unit}" for h, _ in terms)]
    for i, col in enumerate(headers):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    cells = [[f"tide (tau {tau})" if name == "tide" else name, *(f"{st.times[t] / per:.3f}" for _, t in terms)]
             for name, st in rows]
    for row in cells:
        table.add_row(*row)
    print_fitted(console, table, [(row[0], [(" ".join(h.split()), v) for h, v in zip(headers[1:], row[1:],
                                                                                      strict=True)])
                                  for row in cells])
    # one long word where its parts meet (';' without a space): rich folded it inside a word at the edge
    print_wrapped(console, f"times: {source}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""
    app.command("trace")(trace_cmd)
    app.command("simulate")(simulate_cmd)
